"""The networks: `vgg models` (Table 1 and 2) and `vgg summary` (one net, layer by layer)."""

from __future__ import annotations

import argparse

import torch

from ..models import NAMES, VGG, conv_layers, count_params, layer_table, parse_arch
from ..report import table


def _meta_model(arch: str, **kwargs) -> VGG:
    """A model whose tensors live on the meta device: shapes and counts without memory or init."""
    config, bn = parse_arch(arch)
    kwargs["batch_norm"] = kwargs.get("batch_norm", False) or bn
    with torch.device("meta"):
        return VGG(config, **kwargs)


# -- vgg models / vgg summary ----------------------------------------------------------------------

def models_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--size", type=int, default=224, help="input side for multiply-adds (default 224)")


def models_run(args) -> None:
    rows = []
    for config in NAMES:
        for bn in (False, True):
            model = _meta_model(config, batch_norm=bn)
            macs = sum(r["macs"] for r in layer_table(model, args.size))
            rows.append([model.arch, config + ("_bn" if bn else ""),
                         len(conv_layers(model)) + 3, f"{count_params(model) / 1e6:.2f}",
                         f"{macs / 1e9:.2f}"])
    print(table(rows, ["name", "paper", "weight layers", "params (M)", f"MACs@{args.size} (G)"]))


def summary_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("arch", help="architecture name, e.g. vgg16, D, vgg11_lrn, vgg19_bn")
    p.add_argument("--size", type=int, default=None, help="input side (default: the crop size)")
    p.add_argument("--crop-size", type=int, default=224, help="training crop size (default 224)")
    p.add_argument("--batch-norm", action="store_true", help="BatchNorm after every conv")
    p.add_argument("--num-classes", type=int, default=1000)
    p.add_argument("--width", type=float, default=1.0, help="channel width multiplier")
    p.add_argument("--in-channels", type=int, default=3)


def summary_run(args) -> None:
    model = _meta_model(args.arch, num_classes=args.num_classes, batch_norm=args.batch_norm,
                        width=args.width, crop_size=args.crop_size, in_channels=args.in_channels)
    rows = layer_table(model, args.size)
    body = [[r["layer"], "x".join(map(str, r["shape"])), r["receptive_field"], f"{r['params']:,}",
             f"{r['macs']:,}"] for r in rows]
    params, macs = sum(r["params"] for r in rows), sum(r["macs"] for r in rows)
    body.append(["total", "", "", f"{params:,}", f"{macs:,}"])
    print(f"{model.arch} (width {model.width:g}, crop {model.crop_size}, input "
          f"{args.size or model.crop_size})")
    print(table(body, ["layer", "output", "receptive field", "params", "multiply-adds"]))
    print(f"parameters: {params / 1e6:.2f} M   multiply-adds: {macs / 1e9:.2f} G")
