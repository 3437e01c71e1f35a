"""`vgg train` and `vgg finetune` (Sec. 3.1, 3.3): every flag defaults to "not given", so that only
the flags given override --config."""

from __future__ import annotations

import argparse
import sys

# -- vgg train / vgg finetune (Sec. 3.1) ---------------------------------------------------------------

def train_args(p: argparse.ArgumentParser, finetune: bool = False) -> None:
    """Every flag defaults to "not given", so that only the flags given override --config."""
    S = argparse.SUPPRESS
    yes_no = argparse.BooleanOptionalAction
    p.add_argument("--config", default=None, metavar="TOML",
                   help="a recipe (recipes/*.toml); flags override it; an unknown key is an error")
    p.add_argument("--data", default=S, help="fashion-mnist or a folder with train/ val/ [test/]")
    p.add_argument("--classes", nargs="+", default=S, metavar="C",
                   help="train on these classes only (names or indices)")
    if finetune:
        p.add_argument("--pretrained", required=True, metavar="NAME|PATH|URL",
                       help="the net to fine-tune: a known name (vgg16 ...), weight file, run folder or URL")
    else:
        p.add_argument("--pretrained", default=S, metavar="NAME|PATH|URL",
                       help="start from these weights (new head if the class count differs)")
    p.add_argument("--arch", "--model", dest="arch", default=S, help="vgg11 / A, vgg16_bn / D_bn, ...")
    p.add_argument("--batch-norm", action=yes_no, default=S, help="BatchNorm after every conv")
    p.add_argument("--width", type=float, default=S, help="channel width multiplier (default 1)")
    p.add_argument("--crop-size", type=int, default=S, help="training crop (default 224)")
    p.add_argument("--scale", type=int, nargs="+", default=S, metavar="S",
                   help="S, or SMIN SMAX for scale jittering (default 256 x crop/224)")
    p.add_argument("--epochs", type=int, default=S, help="default 74 (paper)")
    p.add_argument("--batch-size", type=int, default=S, help="global batch (default 256)")
    p.add_argument("--micro-batch", type=int, default=S,
                   help="images per forward pass per process; gradients accumulate to --batch-size")
    p.add_argument("--lr", type=float, default=S, help="learning rate (default 1e-2)")
    p.add_argument("--momentum", type=float, default=S, help="default 0.9")
    p.add_argument("--weight-decay", "--wd", dest="weight_decay", type=float, default=S,
                   help="default 5e-4")
    p.add_argument("--decay-bias-norm", action=yes_no, default=S,
                   help="weight decay on biases and BatchNorm too (default: on, every parameter decays; "
                   "the paper does not say)")
    p.add_argument("--dropout", type=float, default=S, help="on fc6 and fc7 (default 0.5)")
    p.add_argument("--lr-patience", type=int, default=S,
                   help="epochs without val-accuracy gain before lr / 10 (default 2)")
    p.add_argument("--lr-factor", type=float, default=S, help="default 0.1")
    p.add_argument("--lr-drops", type=int, default=S, help="at most this many drops (default 3)")
    p.add_argument("--lr-threshold", type=float, default=S,
                   help="val-accuracy gain (points) that counts as improving (default 0)")
    p.add_argument("--init", choices=["normal", "glorot"], default=S, help="random init (default normal)")
    p.add_argument("--init-std", type=float, default=S, help="std of the normal init (default 0.01)")
    p.add_argument("--init-from", default=S, metavar="CKPT",
                   help="start from this checkpoint's weights (e.g. S=384 from the S=256 net)")
    p.add_argument("--init-from-shallow", default=S, metavar="CKPT",
                   help="the paper's transfer from a trained net A: its first 4 convs and 3 FC layers")
    p.add_argument("--no-flip", dest="flip", action="store_false", default=S, help="no random flips")
    p.add_argument("--lighting-std", type=float, default=S,
                   help="PCA colour shift std (default 0.1; 0 = off)")
    p.add_argument("--freeze-epochs", type=int, default=S,
                   help="epochs that train only the FC layers (fine-tuning stage 1)")
    p.add_argument("--head-lr-mult", type=float, default=S, help="the new last layer's lr multiplier")
    p.add_argument("--unfreeze-lr-scale", type=float, default=S,
                   help="lr multiplier once everything trains (fine-tuning stage 2)")
    p.add_argument("--reset-head", action=yes_no, default=S, help="new last layer even if the classes fit")
    p.add_argument("--task", choices=["classification", "localization"], default=S,
                   help="what is learned: classification (default) or localization (App. A: box regression "
                   "from a classifier given by --init-from; lr 1e-3 unless given)")
    p.add_argument("--head", choices=["pcr", "scr"], default=S,
                   help="localisation: a box per class (pcr, default) or one shared box (scr)")
    p.add_argument("--finetune", choices=["all", "fc"], default=S,
                   help="fine-tune all layers (default) or only the FC layers (as OverFeat)")
    p.add_argument("--boxes", nargs="+", default=S, metavar="[SPLIT=]PATH",
                   help="localisation: box annotations of a folder, e.g. train=LOC_train_solution.csv "
                   "val=ann/val (default: found beside the images)")
    p.add_argument("--val-scale", type=int, default=S, help="validation Q (default (Smin+Smax)/2)")
    p.add_argument("--floor-pooling", action=yes_no, default=S,
                   help="dense validation and test pool as PyTorch (rounded down) instead of as Caffe")
    p.add_argument("--val-size", type=int, default=S, help="Fashion-MNIST images held out for val (5000)")
    p.add_argument("--test", action=yes_no, default=S,
                   help="evaluate the best checkpoint on the test split at the end")
    p.add_argument("--output", "-o", default=S, help="run folder (default runs/train)")
    p.add_argument("--resume", nargs="?", const=True, default=False, metavar="DIR",
                   help="continue the run in --output (or DIR) from its last checkpoint")
    p.add_argument("--seed", type=int, default=S)
    p.add_argument("--deterministic", action=yes_no, default=S, help="bitwise reproducible (slower)")
    p.add_argument("--strict", action=yes_no, default=S, help="decode-check every image first")
    p.add_argument("--workers", "-j", type=int, default=S, help="image decoding processes (default 0)")
    p.add_argument("--device", default=S, help="auto, cpu, cuda (default auto)")
    p.add_argument("--limit", type=int, default=S, help="first N images of each split")
    p.add_argument("--channels-last", action=yes_no, default=S, help="default: on")
    p.add_argument("--amp", action=yes_no, default=S,
                   help="bf16 autocast of the steps on CUDA and on CPUs with native bf16 (default on)")
    p.add_argument("--compile", action=yes_no, default=S, help="torch.compile the net")
    p.add_argument("--save-every", type=int, default=S, help="also checkpoint every N steps")
    p.add_argument("--save-minutes", type=float, default=S, help="and every M minutes (default 10)")
    p.add_argument("--progress", action=yes_no, default=S, help="progress bar (default on a terminal)")


def train_run(args, defaults: dict | None = None) -> None:
    from ..training import NonFiniteLoss, Stopped, config_keys, run_config, train

    flags = {k: v for k, v in vars(args).items() if k in config_keys()}
    config = run_config(args.config, flags, defaults, resume=args.resume)
    try:
        train(config, resume=bool(args.resume))
    except NonFiniteLoss as e:
        print(f"vgg {args.command}: error: {e}", file=sys.stderr)
        raise SystemExit(3) from None
    except Stopped as e:  # Ctrl-C or SIGTERM: checkpointed; exit 130 or 143 (128 + the signal)
        print(f"vgg {args.command}: {e}", file=sys.stderr)
        raise SystemExit(e.code) from None


def finetune_args(p: argparse.ArgumentParser) -> None:
    train_args(p, finetune=True)


def finetune_run(args) -> None:
    from ..training import FINETUNE_DEFAULTS

    train_run(args, FINETUNE_DEFAULTS)
