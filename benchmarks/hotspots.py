"""Where a `vgg` command spends its time: py-spy samples the command's Python stacks, and this prints
the top functions by inclusive time (the function and what it calls) and by self time (the Python
function on top of the stack, which includes the torch ops it called). Needs py-spy (the dev extra).

    .venv/bin/python benchmarks/hotspots.py [--top 15] [--rate 50] [--no-fused] -- train --limit 2000 ...

``--no-fused`` runs the command with the fused CPU inference path switched off (the path before
``vgg.models.FusedFeatures`` and ``PackedLinear``; `vgg train`'s validation passes take it too), for
before/after comparisons.
"""

from __future__ import annotations

import argparse
import collections
import re
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

DISABLE_FUSED = ("import vgg.engine as m; m.FusedFeatures.available = staticmethod(lambda: False); "
                 "m.PackedLinear.available = staticmethod(lambda: False); ")


def py_spy() -> str:
    exe = shutil.which("py-spy") or str(Path(sys.executable).parent / "py-spy")
    if not Path(exe).is_file():
        raise SystemExit("py-spy is not installed: pip install py-spy (or pip install -e '.[dev]')")
    return exe


def frame_name(frame: str) -> str:
    """``fn (path/to/file.py:123)`` -> ``fn (file.py)``: lines of one function merged."""
    m = re.match(r"(.*) \((.*?):\d+\)$", frame)
    if not m:
        return frame
    return f"{m.group(1)} ({Path(m.group(2)).name})"


def aggregate(raw: str) -> tuple[int, collections.Counter, collections.Counter]:
    """Total samples, inclusive samples per function, self samples per function."""
    total, inclusive, own = 0, collections.Counter(), collections.Counter()
    for line in raw.splitlines():
        stack, _, count = line.rpartition(" ")
        if not stack or not count.isdigit():
            continue
        n = int(count)
        frames = [frame_name(f) for f in stack.split(";")]
        total += n
        for f in set(frames):
            inclusive[f] += n
        own[frames[-1]] += n
    return total, inclusive, own


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--top", type=int, default=15)
    p.add_argument("--rate", type=int, default=50, help="samples per second")
    p.add_argument("--no-fused", action="store_true", help="switch off the fused CPU inference runner")
    p.add_argument("--raw", help="also keep py-spy's raw stacks here")
    p.add_argument("command", nargs=argparse.REMAINDER, help="-- then the vgg command and its arguments")
    args = p.parse_args()
    command = [c for c in args.command if c != "--"] if args.command[:1] == ["--"] else args.command
    if not command:
        p.error("give the vgg command to profile after --")
    code = ("import sys; " + (DISABLE_FUSED if args.no_fused else "")
            + "from vgg.cli import main; sys.exit(main(sys.argv[1:]))")
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(args.raw or Path(tmp) / "stacks.txt")
        subprocess.run([py_spy(), "record", "-r", str(args.rate), "-f", "raw", "-o", str(out), "--",
                        sys.executable, "-c", code, *command], check=True)
        total, inclusive, own = aggregate(out.read_text())
    note = " (fused runner off)" if args.no_fused else ""
    print(f"\n`vgg {' '.join(command)}`{note}: {total} samples "
          f"at {args.rate}/s")
    # Inclusive time of our own functions (the package's modules), where overheads of our code show.
    ours = collections.Counter({f: n for f, n in inclusive.items()
                                if re.search(r"\((models|train|data|evaluate|weights|export|features|"
                                             r"distributed)\.py\)$", f)})
    for title, counter in (("inclusive (vgg's functions)", ours), ("self", own)):
        print(f"\n| {title} % | function |\n|---:|---|")
        for name, n in counter.most_common(args.top):
            print(f"| {100 * n / max(total, 1):.1f} | `{name}` |")


if __name__ == "__main__":
    main()
