"""What every benchmark shares: interleaved timing rounds, medians with spread, a printed table and
JSON. These machines are shared and noisy, so speed is always a ratio of runs interleaved in one
process: each round times every contender once, in turn, and ratios are taken per round."""

from __future__ import annotations

import json
import platform
import statistics
import time
from collections.abc import Callable
from pathlib import Path

import torch

SPEED_FLAGS = ("avx2", "fma", "avx512f", "avx512_vnni", "avx512_bf16", "avx512_fp16", "avx512_vp2intersect",
               "amx_tile", "amx_bf16", "asimd", "sve", "bf16")


def machine() -> str:
    """A one-line description of where the numbers were measured."""
    from vgg.distributed import cpu_flags, cpu_name

    cpu = cpu_name() or platform.processor() or platform.machine()
    # The flags that decide our kernels' speed: a ratio measured on one kind of CPU may not hold on
    # another (Zen 4 and Zen 5 machines both serve this project).
    shown = [f for f in SPEED_FLAGS if f in cpu_flags()]
    cpu += f" [{' '.join(shown)}]" if shown else ""
    gpu = f", {torch.cuda.get_device_name()}" if torch.cuda.is_available() else ""
    return f"{cpu}, {torch.get_num_threads()} threads{gpu}, torch {torch.__version__}"


def sync() -> None:
    if torch.cuda.is_available():
        torch.cuda.synchronize()


def interleaved(contenders: dict[str, Callable[[], object]], rounds: int, warmup: int = 1
                ) -> dict[str, list[float]]:
    """Seconds per call of each contender, measured in ``rounds`` interleaved rounds."""
    for fn in contenders.values():
        for _ in range(warmup):
            fn()
    sync()
    times: dict[str, list[float]] = {name: [] for name in contenders}
    for _ in range(rounds):
        for name, fn in contenders.items():
            sync()
            start = time.perf_counter()
            fn()
            sync()
            times[name].append(time.perf_counter() - start)
    return times


def ratio(times: dict[str, list[float]], ours: str, ref: str) -> tuple[float, float, float]:
    """Median and (min, max) over rounds of ref_time / ours_time: above 1 means ours is faster."""
    r = [b / a for a, b in zip(times[ours], times[ref])]
    return statistics.median(r), min(r), max(r)


def median(values: list[float]) -> float:
    return statistics.median(values)


def print_table(title: str, header: list[str], rows: list[list]) -> None:
    cells = [header] + [[str(c) for c in r] for r in rows]
    widths = [max(len(r[i]) for r in cells) for i in range(len(header))]
    print(f"\n{title}")
    for i, r in enumerate(cells):
        print("  ".join(c.rjust(w) for c, w in zip(r, widths)))
        if i == 0:
            print("  ".join("-" * w for w in widths))


def write_json(path: str | Path, payload: dict) -> None:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    payload = {"machine": machine(), "date": time.strftime("%Y-%m-%d"), **payload}
    path.write_text(json.dumps(payload, indent=2))
    print(f"\nwrote {path}")
