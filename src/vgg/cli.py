"""The ``vgg`` command: a table from subcommand to library function, no logic of its own.

Each command is a pair (add its arguments, run it). Errors a user can cause (bad names, missing
files, bad values) end as one line on stderr and exit code 2; ``VGG_DEBUG=1`` shows the traceback.
"""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Callable

import torch

from . import __version__
from .models import NAMES, VGG, conv_layers, count_params, layer_table, parse_arch


def table(rows: list[list], header: list[str]) -> str:
    """Format rows as a plain aligned text table (numbers right-aligned)."""
    cells = [header] + [[str(c) for c in r] for r in rows]
    widths = [max(len(r[i]) for r in cells) for i in range(len(header))]
    numeric = [all(_is_number(r[i]) for r in cells[1:]) for i in range(len(header))]

    def line(r):
        return "  ".join(c.rjust(w) if num else c.ljust(w) for c, w, num in zip(r, widths, numeric))

    return "\n".join([line(header), "  ".join("-" * w for w in widths)] + [line(r) for r in cells[1:]])


def _is_number(s: str) -> bool:
    try:
        float(s.replace(",", ""))
        return True
    except ValueError:
        return False


def _meta_model(arch: str, **kwargs) -> VGG:
    """A model whose tensors live on the meta device: shapes and counts without memory or init."""
    config, bn = parse_arch(arch)
    kwargs["batch_norm"] = kwargs.get("batch_norm", False) or bn
    with torch.device("meta"):
        return VGG(config, **kwargs)


# -- vgg models / vgg summary ----------------------------------------------------------------------

def _models_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--size", type=int, default=224, help="input side for multiply-adds (default 224)")


def _models_run(args) -> None:
    rows = []
    for config in NAMES:
        for bn in (False, True):
            model = _meta_model(config, batch_norm=bn)
            macs = sum(r["macs"] for r in layer_table(model, args.size))
            rows.append([model.arch, config + ("_bn" if bn else ""),
                         len(conv_layers(model)) + 3, f"{count_params(model) / 1e6:.2f}",
                         f"{macs / 1e9:.2f}"])
    print(table(rows, ["name", "paper", "weight layers", "params (M)", f"MACs@{args.size} (G)"]))


def _summary_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("arch", help="architecture name, e.g. vgg16, D, vgg11_lrn, vgg19_bn")
    p.add_argument("--size", type=int, default=None, help="input side (default: the crop size)")
    p.add_argument("--crop-size", type=int, default=224, help="training crop size (default 224)")
    p.add_argument("--batch-norm", action="store_true", help="BatchNorm after every conv")
    p.add_argument("--num-classes", type=int, default=1000)
    p.add_argument("--width", type=float, default=1.0, help="channel width multiplier")
    p.add_argument("--in-channels", type=int, default=3)


def _summary_run(args) -> None:
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


Command = tuple[str, Callable[[argparse.ArgumentParser], None], Callable[[argparse.Namespace], None]]

COMMANDS: dict[str, Command] = {
    "models": ("list every network of Table 1 with its size and cost", _models_args, _models_run),
    "summary": ("per-layer table of one network", _summary_args, _summary_run),
}


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="vgg", description="The VGG paper (Simonyan & Zisserman, ICLR 2015), complete: "
        "every network of Table 1, the training recipe, every test protocol.")
    parser.add_argument("--version", action="version", version=f"vgg {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    for name, (help_text, add_args, run) in COMMANDS.items():
        p = sub.add_parser(name, help=help_text, description=help_text)
        add_args(p)
        p.set_defaults(run=run)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        args.run(args)
    except (ValueError, FileNotFoundError, NotADirectoryError, PermissionError, KeyError) as e:
        if os.environ.get("VGG_DEBUG"):
            raise
        message = e.args[0] if isinstance(e, KeyError) and e.args else str(e)
        print(f"vgg {args.command}: error: {message}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("vgg: interrupted", file=sys.stderr)
        return 130
    return 0
