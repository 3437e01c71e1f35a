"""Weights in and out: `vgg convert`, `vgg weights`, `vgg export`; Appendix B: `vgg features`,
`vgg linear-probe`."""

from __future__ import annotations

import argparse

from ..models import parse_arch
from ..report import table
from .evaluate import ceil_pooling, pooling_args

# -- vgg convert / export / features / linear-probe (weights in and out, Appendix B) -------------------

def convert_args(p: argparse.ArgumentParser) -> None:
    from ..weights import SOURCES

    p.add_argument("src", metavar="SRC", help="weight file or run folder, a known name (vgg16, vgg16_bn, "
                   "...) or an http(s) URL")
    p.add_argument("out", metavar="OUT", help="our checkpoint (.safetensors) to write")
    p.add_argument("--from", dest="source", choices=SOURCES, default="auto",
                   help="the source format (default auto: told by the file's keys)")
    p.add_argument("--arch", help="the architecture the weights must fit (default: inferred from shapes)")


def convert_run(args) -> None:
    from ..weights import load_any, save_model

    model = load_any(args.src, arch=args.arch, source=args.source)
    path = save_model(model, args.out)
    n, named = model.normalization, model.classes and model.num_classes == 1000
    print(f"{path}: {model.arch} from {model.info.get('source', 'vgg')} weights, crop {model.crop_size}, "
          f"{model.num_classes} classes{' (ImageNet names)' if named else ''}, "
          f"preprocessing mean {list(n.mean)} std {list(n.std)}{' BGR' if n.bgr else ''}")


def weights_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--json", action="store_true", help="print the records as JSON")


def weights_run(args) -> None:
    import json

    from ..weights import PUBLISHED

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


def export_args(p: argparse.ArgumentParser) -> None:
    from ..export import FORMATS

    p.add_argument("ckpt", metavar="CKPT",
                   help="checkpoint file or run folder (or anything vgg convert reads)")
    p.add_argument("out", metavar="OUT", help="file to write")
    p.add_argument("--format", choices=FORMATS, required=True,
                   help="onnx (dense, any size), torchscript, safetensors (ours) or torchvision (.pth)")


def export_run(args) -> None:
    from ..export import export_model
    from ..weights import load_any

    path = export_model(load_any(args.ckpt), args.out, args.format)
    print(f"wrote {path} ({args.format})")


def features_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("ckpt", metavar="CKPT", help="checkpoint file, run folder, known name or URL")
    p.add_argument("--data", required=True, help="fashion-mnist or a folder with train/ val/ [test/]")
    p.add_argument("--split", choices=["train", "val", "test"], default="train", help="default train")
    p.add_argument("--out", required=True, help="features file to write (.safetensors)")
    p.add_argument("--scales", type=int, nargs="+", metavar="Q",
                   help="test scales (shorter side); default Appendix B's 256 384 512 times crop/224")
    p.add_argument("--stack", action="store_true", help="concatenate the scales instead of averaging them")
    pooling_args(p)
    p.add_argument("--limit", type=int, help="only the first N images")
    p.add_argument("--batch-size", type=int, default=64, help="images per forward pass (default 64)")
    p.add_argument("--workers", type=int, default=0, help="image decoding processes (default 0)")
    p.add_argument("--device", default="auto", help="cpu, cuda, cuda:1 ... (default: cuda if available)")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")


def features_run(args) -> None:
    from ..data import open_dataset
    from ..distributed import resolve_device
    from ..features import extract_features
    from ..weights import load_any

    device = resolve_device(args.device)
    dataset = open_dataset(args.data, args.split, limit=args.limit)
    result = extract_features(load_any(args.ckpt), dataset, scales=args.scales, stack=args.stack,
                              batch_size=args.batch_size, workers=args.workers, device=device,
                              ceil_mode=ceil_pooling(args), progress=not args.no_progress)
    path = result.save(args.out)
    how = "stacked" if args.stack else "averaged"
    print(f"{path}: {len(result.labels)} images x {result.features.shape[1]} features "
          f"({result.info['arch']}, scales {result.info['scales']}, {how})")


def probe_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("features", metavar="FEATURES", help="training features (from vgg features)")
    p.add_argument("--test", metavar="FEATURES2",
                   help="test features (default: hold out --holdout of FEATURES)")
    p.add_argument("--C", type=float, default=1.0, help="the SVM's regularisation constant (default 1)")
    p.add_argument("--holdout", type=float, default=0.2,
                   help="held-out fraction without --test (default 0.2)")
    p.add_argument("--json", action="store_true", help="print JSON instead of text")


def probe_run(args) -> None:
    import json

    from ..features import Features, linear_probe

    result = linear_probe(Features.load(args.features), Features.load(args.test) if args.test else None,
                          C=args.C, holdout=args.holdout)
    if args.json:
        print(json.dumps(result))
        return
    print(f"linear SVM (C={args.C:g}) on {result['train_images']} x {result['dim']}-D features: "
          f"train accuracy {100 * result['train_accuracy']:.2f}%, {result['evaluated_on']} accuracy "
          f"{100 * result['test_accuracy']:.2f}% ({result['test_images']} images)"
          f"{'' if result['converged'] else ' (the SVM did not converge)'}")
