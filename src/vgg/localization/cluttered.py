"""Cluttered, translated Fashion-MNIST: a localisation data set with exact boxes, built on any machine.

ILSVRC's localisation data (App. A) is out of reach of a laptop, so the package also builds the data
set Mnih et al. (2014, "Recurrent Models of Visual Attention", Sec. 4.1) built from MNIST, on
Fashion-MNIST's garments: each garment is placed at a random position on a larger blank canvas, and
a few small patches cut from *other* garments are scattered over the canvas as clutter (theirs:
60x60 canvases with four 8x8 patches). Unlike theirs, each garment is also rescaled to a random size,
so that the box's width and height (A.1's 4-D vector) vary too, not only its centre. The box is the
tight box of the garment's own non-zero pixels after rescaling and placing, so it is exact: clutter
never enters it (clutter can overlap the garment, as in Mnih et al.; the box stays the garment's).

Splits: ``test`` from the official 10,000 test images; ``train`` and ``val`` from the official 60,000
split as the classification data set splits them (``val_size`` images held out, drawn with ``seed``:
the same images, so a localisation net fine-tuned from a classification net (A.1) is validated on
images neither net trained on). Each split has its own random stream, seeded by ``(seed, split)``.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from ..files import atomic_write, cache_root

__all__ = ["CANVAS", "CLUTTER", "PATCH", "SIZES", "cache_path", "load_cluttered", "make_cluttered",
           "tight_boxes"]

CANVAS = 64  # Mnih et al. used 60; 64 is a multiple of 32, the net's stride (Sec. 2.1, five 2x2 pools)
SIZES = (20, 44)  # the garment's side after rescaling, drawn uniformly (28 px originals)
CLUTTER = 4  # patches per canvas, as Mnih et al.'s 60x60 set
PATCH = 8  # clutter patch side, as Mnih et al.
VERSION = 1  # part of the cache file's name: bump it when the construction changes
SPLITS = ("train", "val", "test")


def tight_boxes(masks: np.ndarray) -> np.ndarray:
    """The tight box (x1, y1, x2, y2) in pixel edges of each boolean (N, H, W) mask's True pixels;
    (0, 0, 0, 0) for an empty mask."""
    rows, cols = masks.any(axis=2), masks.any(axis=1)
    h, w = masks.shape[1:]
    y1 = rows.argmax(axis=1)
    y2 = h - rows[:, ::-1].argmax(axis=1)
    x1 = cols.argmax(axis=1)
    x2 = w - cols[:, ::-1].argmax(axis=1)
    boxes = np.stack([x1, y1, x2, y2], axis=1).astype(np.float32)
    boxes[~rows.any(axis=1)] = 0
    return boxes


def _resize(images: np.ndarray, size: int) -> np.ndarray:
    """uint8 (N, h, w) -> uint8 (N, size, size), bilinear, antialiased when shrinking (as Pillow)."""
    x = torch.from_numpy(images).float()[:, None]
    y = F.interpolate(x, size=(size, size), mode="bilinear", align_corners=False,
                      antialias=size < images.shape[-1])
    return y[:, 0].round().clamp(0, 255).to(torch.uint8).numpy()


def make_cluttered(images: np.ndarray, labels: np.ndarray, *, seed: int | Sequence[int],
                   canvas: int = CANVAS, sizes: tuple[int, int] = SIZES, clutter: int = CLUTTER,
                   patch: int = PATCH) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Cluttered, translated versions of uint8 (N, h, w) ``images``: ``(canvases uint8 (N, canvas,
    canvas), boxes float32 (N, 4), labels int64 (N,))``.

    Each image is rescaled to a side drawn uniformly from ``sizes`` (inclusive), placed at a uniformly
    drawn position, and ``clutter`` patches of ``patch`` x ``patch`` pixels, each cut from another
    image of the batch inside that image's tight box (so that a patch is rarely blank), are put at
    uniform positions (pixel-wise maximum, as the garments are light on black). Boxes: the garment's
    tight box on the canvas, pixel edges. The same ``seed`` (a numpy ``Generator`` seed) and inputs
    give the same arrays, bit for bit: every draw is made up front, in a fixed order, for all images.
    """
    images = np.ascontiguousarray(images, dtype=np.uint8)
    n, h, w = images.shape
    lo, hi = sizes
    if not 1 <= lo <= hi <= canvas:
        raise ValueError(f"sizes must satisfy 1 <= min <= max <= canvas ({canvas}), got {sizes}")
    if clutter and (patch > min(h, w) or patch > canvas or n < 2):
        raise ValueError(f"clutter needs at least 2 images and a patch ({patch}) no larger than the "
                         f"images ({h}x{w}) and the canvas ({canvas})")
    rng = np.random.default_rng(seed)
    side = rng.integers(lo, hi + 1, size=n)
    top = rng.integers(0, canvas - side + 1)
    left = rng.integers(0, canvas - side + 1)
    # Clutter: from another image (shift the draw past the image itself), inside its tight box.
    source = rng.integers(0, max(n - 1, 1), size=(n, clutter))
    source += source >= np.arange(n)[:, None]
    u_src = rng.random(size=(n, clutter, 2))
    at = rng.integers(0, canvas - patch + 1, size=(n, clutter, 2))

    out = np.zeros((n, canvas, canvas), dtype=np.uint8)
    boxes = np.zeros((n, 4), dtype=np.float32)
    for s in np.unique(side):
        sel = np.flatnonzero(side == s)
        garments = _resize(images[sel], int(s))
        rows = top[sel, None] + np.arange(s)
        cols = left[sel, None] + np.arange(s)
        out[sel[:, None, None], rows[:, :, None], cols[:, None, :]] = garments
        local = tight_boxes(garments > 0)
        offset = np.stack([left[sel], top[sel], left[sel], top[sel]], axis=1)
        boxes[sel] = np.where(local[:, 2:3] > 0, local + offset, 0)

    if clutter:
        own = tight_boxes(images > 0)  # (x1, y1, x2, y2) of each source image
        ar = np.arange(patch)
        for k in range(clutter):
            src = source[:, k]
            x1, y1, x2, y2 = (own[src, i].astype(np.int64) for i in range(4))
            # The patch's corner within the source's box where it fits, else anywhere in the image.
            fits_x, fits_y = x2 - x1 >= patch, y2 - y1 >= patch
            x_lo, x_n = np.where(fits_x, x1, 0), np.where(fits_x, x2 - x1 - patch + 1, w - patch + 1)
            y_lo, y_n = np.where(fits_y, y1, 0), np.where(fits_y, y2 - y1 - patch + 1, h - patch + 1)
            px = x_lo + np.floor(u_src[:, k, 0] * x_n).astype(np.int64)
            py = y_lo + np.floor(u_src[:, k, 1] * y_n).astype(np.int64)
            patches = images[src[:, None, None], (py[:, None] + ar)[:, :, None],
                             (px[:, None] + ar)[:, None, :]]
            rows = (at[:, k, 0, None] + ar)[:, :, None]
            cols = (at[:, k, 1, None] + ar)[:, None, :]
            idx = np.arange(n)[:, None, None]
            out[idx, rows, cols] = np.maximum(out[idx, rows, cols], patches)
    return out, boxes, np.asarray(labels, dtype=np.int64).copy()


def cache_path(split: str, *, canvas: int = CANVAS, sizes: tuple[int, int] = SIZES, clutter: int = CLUTTER,
               patch: int = PATCH, seed: int = 0, val_size: int = 5000) -> Path:
    """Where :func:`load_cluttered` keeps a split: ``cache_root()/fashion-mnist-loc/<name>.npz``, the
    name made of every parameter that changes the arrays."""
    held = f"-val{val_size}" if split != "test" else ""
    name = (f"{split}-{canvas}px-size{sizes[0]}-{sizes[1]}-clutter{clutter}x{patch}-seed{seed}{held}"
            f"-v{VERSION}.npz")
    return cache_root() / "fashion-mnist-loc" / name


def load_cluttered(split: str, *, canvas: int = CANVAS, sizes: tuple[int, int] = SIZES,
                   clutter: int = CLUTTER, patch: int = PATCH, seed: int = 0, val_size: int = 5000,
                   limit: int | None = None, cache: bool = True,
                   verbose: bool = False) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """One split ("train", "val", "test") of cluttered Fashion-MNIST: ``(canvases uint8 (N, H, W),
    boxes float32 (N, 4), labels int64 (N,))``; class names are ``vgg.data.FASHION_MNIST_CLASSES``.

    Generated once, then read from :func:`cache_path` (a compressed ``.npz`` written atomically: 50 MB
    for train at the defaults, 9 MB for test): generating a split takes seconds, reading the file back
    a fraction of that (BENCHMARKS.md, "Figures that left the code comments").
    ``limit`` keeps the first N images (the whole split is still generated and cached, so the first N
    never depend on N).
    """
    if split not in SPLITS:
        raise ValueError(f"split must be one of {', '.join(SPLITS)}, got {split!r}")
    if limit is not None and limit < 1:
        raise ValueError(f"limit must be >= 1, got {limit}")
    path = cache_path(split, canvas=canvas, sizes=sizes, clutter=clutter, patch=patch, seed=seed,
                      val_size=val_size)
    arrays = _read_cache(path) if cache else None
    if arrays is None:
        # Imported here, from the module (not the package): vgg.data's box data sets import this one.
        from ..data import fashion_mnist

        start = time.perf_counter()
        train_x, train_y, test_x, test_y = fashion_mnist.load_fashion_mnist()
        if split == "test":
            x, y = test_x, test_y
        else:
            # The classification data set's split (the same held-out images, see the module).
            train_idx, val_idx = fashion_mnist.split_fashion_mnist(val_size, seed)
            idx = train_idx if split == "train" else val_idx
            x, y = train_x[idx], train_y[idx]
        arrays = make_cluttered(x, y, seed=(seed, SPLITS.index(split)), canvas=canvas, sizes=sizes,
                                clutter=clutter, patch=patch)
        if verbose:
            print(f"cluttered Fashion-MNIST {split}: {len(y)} images in "
                  f"{time.perf_counter() - start:.1f} s")
        if cache:
            canvases, boxes, labels = arrays

            def write(tmp: Path) -> None:
                with open(tmp, "wb") as f:  # a file object: np.savez would add ".npz" to a name
                    # Compressed: mostly black canvases shrink 4.5x (train: 227 -> 50 MB), and reading
                    # them back still beats generating them again (BENCHMARKS.md).
                    np.savez_compressed(f, canvases=canvases, boxes=boxes, labels=labels)

            atomic_write(path, write)
    if limit is not None:
        arrays = tuple(a[:limit] for a in arrays)  # type: ignore[assignment]
    return arrays  # type: ignore[return-value]


def _read_cache(path: Path) -> tuple[np.ndarray, np.ndarray, np.ndarray] | None:
    """The cached arrays, or None when the file is missing or unreadable (then it is regenerated)."""
    if not path.is_file():
        return None
    try:
        with np.load(path) as f:
            arrays = f["canvases"], f["boxes"], f["labels"]
    except (OSError, ValueError, KeyError, EOFError):
        return None
    n = len(arrays[2])
    if arrays[0].dtype != np.uint8 or arrays[0].shape[0] != n or arrays[1].shape != (n, 4):
        return None
    return arrays
