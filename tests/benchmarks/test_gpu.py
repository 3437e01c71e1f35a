"""benchmarks/gpu.py, the GPU check, kept from rotting: its --dry-run (the same script on the CPU at tiny
sizes) runs every part and writes a JSON in which each part is ok or skipped for a reason."""

import json
import math
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
PARTS = ["cuda_tests", "equality", "vgg16_speed", "jpeg_training", "torchrun", "fashion_mnist"]
# Figures that must be positive wherever the JSON has them.
POSITIVE = {"per_s", "mfu", "tflops", "images_per_s", "real_vs_synthetic", "counted_forward_gflop",
            "train_gflop_per_image", "infer_gflop_per_image", "logits_std"}


def numbers(tree, key=None):
    """(key, value) of every number in a JSON tree."""
    if isinstance(tree, dict):
        for k, v in tree.items():
            yield from numbers(v, k)
    elif isinstance(tree, list):
        for v in tree:
            yield from numbers(v, key)
    elif isinstance(tree, (int, float)) and not isinstance(tree, bool):
        yield key, tree


@pytest.mark.slow
def test_dry_run_runs_every_part(tmp_path):
    out = tmp_path / "gpu.json"
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([str(ROOT / "src"), os.environ.get("PYTHONPATH", "")]))
    cmd = [sys.executable, str(ROOT / "benchmarks" / "gpu.py"), "--dry-run", "--out", str(out),
           "--budget", "400"]
    proc = subprocess.run(cmd, cwd=tmp_path, env=env, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stdout[-4000:] + proc.stderr[-4000:]
    result = json.loads(out.read_text())
    assert result["dry_run"] is True
    assert list(result["parts"]) == PARTS
    for name, part in result["parts"].items():
        assert part["status"] in ("ok", "skipped"), (name, part.get("error"), part.get("traceback"))
        if part["status"] == "skipped":
            assert part["reason"], name
    for key, value in numbers(result["parts"]):
        assert math.isfinite(value), key
        if key in POSITIVE:
            assert value > 0, key
    speed = result["parts"]["vgg16_speed"]
    if speed["status"] == "ok":
        for key in ("train_eager", "inference"):
            assert speed[key]["per_s"] > 0 and 0 < speed[key]["mfu"]
        assert speed["matmul"]["tflops"] > 0
    assert "GPU check (dry run, CPU)" in proc.stdout and "figures" in proc.stdout
