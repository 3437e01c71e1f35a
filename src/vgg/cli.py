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


# -- vgg evaluate / vgg predict (the paper's test protocols, Sec. 3.2 and 4) ----------------------------

def _protocol_args(p: argparse.ArgumentParser, several: bool) -> None:
    from .evaluate import PROTOCOLS

    p.add_argument("--pretrained", action="append", default=[], metavar="NAME|PATH|URL",
                   help="a checkpoint given by name, path or URL (repeatable; instead of CKPT)")
    p.add_argument("--protocol", choices=PROTOCOLS, default=["dense"] if several else "dense", metavar="P",
                   nargs="+" if several else None,
                   help="centre (the libraries' 256/224 centre crop), dense, multi-crop (5x5 crops x 2 "
                   "flips per scale) or dense+multi-crop" + (" (several give several rows)" if several
                                                             else "") + "; default dense")
    p.add_argument("--scales", type=int, nargs="+", metavar="Q",
                   help="test scales (shorter side); default from the net's training scale: fixed S "
                   "-> {S-32, S, S+32} (step 32 x crop/224), jittered -> {Smin, (Smin+Smax)/2, Smax}")
    p.add_argument("--single-scale", action="store_true",
                   help="the paper's one test scale: Q = S, or (Smin+Smax)/2 when jittered (Table 3)")
    p.add_argument("--no-flip", action="store_true", help="leave out the horizontally flipped views")
    p.add_argument("--device", default="auto", help="cpu, cuda, cuda:1 ... (default: cuda if available)")


def _checkpoints(args, items: list[str]) -> list[str]:
    return list(items) + list(args.pretrained)


def _evaluate_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("checkpoints", nargs="*", metavar="CKPT",
                   help="checkpoint file or run folder; several are fused (posteriors averaged)")
    p.add_argument("--data", default="fashion-mnist", help="fashion-mnist or a folder with train/ val/ "
                   "[test/] (default fashion-mnist)")
    p.add_argument("--split", choices=["train", "val", "test"], default="val", help="default val")
    _protocol_args(p, several=True)
    p.add_argument("--breakdown", action="store_true",
                   help="also every net alone at one and at all its scales (Tables 3-6 in one run)")
    p.add_argument("--limit", type=int, help="only the first N images")
    p.add_argument("--batch-size", type=int, default=64, help="images per forward pass (default 64)")
    p.add_argument("--workers", type=int, default=0, help="image decoding processes (default 0)")
    p.add_argument("--json", metavar="PATH", help="write every number as JSON")
    p.add_argument("--confusion", metavar="PNG",
                   help="confusion matrix image (default confusion_PROTOCOL.png beside --json, or here)")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")


def _evaluate_run(args) -> None:
    from .evaluate import EvalConfig, run_evaluate

    run_evaluate(EvalConfig(
        checkpoints=_checkpoints(args, args.checkpoints), data=args.data, split=args.split,
        protocols=args.protocol, scales=args.scales, single_scale=args.single_scale,
        breakdown=args.breakdown,
        flip=False if args.no_flip else None, limit=args.limit, batch_size=args.batch_size,
        workers=args.workers, device=args.device, json=args.json, confusion=args.confusion,
        progress=not args.no_progress))


def _predict_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("items", nargs="+", metavar="CKPT IMAGE|DIR",
                   help="a checkpoint (unless --pretrained gives it), then image files or folders")
    _protocol_args(p, several=False)
    p.add_argument("--topk", type=int, default=5, help="classes shown per image (default 5)")
    p.add_argument("--json", action="store_true", help="print JSON instead of text")


def _predict_run(args) -> None:
    from .evaluate import run_predict

    ckpts, inputs = (args.pretrained, args.items) if args.pretrained else (args.items[:1], args.items[1:])
    if not inputs:
        raise ValueError("give image files or folders after the checkpoint")
    run_predict(ckpts, inputs, protocol=args.protocol, scales=args.scales,
                flip=False if args.no_flip else None, single_scale=args.single_scale, topk=args.topk,
                device=args.device, as_json=args.json)


Command = tuple[str, Callable[[argparse.ArgumentParser], None], Callable[[argparse.Namespace], None]]

COMMANDS: dict[str, Command] = {
    "models": ("list every network of Table 1 with its size and cost", _models_args, _models_run),
    "summary": ("per-layer table of one network", _summary_args, _summary_run),
    "evaluate": ("top-1/top-5 error under the paper's test protocols (dense, multi-crop, scales, "
                 "fusion)", _evaluate_args, _evaluate_run),
    "predict": ("classes and probabilities of image files", _predict_args, _predict_run),
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
