"""The ``vgg`` command: a table from subcommand to library function, no logic of its own.

Each command is a pair (add its arguments, run it). Errors a user can cause (bad names, missing
files, bad values) end as one line on stderr and exit code 2; ``VGG_DEBUG=1`` shows the traceback.
``vgg train`` also ends with 3 (the loss became NaN), and with 130 or 143 when Ctrl-C or SIGTERM
stopped it after writing a resumable checkpoint (``vgg.training.stopping``).
"""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Callable

from .. import __version__
from .data import bench_args, bench_run, data_args, data_run
from .evaluate import evaluate_args, evaluate_run, predict_args, predict_run
from .networks import models_args, models_run, summary_args, summary_run
from .reproduce import reproduce_args, reproduce_run
from .train import finetune_args, finetune_run, train_args, train_run
from .weights import (
    convert_args,
    convert_run,
    export_args,
    export_run,
    features_args,
    features_run,
    probe_args,
    probe_run,
    weights_args,
    weights_run,
)

Command = tuple[str, Callable[[argparse.ArgumentParser], None], Callable[[argparse.Namespace], None]]

COMMANDS: dict[str, Command] = {
    "models": ("list every network of Table 1 with its size and cost", models_args, models_run),
    "summary": ("per-layer table of one network", summary_args, summary_run),
    "data": ("describe a data set: splits, images per class, unreadable files, mean and PCA colours",
             data_args, data_run),
    "evaluate": ("top-1/top-5 error under the paper's test protocols (dense, multi-crop, scales, "
                 "fusion)", evaluate_args, evaluate_run),
    "predict": ("classes and probabilities of image files", predict_args, predict_run),
    "convert": ("convert torchvision, timm or Keras VGG weights to our checkpoint", convert_args,
                convert_run),
    "weights": ("list the published weights: architecture, reported accuracy, size, URL", weights_args,
                weights_run),
    "export": ("export a checkpoint to ONNX, TorchScript, safetensors or a torchvision .pth", export_args,
               export_run),
    "features": ("Appendix B: very deep features (dense fc7, flips, scales, L2) of a data set",
                 features_args, features_run),
    "linear-probe": ("train a linear SVM on features and report its accuracy", probe_args, probe_run),
    "train": ("train a VGG with the paper's recipe (resumable, multi-process with torchrun)", train_args,
              train_run),
    "finetune": ("fine-tune pretrained weights on new data: new head, frozen then all layers",
                 finetune_args, finetune_run),
    "bench": ("the benchmark suite (make bench): inference, training, data, against references",
              bench_args, bench_run),
    "reproduce": ("the paper's experiments (Tables 3-6, 8-9) as one resumable pipeline of runs, and "
                  "REPORT.md with the paper's tables beside ours", reproduce_args, reproduce_run),
}


def build_parser() -> argparse.ArgumentParser:
    # allow_abbrev=False everywhere: `--epoch 3` is an error naming --epochs, not a silent --epochs 3
    # (an unknown word would otherwise run whatever flag it happens to abbreviate).
    parser = argparse.ArgumentParser(
        prog="vgg", allow_abbrev=False, description="The VGG paper (Simonyan & Zisserman, ICLR 2015), "
        "complete: every network of Table 1, the training recipe, every test protocol.")
    parser.add_argument("--version", action="version", version=f"vgg {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    for name, (help_text, add_args, run) in COMMANDS.items():
        p = sub.add_parser(name, help=help_text, description=help_text, allow_abbrev=False)
        add_args(p)
        p.set_defaults(run=run)
    return parser


def closest_flag(parser: argparse.ArgumentParser, word: str) -> str | None:
    """The valid flag of ``parser`` nearest to ``word`` (``--epohcs`` -> ``--epochs``), if any is near."""
    import difflib

    flags = [s for a in parser._actions for s in a.option_strings if s.startswith("--")]
    flag = word.split("=", 1)[0]
    starting = [f for f in flags if f.startswith(flag)] if len(flag) > 3 else []
    close = difflib.get_close_matches(flag, flags, n=1, cutoff=0.6)
    return starting[0] if len(starting) == 1 else close[0] if close else None


def parse(parser: argparse.ArgumentParser, argv: list[str] | None) -> argparse.Namespace:
    """``parser.parse_args``, except that an unknown argument is reported by the subcommand's parser:
    its usage, and the closest valid flag."""
    args, unknown = parser.parse_known_args(argv)
    if unknown:
        sub = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
        command = sub.choices[args.command]
        # Positionals after an option (`vgg predict LOC --classifier CLS IMAGES...`) belong to the
        # command's open-ended positional: argparse fills positionals from the first run of them only.
        spread = [a for a in command._actions if not a.option_strings and a.nargs in ("+", "*")]
        if spread and not any(u.startswith("-") for u in unknown):
            getattr(args, spread[-1].dest).extend(unknown)
            return args
        flag = next((u for u in unknown if u.startswith("-")), None)
        hint = closest_flag(command, flag) if flag else None
        command.error(f"unrecognized argument{'s' if len(unknown) > 1 else ''}: {' '.join(unknown)}"
                      + (f" (did you mean {hint}?)" if hint else ""))
    return args


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parse(parser, argv)
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
