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

import torch

from . import __version__
from .models import NAMES, VGG, conv_layers, count_params, layer_table, parse_arch
from .report import table


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
    from .evaluation import PROTOCOLS

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
    p.add_argument("--no-amp", action="store_true", help="float32 on the GPU (default: bfloat16 autocast)")
    _pooling_args(p)


def _pooling_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--floor-pooling", action="store_true",
                   help="pool as PyTorch (sizes rounded down): dense views lose the last pixels of a side "
                   "that is not a multiple of 32; default: as Caffe (the paper's code), the whole image")
    # Caffe's rounding used to be opt-in; it is the default now, and the old flag still says so.
    p.add_argument("--ceil-pooling", action="store_true", help=argparse.SUPPRESS)


def _ceil_mode(args) -> bool:
    """Dense views pool as Caffe (rounding up) unless --floor-pooling; --ceil-pooling is the default."""
    if args.floor_pooling and args.ceil_pooling:
        raise ValueError("give --floor-pooling or --ceil-pooling, not both (ceil, Caffe's, is the default)")
    return not args.floor_pooling


def _checkpoints(args, items: list[str]) -> list[str]:
    return list(items) + list(args.pretrained)


def _evaluate_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("checkpoints", nargs="*", metavar="CKPT",
                   help="checkpoint file or run folder; several are fused (posteriors averaged)")
    p.add_argument("--data", default=None, help="fashion-mnist, fashion-mnist-loc or a folder with train/ "
                   "val/ [test/] (default fashion-mnist; a localisation net: the data it was trained on)")
    p.add_argument("--split", choices=["train", "val", "test"], default="val", help="default val")
    _protocol_args(p, several=True)
    _localization_args(p)
    p.add_argument("--gt-class", action="store_true",
                   help="localisation: the box of the true class, classification factored out (Table 8)")
    p.add_argument("--strict", action="store_true", help="localisation: refuse any bad box annotation")
    p.add_argument("--breakdown", action="store_true",
                   help="also every net alone at one and at all its scales (Tables 3-6 in one run)")
    p.add_argument("--limit", type=int, help="only the first N images")
    p.add_argument("--batch-size", type=int, default=64, help="images per forward pass (default 64)")
    p.add_argument("--workers", type=int, default=0, help="image decoding processes (default 0)")
    p.add_argument("--json", metavar="PATH", help="write every number as JSON")
    p.add_argument("--confusion", metavar="PNG",
                   help="confusion matrix image (default confusion_SPLIT_PROTOCOL.png beside --json, else "
                   "in the first checkpoint's run folder, else here)")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")


def _localization_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--classifier", action="append", default=[], metavar="CLS_RUN",
                   help="localisation: the classification net whose scores rank the boxes (App. A.1; "
                   "repeatable: fused)")
    p.add_argument("--boxes", nargs="+", metavar="[SPLIT=]PATH",
                   help="localisation: a folder split's box annotations (VOC XML, Kaggle's or a plain CSV)")


def _evaluate_run(args) -> None:
    from .evaluation import EvalConfig, run_evaluate
    from .evaluation.localization_commands import is_localization_checkpoint, run_localization_evaluate

    checkpoints = _checkpoints(args, args.checkpoints)
    if args.gt_class or args.classifier or any(is_localization_checkpoint(c) for c in checkpoints):
        run_localization_evaluate(
            checkpoints, classifiers=args.classifier, data=args.data, split=args.split,
            protocols=args.protocol, gt_class=args.gt_class, scales=args.scales,
            single_scale=args.single_scale, flip=False if args.no_flip else None, limit=args.limit,
            boxes=args.boxes, strict=args.strict, batch_size=args.batch_size, workers=args.workers,
            device=args.device, amp=not args.no_amp, ceil_mode=_ceil_mode(args), json_path=args.json,
            progress=not args.no_progress)
        return
    run_evaluate(EvalConfig(
        checkpoints=checkpoints, data=args.data or "fashion-mnist", split=args.split,
        protocols=args.protocol, scales=args.scales, single_scale=args.single_scale,
        breakdown=args.breakdown,
        flip=False if args.no_flip else None, limit=args.limit, batch_size=args.batch_size,
        workers=args.workers, device=args.device, amp=not args.no_amp, ceil_mode=_ceil_mode(args),
        json=args.json,
        confusion=args.confusion,
        progress=not args.no_progress))


def _predict_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("items", nargs="+", metavar="CKPT IMAGE|DIR",
                   help="a checkpoint (unless --pretrained gives it), then image files or folders")
    _protocol_args(p, several=False)
    p.add_argument("--topk", type=int, default=5, help="classes shown per image (default 5)")
    p.add_argument("--json", action="store_true", help="print JSON instead of text")
    p.add_argument("--classifier", action="append", default=[], metavar="CLS_RUN",
                   help="localisation: the classification net whose scores rank the boxes (repeatable)")
    p.add_argument("--draw", metavar="DIR", help="localisation: a PNG of each image with its boxes, in DIR")


def _predict_run(args) -> None:
    from .evaluation import run_predict
    from .evaluation.localization_commands import is_localization_checkpoint, run_localization_predict

    ckpts, inputs = (args.pretrained, args.items) if args.pretrained else (args.items[:1], args.items[1:])
    if not inputs:
        raise ValueError("give image files or folders after the checkpoint")
    if args.classifier or args.draw or any(is_localization_checkpoint(c) for c in ckpts):
        run_localization_predict(ckpts, inputs, classifiers=args.classifier, scales=args.scales,
                                 single_scale=args.single_scale, flip=False if args.no_flip else None,
                                 topk=args.topk, device=args.device, amp=not args.no_amp,
                                 ceil_mode=_ceil_mode(args), as_json=args.json, draw=args.draw)
        return
    run_predict(ckpts, inputs, protocol=args.protocol, scales=args.scales,
                flip=False if args.no_flip else None, single_scale=args.single_scale, topk=args.topk,
                device=args.device, amp=not args.no_amp, ceil_mode=_ceil_mode(args), as_json=args.json)


# -- vgg train / vgg finetune (Sec. 3.1) ---------------------------------------------------------------

def _train_args(p: argparse.ArgumentParser, finetune: bool = False) -> None:
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
    p.add_argument("--amp", action=yes_no, default=S, help="bf16 autocast on CUDA (default on)")
    p.add_argument("--compile", action=yes_no, default=S, help="torch.compile the net")
    p.add_argument("--save-every", type=int, default=S, help="also checkpoint every N steps")
    p.add_argument("--save-minutes", type=float, default=S, help="and every M minutes (default 10)")
    p.add_argument("--progress", action=yes_no, default=S, help="progress bar (default on a terminal)")


def _train_run(args, defaults: dict | None = None) -> None:
    from .training import NonFiniteLoss, Stopped, config_keys, run_config, train

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


def _finetune_args(p: argparse.ArgumentParser) -> None:
    _train_args(p, finetune=True)


def _finetune_run(args) -> None:
    from .training import FINETUNE_DEFAULTS

    _train_run(args, FINETUNE_DEFAULTS)


# -- vgg convert / export / features / linear-probe (weights in and out, Appendix B) -------------------

def _convert_args(p: argparse.ArgumentParser) -> None:
    from .weights import SOURCES

    p.add_argument("src", metavar="SRC", help="weight file or run folder, a known name (vgg16, vgg16_bn, "
                   "...) or an http(s) URL")
    p.add_argument("out", metavar="OUT", help="our checkpoint (.safetensors) to write")
    p.add_argument("--from", dest="source", choices=SOURCES, default="auto",
                   help="the source format (default auto: told by the file's keys)")
    p.add_argument("--arch", help="the architecture the weights must fit (default: inferred from shapes)")


def _convert_run(args) -> None:
    from .weights import load_any, save_model

    model = load_any(args.src, arch=args.arch, source=args.source)
    path = save_model(model, args.out)
    n, named = model.normalization, model.classes and model.num_classes == 1000
    print(f"{path}: {model.arch} from {model.info.get('source', 'vgg')} weights, crop {model.crop_size}, "
          f"{model.num_classes} classes{' (ImageNet names)' if named else ''}, "
          f"preprocessing mean {list(n.mean)} std {list(n.std)}{' BGR' if n.bgr else ''}")


def _weights_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--json", action="store_true", help="print the records as JSON")


def _weights_run(args) -> None:
    import json

    from .weights import PUBLISHED

    if args.json:
        print(json.dumps([w.to_dict() for w in PUBLISHED.values()]))
        return
    rows = []
    for w in PUBLISHED.values():
        config, bn = parse_arch(w.arch)
        rows.append([w.name, w.arch, config + ("_bn" if bn else ""), f"{w.top1:.2f}", f"{w.top5:.2f}",
                     "?" if w.size_mib is None else f"{w.size_mib:.1f}", w.url])
    print(table(rows, ["name", "arch", "paper", "top-1 (%)", "top-5 (%)", "size (MiB)", "URL"]))
    for source, protocol in dict.fromkeys((w.source, w.protocol) for w in PUBLISHED.values()):
        print(f"accuracy as {source} reports it: {protocol}")


def _export_args(p: argparse.ArgumentParser) -> None:
    from .export import FORMATS

    p.add_argument("ckpt", metavar="CKPT",
                   help="checkpoint file or run folder (or anything vgg convert reads)")
    p.add_argument("out", metavar="OUT", help="file to write")
    p.add_argument("--format", choices=FORMATS, required=True,
                   help="onnx (dense, any size), torchscript, safetensors (ours) or torchvision (.pth)")


def _export_run(args) -> None:
    from .export import export_model
    from .weights import load_any

    path = export_model(load_any(args.ckpt), args.out, args.format)
    print(f"wrote {path} ({args.format})")


def _features_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("ckpt", metavar="CKPT", help="checkpoint file, run folder, known name or URL")
    p.add_argument("--data", required=True, help="fashion-mnist or a folder with train/ val/ [test/]")
    p.add_argument("--split", choices=["train", "val", "test"], default="train", help="default train")
    p.add_argument("--out", required=True, help="features file to write (.safetensors)")
    p.add_argument("--scales", type=int, nargs="+", metavar="Q",
                   help="test scales (shorter side); default Appendix B's 256 384 512 times crop/224")
    p.add_argument("--stack", action="store_true", help="concatenate the scales instead of averaging them")
    _pooling_args(p)
    p.add_argument("--limit", type=int, help="only the first N images")
    p.add_argument("--batch-size", type=int, default=64, help="images per forward pass (default 64)")
    p.add_argument("--workers", type=int, default=0, help="image decoding processes (default 0)")
    p.add_argument("--device", default="auto", help="cpu, cuda, cuda:1 ... (default: cuda if available)")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")


def _features_run(args) -> None:
    from .data import open_dataset
    from .distributed import resolve_device
    from .features import extract_features
    from .weights import load_any

    device = resolve_device(args.device)
    dataset = open_dataset(args.data, args.split, limit=args.limit)
    result = extract_features(load_any(args.ckpt), dataset, scales=args.scales, stack=args.stack,
                              batch_size=args.batch_size, workers=args.workers, device=device,
                              ceil_mode=_ceil_mode(args), progress=not args.no_progress)
    path = result.save(args.out)
    how = "stacked" if args.stack else "averaged"
    print(f"{path}: {len(result.labels)} images x {result.features.shape[1]} features "
          f"({result.info['arch']}, scales {result.info['scales']}, {how})")


def _probe_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("features", metavar="FEATURES", help="training features (from vgg features)")
    p.add_argument("--test", metavar="FEATURES2",
                   help="test features (default: hold out --holdout of FEATURES)")
    p.add_argument("--C", type=float, default=1.0, help="the SVM's regularisation constant (default 1)")
    p.add_argument("--holdout", type=float, default=0.2,
                   help="held-out fraction without --test (default 0.2)")
    p.add_argument("--json", action="store_true", help="print JSON instead of text")


def _probe_run(args) -> None:
    import json

    from .features import Features, linear_probe

    result = linear_probe(Features.load(args.features), Features.load(args.test) if args.test else None,
                          C=args.C, holdout=args.holdout)
    if args.json:
        print(json.dumps(result))
        return
    print(f"linear SVM (C={args.C:g}) on {result['train_images']} x {result['dim']}-D features: "
          f"train accuracy {100 * result['train_accuracy']:.2f}%, {result['evaluated_on']} accuracy "
          f"{100 * result['test_accuracy']:.2f}% ({result['test_images']} images)"
          f"{'' if result['converged'] else ' (the SVM did not converge)'}")


# -- vgg data ------------------------------------------------------------------------------------------

def _data_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("data", metavar="DATA",
                   help="'fashion-mnist', 'fashion-mnist-loc' or a folder root with train/ val/ [test/]")
    p.add_argument("--check", action="store_true", help="decode every image; list the unreadable ones")
    p.add_argument("--stats", action="store_true",
                   help="the training set's mean and PCA colour components (0-255 scale)")
    p.add_argument("--val-size", type=int, default=5000, help="Fashion-MNIST's held-out val (default 5000)")
    p.add_argument("--seed", type=int, default=0, help="seed of the val split and of --stats' sample")
    p.add_argument("--json", action="store_true", help="print the description as JSON")
    p.add_argument("--draw", metavar="PNG", help="a grid of training images with their boxes (App. A)")
    p.add_argument("--boxes", nargs="+", metavar="[SPLIT=]PATH", help="a folder's box annotations for --draw")


def _data_run(args) -> None:
    import json

    from .data import describe_dataset

    info = describe_dataset(args.data, check=args.check, stats=args.stats, val_size=args.val_size,
                            seed=args.seed)
    if args.json:
        print(json.dumps(info, indent=2))
        return
    splits = list(info["splits"])
    where = f" (files: {info['files']})" if info.get("files") else ""
    print(f"{info['name']}: {len(info['classes'])} classes, {info['channels']} channel(s){where}")
    counts = {s: info["splits"][s]["per_class"] for s in splits}
    if len(info["classes"]) <= 30:
        rows = [[c] + [counts[s][i] for s in splits] for i, c in enumerate(info["classes"])]
    else:
        rows = [["fewest per class"] + [min(counts[s]) for s in splits],
                ["most per class"] + [max(counts[s]) for s in splits]]
    rows.append(["total"] + [info["splits"][s]["images"] for s in splits])
    print(table(rows, ["class"] + splits))
    if args.check:
        bad = [(s, p, r) for s in splits for p, r in info["splits"][s].get("bad", [])]
        for s, p, r in bad:
            print(f"{s}: unreadable {p}: {r}")
        print(f"{len(bad)} unreadable file(s)")
    if args.stats:
        st = info["statistics"]
        print("mean (0-255): " + ", ".join(f"{v:.3f}" for v in st["mean"]))
        print("PCA eigval: " + ", ".join(f"{v:.4f}" for v in st["eigval"]))
        print("PCA eigvec (columns): " + json.dumps([[round(v, 4) for v in row] for row in st["eigvec"]]))
    if args.draw:
        from .data import open_box_dataset, sample_picture

        boxed = open_box_dataset(args.data, "train", limit=16, val_size=args.val_size, boxes=args.boxes)
        sample_picture(boxed, args.draw)
        for where, reason in boxed.problems:
            print(f"skipped {where}: {reason}")
        print(f"wrote {args.draw}: {min(16, len(boxed))} training images with their boxes")


# -- vgg bench -----------------------------------------------------------------------------------------

BENCH_PARTS = ("inference", "training", "data")


def _bench_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--quick", action="store_true", help="a short run: fewer rounds, batches and images")
    p.add_argument("--only", nargs="+", choices=BENCH_PARTS, metavar="PART",
                   help=f"run only these parts ({', '.join(BENCH_PARTS)})")
    p.add_argument("--bf16", action="store_true",
                   help="also time the opt-in bfloat16 inference (never the fp32 comparison)")
    p.add_argument("--json", metavar="PATH", help="results JSON (default benchmarks/results/all.json)")


def _bench_run(args) -> None:
    import subprocess
    from pathlib import Path

    # The suite lives beside the package in a source checkout (make bench runs the same script).
    script = Path(__file__).resolve().parents[2] / "benchmarks" / "run_all.py"
    if not script.is_file():
        raise FileNotFoundError(f"vgg bench runs the repository's benchmarks/run_all.py, not found at "
                                f"{script}; install from a source checkout (pip install -e .)")
    argv = [sys.executable, str(script)] + (["--quick"] if args.quick else []) + \
        (["--only", *args.only] if args.only else []) + (["--bf16"] if args.bf16 else []) + \
        (["--json", args.json] if args.json else [])
    code = subprocess.call(argv)
    if code:
        raise SystemExit(code)


Command = tuple[str, Callable[[argparse.ArgumentParser], None], Callable[[argparse.Namespace], None]]

COMMANDS: dict[str, Command] = {
    "models": ("list every network of Table 1 with its size and cost", _models_args, _models_run),
    "summary": ("per-layer table of one network", _summary_args, _summary_run),
    "data": ("describe a data set: splits, images per class, unreadable files, mean and PCA colours",
             _data_args, _data_run),
    "evaluate": ("top-1/top-5 error under the paper's test protocols (dense, multi-crop, scales, "
                 "fusion)", _evaluate_args, _evaluate_run),
    "predict": ("classes and probabilities of image files", _predict_args, _predict_run),
    "convert": ("convert torchvision, timm or Keras VGG weights to our checkpoint", _convert_args,
                _convert_run),
    "weights": ("list the published weights: architecture, reported accuracy, size, URL", _weights_args,
                _weights_run),
    "export": ("export a checkpoint to ONNX, TorchScript, safetensors or a torchvision .pth", _export_args,
               _export_run),
    "features": ("Appendix B: very deep features (dense fc7, flips, scales, L2) of a data set",
                 _features_args, _features_run),
    "linear-probe": ("train a linear SVM on features and report its accuracy", _probe_args, _probe_run),
    "train": ("train a VGG with the paper's recipe (resumable, multi-process with torchrun)", _train_args,
              _train_run),
    "finetune": ("fine-tune pretrained weights on new data: new head, frozen then all layers",
                 _finetune_args, _finetune_run),
    "bench": ("the benchmark suite (make bench): inference, training, data, against references",
              _bench_args, _bench_run),
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
