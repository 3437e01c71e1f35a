"""`vgg bench`: the command and its flags."""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from vgg.cli import COMMANDS, build_parser

REPO = Path(__file__).resolve().parents[1]


def test_bench_command_is_registered():
    assert "bench" in COMMANDS
    args = build_parser().parse_args(["bench", "--quick", "--only", "inference"])
    assert args.quick and args.only == ["inference"]
    with pytest.raises(SystemExit):
        build_parser().parse_args(["bench", "--only", "nothing"])


def test_bench_quick_hands_its_flags_to_the_suite(tmp_path, monkeypatch):
    from vgg.cli import main

    calls = []
    monkeypatch.setattr(subprocess, "call", lambda argv: calls.append(argv) or 0)
    assert main(["bench", "--quick", "--only", "data", "--json", str(tmp_path / "b.json")]) == 0
    (argv,) = calls
    assert argv[0] == sys.executable and Path(argv[1]) == REPO / "benchmarks" / "run_all.py"
    assert argv[2:] == ["--quick", "--only", "data", "--json", str(tmp_path / "b.json")]


def test_bench_quick_runs_a_part_and_writes_its_results(tmp_path):
    # benchmarks/run_all.py --quick --only data, as `vgg bench` runs it, on 2 + 1 generated images and
    # one round instead of the quick run's 60 + 12 and 3.
    driver = f"""
import sys
sys.path.insert(0, {str(REPO / "benchmarks")!r})
import data
real = data.run
data.run = lambda *args: real(2, 1, 1)
import run_all
sys.exit(run_all.main(["--quick", "--only", "data", "--json", {str(tmp_path / "b.json")!r}]))
"""
    r = subprocess.run([sys.executable, "-c", driver], capture_output=True, text=True, timeout=300,
                       cwd=tmp_path, env={**os.environ, "OMP_NUM_THREADS": "1"})
    assert r.returncode == 0, r.stderr[-3000:]
    assert "data train 500x375 vs Pillow" in r.stdout and "quick run" in r.stdout
    results = json.loads((tmp_path / "b.json").read_text())
    assert results["quick"] is True and set(results) >= {"data", "summary"}
    timed = results["data"]["results"]
    assert set(timed) == {"500x375 train", "500x375 eval", "2048x1536 train", "2048x1536 eval"}
    assert all(t["images"] > 0 and t["ours_images_per_s"] > 0 and t["speedup_median"] > 0
               for t in timed.values())
