"""Images/s per core of the data pipeline (vgg.data) against a plain Pillow reference, on generated
ImageNet-like JPEGs of 500x375 (ImageNet's typical size) and 2048x1536 (a camera's).

- train: the paper's training crop (Sec. 3.1): S ~ U[256, 512], random 224 crop, random flip.
  Ours is ``train_batches`` (box-resized crops, draft-mode JPEG decoding, flip + float + normalise
  batched); the reference opens, converts, rescales the whole image to S, crops, flips, and makes a
  normalised float tensor (torchvision's ToTensor + Normalize, written out).
- eval: the test image rescaled to Q = 384 (Sec. 3.2, the jittered nets' single test scale), uncropped,
  as uint8. Ours is ``eval_batches`` (draft-mode JPEG decoding, torch's uint8 resize); the reference
  opens, converts, rescales with Pillow, to tensor.

Both run in this one process on one thread (per core), in interleaved rounds; the table gives the
median images/s and the median (min-max) speed-up over rounds.

    .venv/bin/python benchmarks/data.py [--small 200] [--large 40] [--rounds 5] [--json PATH]
"""

from __future__ import annotations

import argparse
import random
import tempfile
from pathlib import Path

import numpy as np
import torch
from PIL import Image, features

from common import interleaved, machine, median, print_table, ratio, write_json
from vgg.data import Augment, eval_batches, open_dataset, train_batches
from vgg.models import TORCHVISION_NORMALIZATION

SIZES = {"500x375": (500, 375), "2048x1536": (2048, 1536)}
MEAN = torch.tensor(TORCHVISION_NORMALIZATION.mean).view(3, 1, 1) / 255
STD = torch.tensor(TORCHVISION_NORMALIZATION.std).view(3, 1, 1) / 255


def texture(side: int, rng: np.random.Generator) -> np.ndarray:
    """A colour 1/f-noise picture: natural images' power spectrum falls as 1/f^2, which is what makes
    their JPEGs the size and decoding cost of real photographs (~100 KB at 500x375, quality 90)."""
    fy = np.fft.fftfreq(side)[:, None]
    fx = np.fft.rfftfreq(side)[None, :]
    amplitude = 1.0 / np.maximum(np.hypot(fx, fy), 1.0 / side)
    channels = []
    for _ in range(3):
        phase = rng.uniform(0, 2 * np.pi, amplitude.shape)
        c = np.fft.irfft2(amplitude * np.exp(1j * phase), s=(side, side))
        channels.append((c - c.mean()) / c.std())
    mix = np.array([[0.6, 0.3, 0.1], [0.3, 0.6, 0.1], [0.2, 0.3, 0.5]])  # correlated colours
    img = np.einsum("chw,dc->hwd", np.stack(channels), mix)
    return np.clip(118 + 55 * img, 0, 255).astype(np.uint8)


def make_images(root: Path, counts: dict[str, int], seed: int = 0) -> None:
    """root/<size>/train/<class>/<i>.jpg: random crops of shared textures, two classes."""
    rng = np.random.default_rng(seed)
    base = texture(2560, rng)
    for name, n in counts.items():
        w, h = SIZES[name]
        for i in range(n):
            y, x = rng.integers(0, base.shape[0] - h), rng.integers(0, base.shape[1] - w)
            tile = base[y:y + h, x:x + w] if w <= base.shape[1] else base[:h, :w]
            tile = np.clip(tile.astype(np.int16) + rng.integers(-30, 30, 3), 0, 255).astype(np.uint8)
            folder = root / name / "train" / f"class{i % 2}"
            folder.mkdir(parents=True, exist_ok=True)
            Image.fromarray(tile).save(folder / f"{i}.jpg", quality=90)


# -- the plain Pillow reference ------------------------------------------------------------------------

def reference_train(paths: list[str], rng: random.Random, crop: int = 224, smin: int = 256,
                    smax: int = 512) -> list[torch.Tensor]:
    out = []
    for path in paths:
        img = Image.open(path).convert("RGB")
        s = rng.randint(smin, smax)
        w, h = img.size
        size = (s, round(h * s / w)) if w <= h else (round(w * s / h), s)
        img = img.resize(size, Image.Resampling.BILINEAR)
        x, y = rng.randint(0, size[0] - crop), rng.randint(0, size[1] - crop)
        img = img.crop((x, y, x + crop, y + crop))
        if rng.random() < 0.5:
            img = img.transpose(Image.Transpose.FLIP_LEFT_RIGHT)
        # to tensor and normalise, as torchvision's ToTensor + Normalize (ours also yields normalised floats)
        x = torch.from_numpy(np.array(img)).permute(2, 0, 1).float().div(255)
        out.append((x - MEAN) / STD)
    return out


def reference_eval(paths: list[str], q: int = 384) -> list[torch.Tensor]:
    out = []
    for path in paths:
        img = Image.open(path).convert("RGB")
        w, h = img.size
        size = (q, round(h * q / w)) if w <= h else (round(w * q / h), q)
        img = img.resize(size, Image.Resampling.BILINEAR)
        out.append(torch.from_numpy(np.array(img)).permute(2, 0, 1))  # uint8, as ours
    return out


def run(small: int = 200, large: int = 40, rounds: int = 5) -> tuple[list[list], dict]:
    """Time both pipelines on ``small`` 500x375 and ``large`` 2048x1536 JPEGs; returns the table rows
    and the JSON-able results. Runs on one thread (the caller's thread count is restored)."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # per core: one process, one thread, no DataLoader workers
    try:
        return _run(small, large, rounds)
    finally:
        torch.set_num_threads(threads)


def _run(small: int, large: int, rounds: int) -> tuple[list[list], dict]:
    augment = Augment(224, (256, 512))
    rows, results = [], {}
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        make_images(root, {"500x375": small, "2048x1536": large})
        for name in SIZES:
            ds = open_dataset(str(root / name), "train")
            n = len(ds)
            state = {"epoch": 0}
            rng = random.Random(0)

            def ours_train(ds=ds, state=state):
                state["epoch"] += 1
                for _ in train_batches(ds, augment=augment, normalization=TORCHVISION_NORMALIZATION,
                                       batch_size=32, seed=0, epoch=state["epoch"], drop_last=False):
                    pass

            def ref_train(ds=ds, rng=rng):
                paths = list(ds.paths)
                rng.shuffle(paths)
                for k in range(0, len(paths), 32):
                    torch.stack(reference_train(paths[k:k + 32], rng))

            def ours_eval(ds=ds):
                for _ in eval_batches(ds, scale=384, batch_size=32):
                    pass

            def ref_eval(ds=ds):
                for k in range(0, len(ds), 32):
                    torch.stack(reference_eval(ds.paths[k:k + 32]))

            times = interleaved({"ours train": ours_train, "ref train": ref_train,
                                 "ours eval": ours_eval, "ref eval": ref_eval}, rounds=rounds)
            for kind in ("train", "eval"):
                ours, ref = median(times[f"ours {kind}"]), median(times[f"ref {kind}"])
                mid, lo, hi = ratio(times, f"ours {kind}", f"ref {kind}")
                rows.append([name, kind, n, f"{n / ours:.0f}", f"{n / ref:.0f}", f"{mid:.2f}x",
                             f"{lo:.2f}-{hi:.2f}"])
                results[f"{name} {kind}"] = {"images": n, "ours_images_per_s": n / ours,
                                             "reference_images_per_s": n / ref, "speedup_median": mid,
                                             "speedup_min": lo, "speedup_max": hi,
                                             "rounds_s": {"ours": times[f"ours {kind}"],
                                                          "reference": times[f"ref {kind}"]}}
    return rows, results


TITLE = "images/s per core (train: S~U[256,512] + 224 crop + flip; eval: Q=384, uncropped)"
HEADER = ["images", "pipeline", "n", "ours img/s", "Pillow ref img/s", "speed-up", "min-max"]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--small", type=int, default=200, help="500x375 images (default 200)")
    parser.add_argument("--large", type=int, default=40, help="2048x1536 images (default 40)")
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--json", default=None, help="also write the results as JSON here")
    args = parser.parse_args()
    rows, results = run(args.small, args.large, args.rounds)
    print(f"machine: {machine()}; Pillow {Image.__version__}, "
          f"libjpeg-turbo {features.check_feature('libjpeg_turbo')}")
    print_table(TITLE, HEADER, rows)
    if args.json:
        write_json(args.json, {"benchmark": "data", "results": results})


if __name__ == "__main__":
    main()
