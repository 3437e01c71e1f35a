"""The engine's Winograd runner against the direct oneDNN conv, layer by layer: VGG16's 3x3 convs of
128 channels and more at 224, in float32 and in bf16, F(2x2, 3x3) and F(4x4, 3x3); ms per call and
the relative error against float64. The figures behind ``WINOGRAD_TILE``, ``WINOGRAD_TILE_BF16``,
``WINOGRAD_MIN_CHANNELS`` and ``WINOGRAD_MIN_CHANNELS_BF16`` (vgg/engine/winograd.py; BENCHMARKS.md).

    .venv/bin/python benchmarks/winograd.py [--batch 8] [--rounds 7] [--json PATH]

Each conv is He-initialised and fed a ReLU'd normal input (what a VGG layer sees); bf16 rows need a
CPU with native bf16 and are left out elsewhere.
"""

from __future__ import annotations

import argparse

import torch
from torch import nn

from common import interleaved, machine, median, print_table, write_json
from vgg.distributed import cpu_has_native_bf16
from vgg.engine import FusedConv, keep_freed_memory
from vgg.engine.winograd import Winograd3x3

# (in channels, out channels, side) of VGG16's 3x3 convs at 224 from 128 channels on.
LAYERS = [(128, 128, 112), (128, 256, 56), (256, 256, 56), (256, 512, 28), (512, 512, 28), (512, 512, 14)]


def runners(conv: nn.Conv2d, shape: tuple, dtype: torch.dtype) -> dict:
    """The direct oneDNN conv + ReLU (the engine's FusedConv, never taking Winograd) and Winograd
    F(2x2) and F(4x4) of the same weights, computing in ``dtype`` on input of ``shape``."""
    w, b = conv.weight.detach(), conv.bias.detach()
    direct = FusedConv(conv, w, b, True, shape, dtype)
    direct.dense_weight = None  # FusedConv would otherwise take Winograd itself on the big calls
    out = {"direct": direct}
    for tile in (2, 4):
        out[f"F({tile}x{tile})"] = Winograd3x3(w, b, True, shape[0] * 64, tile, dtype)
    return out


def layer_row(c: int, k: int, side: int, batch: int, rounds: int, dtype: torch.dtype) -> list:
    """dtype, conv, and ms and relative error against float64 of each of :func:`runners`."""
    torch.manual_seed(0)
    conv = nn.Conv2d(c, k, 3, padding=1)
    nn.init.kaiming_normal_(conv.weight, nonlinearity="relu")
    w, b = conv.weight.detach(), conv.bias.detach()
    x = torch.randn(batch, c, side, side).relu().to(dtype).contiguous(memory_format=torch.channels_last)
    ref = torch.nn.functional.conv2d(x.double(), w.double(), b.double(), padding=1).relu()
    runners_ = runners(conv, tuple(x.shape), dtype)
    with torch.inference_mode():
        times = interleaved({name: (lambda r=r: r(x)) for name, r in runners_.items()}, rounds)
        errors = {name: float((r(x).double() - ref).norm() / ref.norm()) for name, r in runners_.items()}
    row = [str(dtype).removeprefix("torch."), f"{c}->{k} at {side}"]
    for name in runners_:
        row += [f"{median(times[name]) * 1e3:.1f}", f"{errors[name]:.1e}"]
    return row


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--batch", type=int, default=8)
    p.add_argument("--rounds", type=int, default=7)
    p.add_argument("--json", default=None, help="also write the rows here")
    args = p.parse_args()
    keep_freed_memory()  # as attach_cpu_inference does: no fresh pages for each call's buffers
    print(machine())
    dtypes = [torch.float32] + ([torch.bfloat16] if cpu_has_native_bf16() else [])
    rows = [layer_row(c, k, side, args.batch, args.rounds, dtype)
            for dtype in dtypes for c, k, side in LAYERS]
    head = ["dtype", "conv", "direct ms", "error", "F(2x2) ms", "error", "F(4x4) ms", "error"]
    print_table(f"3x3 conv + ReLU, batch {args.batch}: ms per call (median of {args.rounds}) and relative "
                "error against float64", head, rows)
    if args.json:
        write_json(args.json, {"batch": args.batch, "rows": [dict(zip(head, r)) for r in rows]})


if __name__ == "__main__":
    main()
