"""Dense evaluation's pooling, measured: Caffe's rounding up (the default: every pixel seen) against
PyTorch's rounding down (``--floor-pooling``: the last pixels of a side that is not a multiple of 32
never seen), on the same net and images. The figures are in README.md, Evaluation.

    .venv/bin/python benchmarks/pooling.py fashion-mnist runs/demo      # a trained Fashion-MNIST run
    .venv/bin/python benchmarks/pooling.py photos --folder runs/photos43 # 4:3 photographs, crop 224

``photos`` builds a folder of 4:3 images from scikit-image's sample photographs (one class per
photograph, random 4:3 crops of it, saved at 320 x 240), trains a small crop-224 net on it, and
evaluates its val split at Q = 256, where each image is 256 x 341: PyTorch's pooling leaves its last
21 columns out (the issue's example), Caffe's does not.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import torch

import vgg
from vgg.data import open_dataset

PHOTOS = ("astronaut", "coffee", "rocket", "hubble_deep_field", "chelsea", "immunohistochemistry")


def compare(model, dataset, label: str, **kw) -> dict:
    """Top-1 with each pooling, how many top-1 answers differ, and the mean |posterior difference|."""
    got = {}
    for ceil in (False, True):
        got[ceil] = vgg.evaluation.evaluate(model, dataset, ceil_mode=ceil, batch_size=64, **kw)
    floor, ceil = got[False], got[True]
    changed = (floor.probs.argmax(1) != ceil.probs.argmax(1)).sum().item()
    row = {"what": label, "images": floor.metrics["images"], "scales": ceil.scales,
           "views": ceil.views, "floor_top1": floor.metrics["top1_accuracy"],
           "ceil_top1": ceil.metrics["top1_accuracy"], "top1_changed": changed,
           "mean_abs_posterior_difference": (floor.probs - ceil.probs).abs().sum(1).mean().item() / 2}
    print(f"{label:<48} {row['images']:>6} images  top-1 floor {row['floor_top1']:6.2f}%  ceil "
          f"{row['ceil_top1']:6.2f}%  ({changed} answers changed, mean total variation "
          f"{row['mean_abs_posterior_difference']:.3f})", flush=True)
    return row


def fashion_mnist(run: str, limit: int | None) -> list[dict]:
    model = vgg.engine.prepare_for_inference(vgg.load_model(run), "cpu")
    val = open_dataset("fashion-mnist", "val", limit=limit)
    test = open_dataset("fashion-mnist", "test", limit=limit)
    rows = [compare(model, val, "val, Q = 34, one view (the demo's validation)", protocol="dense",
                    scales=[34], flip=False)]
    for q in (32, 34, 36, 37, 40):
        rows.append(compare(model, test, f"test, Q = {q}, one view", protocol="dense", scales=[q],
                            flip=False))
    rows.append(compare(model, test, "test, dense, net's 3 scales + flips (make demo's)", protocol="dense"))
    return rows


def build_photos(folder: Path, train: int = 6, val: int = 3, seed: int = 0) -> None:
    """One class per photograph; each image a random 4:3 crop (60-100% of the largest), 320 x 240."""
    import skimage.data
    from PIL import Image

    g = torch.Generator().manual_seed(seed)
    for name in PHOTOS:
        photo = getattr(skimage.data, name)()
        h, w = photo.shape[:2]
        big_h = min(h, w * 3 // 4)
        for split, n in (("train", train), ("val", val)):
            (folder / split / name).mkdir(parents=True, exist_ok=True)
            for i in range(n):
                ch = int(big_h * (0.6 + 0.4 * torch.rand(1, generator=g).item()))
                cw = ch * 4 // 3
                top = int(torch.randint(0, h - ch + 1, (1,), generator=g))
                left = int(torch.randint(0, w - cw + 1, (1,), generator=g))
                crop = Image.fromarray(photo[top:top + ch, left:left + cw]).resize((320, 240), Image.BICUBIC)
                crop.save(folder / split / name / f"{i}.png")


def photos(folder: Path, epochs: int, lr: float) -> list[dict]:
    if not (folder / "train").is_dir():
        build_photos(folder)
    run = folder.parent / (folder.name + "-run")
    if not (run / "best.safetensors").is_file():
        vgg.train(vgg.TrainConfig(data=str(folder), arch="A", batch_norm=True, width=0.125, crop_size=224,
                                  scale=256, init="glorot", lr=lr, batch_size=12, epochs=epochs,
                                  lr_patience=100, device="cpu", progress=False, output=str(run)))
    model = vgg.engine.prepare_for_inference(vgg.load_model(run), "cpu")
    rows = []
    for split in ("val", "train"):
        data = open_dataset(str(folder), split)
        rows.append(compare(model, data, f"{split}, Q = 256 (256 x 341), one view", protocol="dense",
                            scales=[256], flip=False))
        rows.append(compare(model, data, f"{split}, Q = 256, with flips", protocol="dense", scales=[256]))
        rows.append(compare(model, data, f"{split}, Q = 224, 256, 288, with flips", protocol="dense"))
    return rows


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], allow_abbrev=False)
    p.add_argument("what", choices=["fashion-mnist", "photos"])
    p.add_argument("run", nargs="?", help="fashion-mnist: the trained run folder")
    p.add_argument("--limit", type=int, help="fashion-mnist: the first N images of each split")
    p.add_argument("--folder", default="runs/photos43", help="photos: the folder to build and use")
    p.add_argument("--epochs", type=int, default=30, help="photos: epochs of the small net")
    p.add_argument("--lr", type=float, default=0.01, help="photos: its learning rate")
    p.add_argument("--json", help="write the rows as JSON")
    args = p.parse_args(argv)
    torch.manual_seed(0)
    if args.what == "fashion-mnist":
        if not args.run:
            p.error("fashion-mnist needs the run folder of a trained net")
        rows = fashion_mnist(args.run, args.limit)
    else:
        rows = photos(Path(args.folder), args.epochs, args.lr)
    if args.json:
        Path(args.json).write_text(json.dumps(rows, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
