"""benchmarks/winograd.py: its "direct" column is the direct oneDNN conv (FusedConv alone would take
Winograd on VGG16's big calls, and the table would compare Winograd with itself), and a row runs."""

import sys
from pathlib import Path

import torch
from torch import nn

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "benchmarks"))
import winograd as bench  # noqa: E402
from vgg.engine.winograd import Winograd3x3  # noqa: E402


def test_direct_runner_never_takes_winograd_where_the_engine_would():
    conv = nn.Conv2d(256, 256, 3, padding=1)
    shape = (8, 256, 56, 56)  # VGG16's conv3 at batch 8: the engine takes Winograd here
    for dtype in (torch.float32, torch.bfloat16):
        runners = bench.runners(conv, shape, dtype)
        assert not runners["direct"].takes_winograd(shape)
        assert [r.tile for name, r in runners.items() if name != "direct"] == [2, 4]
        assert all(isinstance(r, Winograd3x3) for name, r in runners.items() if name != "direct")


def test_a_row_has_times_and_small_errors():
    row = bench.layer_row(128, 128, 16, 1, 1, torch.float32)
    assert row[:2] == ["float32", "128->128 at 16"]
    times, errors = [float(v) for v in row[2::2]], [float(v) for v in row[3::2]]
    assert len(times) == 3 and all(t > 0 for t in times)
    assert all(1e-9 < e < 1e-4 for e in errors), errors
