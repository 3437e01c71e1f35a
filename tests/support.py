"""Helpers shared by the test modules: tiny training runs and their files."""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from safetensors.torch import load_file

from vgg import training as T

VGG_BIN = [sys.executable, "-m", "vgg"]


# A tiny net and tiny data: every run below takes a second or two.
TINY = ["--arch", "A", "--width", "0.125", "--crop-size", "32", "--scale", "32", "36", "--device", "cpu",
        "--no-progress"]


def tiny_config(tmp_path, name="run", **kw):
    values = dict(arch="A", width=0.125, crop_size=32, scale=(32, 36), limit=64, batch_size=8, epochs=1,
                  device="cpu", progress=False, output=str(tmp_path / name))
    values.update(kw)
    return T.TrainConfig(**values)


def weights_of(folder, name="last.safetensors"):
    return load_file(str(Path(folder) / name))


def run_cli(*args, env=None, timeout=300):
    return subprocess.run([*VGG_BIN, *args], capture_output=True, text=True, timeout=timeout,
                          env={**os.environ, "OMP_NUM_THREADS": "1", **(env or {})})


def records(folder):
    lines = (Path(folder) / "log.jsonl").read_text().splitlines()
    return [json.loads(line) for line in lines if line.strip()]


def epochs_of(folder):
    return [r for r in records(folder) if "event" not in r]


def tensorboard_scalars(folder):
    """{tag: [(epoch, value)]} as TensorBoard itself reads the run (orphaned points purged)."""
    accumulator = pytest.importorskip("tensorboard.backend.event_processing.event_accumulator")
    events = accumulator.EventAccumulator(str(Path(folder) / "tensorboard"))
    events.Reload()
    return {tag: [(e.step, e.value) for e in events.Scalars(tag)] for tag in events.Tags()["scalars"]}
