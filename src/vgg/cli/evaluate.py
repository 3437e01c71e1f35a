"""`vgg evaluate` and `vgg predict`: the paper's test protocols (Sec. 3.2, 4), localisation's (App. A)."""

from __future__ import annotations

import argparse

# -- vgg evaluate / vgg predict (the paper's test protocols, Sec. 3.2 and 4) ----------------------------

def protocol_args(p: argparse.ArgumentParser, several: bool) -> None:
    from ..evaluation import PROTOCOLS

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
    p.add_argument("--bf16", action="store_true",
                   help="on a CPU with native bfloat16 (AVX512-BF16, AMX): run the nets in bf16, about "
                   "twice as fast, top-1 within ~0.1 point (BENCHMARKS.md); default float32")
    pooling_args(p)


def pooling_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--floor-pooling", action="store_true",
                   help="pool as PyTorch (sizes rounded down): dense views lose the last pixels of a side "
                   "that is not a multiple of 32; default: as Caffe (the paper's code), the whole image")
    # Caffe's rounding used to be opt-in; it is the default now, and the old flag still says so.
    p.add_argument("--ceil-pooling", action="store_true", help=argparse.SUPPRESS)


def ceil_pooling(args) -> bool:
    """Dense views pool as Caffe (rounding up) unless --floor-pooling; --ceil-pooling is the default."""
    if args.floor_pooling and args.ceil_pooling:
        raise ValueError("give --floor-pooling or --ceil-pooling, not both (ceil, Caffe's, is the default)")
    return not args.floor_pooling


def no_bf16(args) -> None:
    if args.bf16:
        raise ValueError("--bf16 runs classification nets; localisation nets run in float32 on the CPU")


def _checkpoints(args, items: list[str]) -> list[str]:
    return list(items) + list(args.pretrained)


def evaluate_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("checkpoints", nargs="*", metavar="CKPT",
                   help="checkpoint file or run folder; several are fused (posteriors averaged)")
    p.add_argument("--data", default=None, help="fashion-mnist, fashion-mnist-loc or a folder with train/ "
                   "val/ [test/] (default fashion-mnist; a localisation net: the data it was trained on)")
    p.add_argument("--split", choices=["train", "val", "test"], default="val", help="default val")
    protocol_args(p, several=True)
    localization_args(p)
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


def localization_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--classifier", action="append", default=[], metavar="CLS_RUN",
                   help="localisation: the classification net whose scores rank the boxes (App. A.1; "
                   "repeatable: fused)")
    p.add_argument("--boxes", nargs="+", metavar="[SPLIT=]PATH",
                   help="localisation: a folder split's box annotations (VOC XML, Kaggle's or a plain CSV)")


def evaluate_run(args) -> None:
    from ..evaluation import EvalConfig, run_evaluate
    from ..evaluation.localization_commands import is_localization_checkpoint, run_localization_evaluate

    checkpoints = _checkpoints(args, args.checkpoints)
    if args.gt_class or args.classifier or any(is_localization_checkpoint(c) for c in checkpoints):
        no_bf16(args)
        run_localization_evaluate(
            checkpoints, classifiers=args.classifier, data=args.data, split=args.split,
            protocols=args.protocol, gt_class=args.gt_class, scales=args.scales,
            single_scale=args.single_scale, flip=False if args.no_flip else None, limit=args.limit,
            boxes=args.boxes, strict=args.strict, batch_size=args.batch_size, workers=args.workers,
            device=args.device, amp=not args.no_amp, ceil_mode=ceil_pooling(args), json_path=args.json,
            progress=not args.no_progress)
        return
    run_evaluate(EvalConfig(
        checkpoints=checkpoints, data=args.data or "fashion-mnist", split=args.split,
        protocols=args.protocol, scales=args.scales, single_scale=args.single_scale,
        breakdown=args.breakdown,
        flip=False if args.no_flip else None, limit=args.limit, batch_size=args.batch_size,
        workers=args.workers, device=args.device, amp=not args.no_amp, bf16=args.bf16,
        ceil_mode=ceil_pooling(args), json=args.json,
        confusion=args.confusion,
        progress=not args.no_progress))


def predict_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("items", nargs="+", metavar="CKPT IMAGE|DIR",
                   help="a checkpoint (unless --pretrained gives it), then image files or folders")
    protocol_args(p, several=False)
    p.add_argument("--topk", type=int, default=5, help="classes shown per image (default 5)")
    p.add_argument("--json", action="store_true", help="print JSON instead of text")
    p.add_argument("--classifier", action="append", default=[], metavar="CLS_RUN",
                   help="localisation: the classification net whose scores rank the boxes (repeatable)")
    p.add_argument("--draw", metavar="DIR", help="localisation: a PNG of each image with its boxes, in DIR")
    p.add_argument("--heatmap", metavar="DIR",
                   help="a PNG of each image with the dense class score map of its top class (the first "
                   "net's, at the first --scales or its one test scale), in DIR")


def predict_run(args) -> None:
    from ..evaluation import run_predict
    from ..evaluation.localization_commands import is_localization_checkpoint, run_localization_predict

    ckpts, inputs = (args.pretrained, args.items) if args.pretrained else (args.items[:1], args.items[1:])
    if not inputs:
        raise ValueError("give image files or folders after the checkpoint")
    if args.classifier or args.draw or any(is_localization_checkpoint(c) for c in ckpts):
        no_bf16(args)
        if args.heatmap:
            raise ValueError("--heatmap draws a classification net's score map; a localisation net "
                             "draws its boxes with --draw")
        run_localization_predict(ckpts, inputs, classifiers=args.classifier, scales=args.scales,
                                 single_scale=args.single_scale, flip=False if args.no_flip else None,
                                 topk=args.topk, device=args.device, amp=not args.no_amp,
                                 ceil_mode=ceil_pooling(args), as_json=args.json, draw=args.draw)
        return
    run_predict(ckpts, inputs, protocol=args.protocol, scales=args.scales,
                flip=False if args.no_flip else None, single_scale=args.single_scale, topk=args.topk,
                device=args.device, amp=not args.no_amp, bf16=args.bf16, ceil_mode=ceil_pooling(args),
                as_json=args.json, heatmap=args.heatmap)
