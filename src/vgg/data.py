"""Data: datasets (Fashion-MNIST, image folders), the paper's transforms, and batch loaders.

Training (Sec. 3.1): each image is isotropically rescaled so that its shorter side is S (fixed, or
drawn per image from [Smin, Smax]: scale jittering), one random crop_size crop is taken, randomly
flipped, and shifted in colour by AlexNet's PCA lighting noise. Testing (Sec. 3.2): the image is
rescaled to shorter side Q and used whole (dense), or cropped (centre, 5x5 grid + flips).

Two kinds of dataset share one interface (:class:`ImageDataset`):

- Fashion-MNIST lives in memory as uint8 and is augmented on tensors, a whole batch at once: the
  rescale-then-crop of each sample is one affine resampling of the source image (``grid_sample``),
  so no Python runs per image.
- Image folders are decoded by Pillow in DataLoader workers, straight to the uint8 crop: the crop's
  window is mapped back to the source image and only that window is resampled (``Image.resize`` with
  ``box``), after a DCT-domain JPEG down-scale (draft mode) when the image is at least 2x too large.

Every random choice of a training sample (its order in the epoch, S, the crop's position, the flip,
the colour shift) is a pure function of (seed, epoch, position in the epoch): one process or many,
workers or none, an uninterrupted epoch or one resumed at batch k, all see the same data.
Float conversion, flip, lighting and normalisation run on the device, batched.
"""

from __future__ import annotations

import functools
import gzip
import hashlib
import http.client
import math
import os
import random
import urllib.request
import warnings
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image, UnidentifiedImageError
from torch import Tensor

from .models import Normalization

# -- Fashion-MNIST -----------------------------------------------------------------------------------

FASHION_MNIST_CLASSES = ["T-shirt/top", "Trouser", "Pullover", "Dress", "Coat", "Sandal", "Shirt",
                         "Sneaker", "Bag", "Ankle boot"]

# SHA-256 of the canonical gzip files. Debian's package recompresses them (same IDX content, other gzip
# header), so these were computed by rebuilding the canonical header over Debian's deflate streams
# and checking the result against the MD5s the dataset's README publishes.
FASHION_MNIST_FILES = {
    "train-images": ("train-images-idx3-ubyte.gz", 26421880,
                     "3aede38d61863908ad78613f6a32ed271626dd12800ba2636569512369268a84"),
    "train-labels": ("train-labels-idx1-ubyte.gz", 29515,
                     "a04f17134ac03560a47e3764e11b92fc97de4d1bfaf8ba1a3aa29af54cc90845"),
    "test-images": ("t10k-images-idx3-ubyte.gz", 4422102,
                    "346e55b948d973a97e58d2351dde16a484bd415d4595297633bb08f03db6a073"),
    "test-labels": ("t10k-labels-idx1-ubyte.gz", 5148,
                    "67da17c76eaffca5446c3361aaab5c3cd6d1c2608764d35dfb1850b086bf8dd5"),
}
FASHION_MNIST_MIRRORS = (
    "http://fashion-mnist.s3-website.eu-central-1.amazonaws.com/",
    "https://github.com/zalandoresearch/fashion-mnist/raw/master/data/fashion/",
)
FASHION_MNIST_SYSTEM_DIR = Path("/usr/share/datasets/fashion-mnist")


def cache_dir() -> Path:
    """Where downloads go: ``$VGG_HOME`` or ``~/.cache/vgg``."""
    return Path(os.environ.get("VGG_HOME") or Path.home() / ".cache" / "vgg")


def _has_fashion_mnist(folder: Path) -> bool:
    return all((folder / name).is_file() for name, _, _ in FASHION_MNIST_FILES.values())


def find_fashion_mnist() -> Path | None:
    """The first folder holding the four gzipped IDX files: ``$VGG_DATA`` (or its ``fashion-mnist``
    subfolder), Debian's ``/usr/share/datasets/fashion-mnist``, then the download cache."""
    candidates = []
    if os.environ.get("VGG_DATA"):
        root = Path(os.environ["VGG_DATA"]).expanduser()
        candidates += [root, root / "fashion-mnist"]
    candidates += [FASHION_MNIST_SYSTEM_DIR, cache_dir() / "fashion-mnist"]
    return next((c for c in candidates if _has_fashion_mnist(c)), None)


def download(url: str, dest: Path, sha256: str, size: int | None = None, timeout: float = 60) -> Path:
    """Download ``url`` to ``dest`` atomically, checking its length and SHA-256.

    The bytes go to a temporary file beside ``dest`` that replaces it only once verified, so an
    interrupted or corrupted transfer never leaves a file that looks complete.
    """
    dest.parent.mkdir(parents=True, exist_ok=True)
    tmp = dest.with_name(f".{dest.name}.{os.getpid()}.part")
    digest, got = hashlib.sha256(), 0
    try:
        with urllib.request.urlopen(url, timeout=timeout) as response, open(tmp, "wb") as f:
            try:
                while chunk := response.read(1 << 20):
                    digest.update(chunk)
                    f.write(chunk)
                    got += len(chunk)
            except http.client.HTTPException as e:  # IncompleteRead: the server closed early
                raise ValueError(f"{url}: transfer cut short after {got} bytes ({e!r})") from e
            announced = response.headers.get("Content-Length")
            if announced is not None and announced.isdigit() and int(announced) != got:
                raise ValueError(f"{url}: transfer cut short: {got} of {announced} bytes")
        if size is not None and got != size:
            raise ValueError(f"{url}: got {got} bytes, expected {size} (truncated or wrong file)")
        if digest.hexdigest() != sha256:
            raise ValueError(f"{url}: SHA-256 {digest.hexdigest()} does not match the expected {sha256}")
        os.replace(tmp, dest)
    finally:
        tmp.unlink(missing_ok=True)
    return dest


def download_fashion_mnist(dest: str | Path | None = None, mirrors: Sequence[str] | None = None,
                           timeout: float = 60) -> Path:
    """Fetch the four Fashion-MNIST files into ``dest`` (default: the cache), trying each mirror in
    turn (default: FASHION_MNIST_MIRRORS); every file is SHA-256 checked. Raises ValueError listing
    every failure."""
    folder = Path(dest) if dest is not None else cache_dir() / "fashion-mnist"
    mirrors = FASHION_MNIST_MIRRORS if mirrors is None else mirrors
    for name, size, sha in FASHION_MNIST_FILES.values():
        if (folder / name).is_file() and _sha256(folder / name) == sha:
            continue
        errors = []
        for mirror in mirrors:
            try:
                download(mirror.rstrip("/") + "/" + name, folder / name, sha, size, timeout)
                break
            except (OSError, ValueError) as e:  # URLError, HTTPError, IncompleteRead are OSErrors
                errors.append(f"{mirror}: {e}")
        else:
            raise ValueError(f"could not download Fashion-MNIST file {name}:\n  " + "\n  ".join(errors))
    return folder


def _sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while chunk := f.read(1 << 20):
            h.update(chunk)
    return h.hexdigest()


def read_idx(path: str | Path) -> np.ndarray:
    """Read a (gzipped) IDX file (the MNIST format): big-endian magic, dims, then unsigned bytes."""
    path = Path(path)
    opener = gzip.open if path.suffix == ".gz" else open
    try:
        with opener(path, "rb") as f:
            raw = f.read()
    except (OSError, EOFError) as e:
        raise ValueError(f"{path}: cannot read IDX file ({e})") from e
    if len(raw) < 4 or raw[0] != 0 or raw[1] != 0 or raw[2] != 0x08:
        raise ValueError(f"{path}: not an unsigned-byte IDX file (magic {raw[:4].hex()})")
    ndim = raw[3]
    dims = [int.from_bytes(raw[4 + 4 * i: 8 + 4 * i], "big") for i in range(ndim)]
    offset = 4 + 4 * ndim
    if len(raw) - offset != math.prod(dims):
        raise ValueError(f"{path}: IDX header says {dims} ({math.prod(dims)} bytes), "
                         f"file holds {len(raw) - offset}")
    return np.frombuffer(raw, dtype=np.uint8, offset=offset).reshape(dims)


_FASHION_CACHE: dict[str, tuple[np.ndarray, ...]] = {}


def load_fashion_mnist() -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """(train images, train labels, test images, test labels) as uint8 arrays, found or downloaded.
    Read once per process."""
    folder = find_fashion_mnist()
    if folder is None:
        try:
            folder = download_fashion_mnist()
        except ValueError as e:
            raise ValueError(f"Fashion-MNIST's four .gz files are not in $VGG_DATA, "
                             f"{FASHION_MNIST_SYSTEM_DIR} or {cache_dir() / 'fashion-mnist'}, and "
                             f"downloading them failed: {e}") from e
    key = str(folder)
    if key not in _FASHION_CACHE:
        arrays = tuple(read_idx(folder / FASHION_MNIST_FILES[k][0]) for k in
                       ("train-images", "train-labels", "test-images", "test-labels"))
        for images, labels, n in ((arrays[0], arrays[1], 60000), (arrays[2], arrays[3], 10000)):
            if images.shape != (n, 28, 28) or labels.shape != (n,) or labels.max() >= 10:
                raise ValueError(f"{folder}: unexpected Fashion-MNIST shapes {images.shape}, {labels.shape}")
        _FASHION_CACHE[key] = arrays
    return _FASHION_CACHE[key]  # type: ignore[return-value]


# -- datasets ----------------------------------------------------------------------------------------

class ImageDataset:
    """A labelled set of images: ``classes``, ``labels`` (int64, N), ``channels``, ``name``, ``split``.

    Subclasses hold the images in memory (:class:`TensorDataset`) or as files (:class:`FolderDataset`).
    """

    name: str
    split: str
    classes: list[str]
    labels: Tensor
    channels: int

    def __len__(self) -> int:
        return len(self.labels)

    def __repr__(self) -> str:
        return (f"{type(self).__name__}({self.name!r}, split={self.split!r}, images={len(self)}, "
                f"classes={len(self.classes)}, channels={self.channels})")


class TensorDataset(ImageDataset):
    """Images held in memory as one uint8 (N, C, H, W) tensor."""

    def __init__(self, images: Tensor, labels: Tensor, classes: list[str], name: str, split: str):
        if images.dtype != torch.uint8 or images.dim() != 4:
            raise ValueError(f"expected uint8 (N, C, H, W) images, got {images.dtype} {tuple(images.shape)}")
        if len(images) != len(labels):
            raise ValueError(f"{len(images)} images but {len(labels)} labels")
        self.images, self.labels = images, labels.long()
        self.classes, self.name, self.split = list(classes), name, split
        self.channels = images.shape[1]


def _split_fashion_mnist(val_size: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    if not 0 <= val_size < 60000:
        raise ValueError(f"val_size must be in [0, 60000), got {val_size}")
    perm = np.random.default_rng(seed).permutation(60000)
    # Sorted, so that "the first N" (limit) is the same whichever seed drew the split.
    return np.sort(perm[val_size:]), np.sort(perm[:val_size])


def open_dataset(data: str, split: str, *, limit: int | None = None, val_size: int = 5000, seed: int = 0,
                 strict: bool = False) -> ImageDataset:
    """Open a split ("train", "val" or "test") of ``data``: "fashion-mnist" or a folder root holding
    ``train/``, ``val/`` and optionally ``test/``, each with one subfolder of images per class.

    Fashion-MNIST's train split is the official 60,000 less a held-out val of ``val_size`` images
    drawn with ``seed``; test is the official 10,000. ``limit`` keeps the first N images of the split.
    Folder problems (missing folder, empty class, class lists differing between splits) raise before
    anything runs; ``strict=True`` also decodes every image now and raises on the first bad one.
    """
    if split not in ("train", "val", "test"):
        raise ValueError(f"split must be train, val or test, got {split!r}")
    if limit is not None and limit < 1:
        raise ValueError(f"limit must be >= 1, got {limit}")
    if data.lower().replace("_", "-") in ("fashion-mnist", "fashionmnist"):
        train_x, train_y, test_x, test_y = load_fashion_mnist()
        if split == "test":
            x, y = test_x, test_y
        else:
            train_idx, val_idx = _split_fashion_mnist(val_size, seed)
            idx = train_idx if split == "train" else val_idx
            if len(idx) == 0:
                raise ValueError("fashion-mnist val split is empty (val_size=0)")
            x, y = train_x[idx], train_y[idx]
        if limit is not None:
            x, y = x[:limit], y[:limit]
        images = torch.from_numpy(np.array(x)).unsqueeze(1)  # a writable copy
        return TensorDataset(images, torch.from_numpy(y.astype(np.int64)), FASHION_MNIST_CLASSES,
                             "fashion-mnist", split)
    return open_folder(data, split, limit=limit, strict=strict)


# -- per-sample randomness ---------------------------------------------------------------------------

_MASK64 = (1 << 64) - 1


def _mix64(x):
    """SplitMix64's finaliser: a bijective avalanche on 64-bit integers (numpy uint64 or Python int)."""
    if isinstance(x, int):
        x &= _MASK64
        x = ((x ^ (x >> 30)) * 0xBF58476D1CE4E5B9) & _MASK64
        x = ((x ^ (x >> 27)) * 0x94D049BB133111EB) & _MASK64
        return x ^ (x >> 31)
    with np.errstate(over="ignore"):
        x = (x ^ (x >> np.uint64(30))) * np.uint64(0xBF58476D1CE4E5B9)
        x = (x ^ (x >> np.uint64(27))) * np.uint64(0x94D049BB133111EB)
        return x ^ (x >> np.uint64(31))


def sample_uniform(seed: int, epoch: int, positions, stream: int) -> np.ndarray:
    """Uniform [0, 1) numbers, one per position, a pure function of (seed, epoch, position, stream).

    This counter-based generator is what makes the data independent of how the epoch is split across
    processes, workers or resumed runs: no generator state is carried from one sample to the next.
    """
    key = _mix64(_mix64(_mix64(seed + 0x9E3779B97F4A7C15) ^ (epoch & _MASK64)) ^ stream)
    pos = np.asarray(positions, dtype=np.int64).astype(np.uint64)
    with np.errstate(over="ignore"):
        h = _mix64(_mix64(pos * np.uint64(0x9E3779B97F4A7C15) ^ np.uint64(key)))
    return (h >> np.uint64(11)).astype(np.float64) * (1.0 / (1 << 53))


def sample_normal(seed: int, epoch: int, positions, stream: int) -> np.ndarray:
    """Standard normal numbers per position (Box-Muller over two uniform streams)."""
    u1 = sample_uniform(seed, epoch, positions, 2 * stream + 1000)
    u2 = sample_uniform(seed, epoch, positions, 2 * stream + 1001)
    return np.sqrt(-2.0 * np.log1p(-u1)) * np.cos(2 * np.pi * u2)


def epoch_order(n: int, seed: int, epoch: int) -> Tensor:
    """The epoch's sample order: a permutation of range(n) seeded by (seed, epoch) only."""
    g = torch.Generator().manual_seed(_mix64(_mix64(seed + 1) ^ (epoch + 0x51ED)) & ((1 << 63) - 1))
    return torch.randperm(n, generator=g)


# -- transforms (Sec. 3.1, 3.2) ----------------------------------------------------------------------

@dataclass(frozen=True)
class Augment:
    """The paper's training augmentation (Sec. 3.1).

    crop_size: side of the square crop (224 in the paper, 32 for Fashion-MNIST).
    scale: (S, S) for single-scale training or (Smin, Smax) for scale jittering (S drawn per image,
        uniformly over the integers of [Smin, Smax]). S >= crop_size.
    flip: random horizontal flip. pca: {"eigval": [..], "eigvec": [[..]]} (see
        :func:`channel_statistics`) for AlexNet's colour shift with alphas ~ N(0, lighting_std).
    """

    crop_size: int
    scale: tuple[int, int]
    flip: bool = True
    pca: dict | None = None
    lighting_std: float = 0.1

    def __post_init__(self):
        smin, smax = self.scale
        problems = []
        if self.crop_size < 1:
            problems.append(f"crop_size must be >= 1, got {self.crop_size}")
        if smin > smax:
            problems.append(f"scale must be (Smin, Smax) with Smin <= Smax, got {self.scale}")
        if smin < self.crop_size:
            problems.append(f"scale {self.scale}: S must be >= crop_size {self.crop_size}")
        if self.pca is not None:
            eigval, eigvec = self.pca.get("eigval"), self.pca.get("eigvec")
            if eigval is None or eigvec is None or np.shape(eigvec) != (len(eigval), len(eigval)):
                problems.append(f"pca must be {{'eigval': [C], 'eigvec': [[C x C]]}}, got {self.pca}")
        if self.lighting_std < 0:
            problems.append(f"lighting_std must be >= 0, got {self.lighting_std}")
        if problems:
            raise ValueError("; ".join(problems))


def rescaled_size(height, width, scale):
    """(height, width) after an isotropic rescale that makes the shorter side ``scale`` (Sec. 3.1).
    Works elementwise on numpy arrays."""
    if all(isinstance(v, int | np.integer) for v in (height, width, scale)):  # one image: plain Python
        h, w, s = int(height), int(width), int(scale)
        if h <= w:
            return s, max(s, math.floor(w * s / h + 0.5))
        return max(s, math.floor(h * s / w + 0.5)), s
    h, w, s = np.asarray(height), np.asarray(width), np.asarray(scale)
    short = np.minimum(h, w)
    nh = np.where(h <= w, s, np.maximum(s, np.floor(h * s / short + 0.5)))
    nw = np.where(h <= w, np.maximum(s, np.floor(w * s / short + 0.5)), s)
    if nh.ndim == 0:
        return int(nh), int(nw)
    return nh.astype(np.int64), nw.astype(np.int64)


def rescale_shorter(images: Tensor, scale: int) -> Tensor:
    """Rescale (N, C, H, W) or (C, H, W) images so the shorter side is ``scale`` (bilinear, antialiased
    when shrinking, as Pillow's BILINEAR). uint8 in, uint8 out (rounded); float in, float out."""
    single = images.dim() == 3
    x = images[None] if single else images
    h, w = rescaled_size(x.shape[-2], x.shape[-1], scale)
    if (h, w) != tuple(x.shape[-2:]):
        y = F.interpolate(x.float(), size=(h, w), mode="bilinear", align_corners=False,
                          antialias=h < x.shape[-2] or w < x.shape[-1])
        x = y.round().clamp(0, 255).to(torch.uint8) if x.dtype == torch.uint8 else y.to(x.dtype)
    return x[0] if single else x


def crop_boxes(heights, widths, scales, crop_size: int, u_y, u_x) -> np.ndarray:
    """Random crops of the rescaled images, as boxes (x0, y0, x1, y1) in source pixel coordinates.

    The crop's top-left corner in the image rescaled to shorter side S is an integer drawn uniformly
    from every position that fits (u_y, u_x in [0, 1)); the box is that crop mapped back onto the
    source, so resampling the box to crop_size x crop_size equals rescale-to-S-then-crop.
    """
    h, w = np.asarray(heights, np.float64), np.asarray(widths, np.float64)
    sh, sw = rescaled_size(h, w, scales)
    y0 = np.floor(np.asarray(u_y) * (sh - crop_size + 1))
    x0 = np.floor(np.asarray(u_x) * (sw - crop_size + 1))
    fy, fx = h / sh, w / sw
    return np.stack([x0 * fx, y0 * fy, (x0 + crop_size) * fx, (y0 + crop_size) * fy], axis=-1)


def resized_crops(images: Tensor, boxes: Tensor, size: int) -> Tensor:
    """Resample each image's box (x0, y0, x1, y1 in source pixels) to size x size, all at once.

    One affine grid per sample and one ``grid_sample`` call for the batch (bilinear, pixel centres as
    ``F.interpolate(align_corners=False)``, edges clamped): the batched equivalent of rescaling every
    image to its own S and cropping. It interpolates without antialiasing, which is exact for the
    enlargements it is used for (Fashion-MNIST's 28 px to S >= 32).
    """
    n, c, h, w = images.shape
    x = images if images.is_floating_point() else images.float()
    b = boxes.to(device=x.device, dtype=torch.float64)
    # The affine map from output to input is axis-aligned, so the grid is an outer sum per axis (what
    # F.affine_grid computes, built directly: affine_grid's batched matmul is 5x slower on CPU).
    # Normalised output pixel centres (align_corners=False): (2j + 1) / size - 1.
    t = (torch.arange(size, dtype=torch.float64, device=x.device) * 2 + 1) / size - 1
    gx = ((b[:, 2] - b[:, 0]) / w)[:, None] * t + ((b[:, 0] + b[:, 2]) / w - 1)[:, None]
    gy = ((b[:, 3] - b[:, 1]) / h)[:, None] * t + ((b[:, 1] + b[:, 3]) / h - 1)[:, None]
    grid = torch.stack([gx[:, None, :].expand(n, size, size), gy[:, :, None].expand(n, size, size)], -1)
    return F.grid_sample(x, grid.to(x.dtype), mode="bilinear", padding_mode="border", align_corners=False)


def crops_by_scale(images: Tensor, scales, u_crop, crop_size: int) -> Tensor:
    """Rescale-to-S-then-crop for a batch of equal-size images that may shrink: each distinct S is one
    antialiased ``F.interpolate`` of its samples, and all crops are cut with one gather. The crops are
    those of :func:`crop_boxes` (same offsets), for in-memory data larger than the crop's S."""
    n, c, h, w = images.shape
    scales = np.asarray(scales)
    sh, sw = rescaled_size(np.full(n, h), np.full(n, w), scales)
    y0 = torch.from_numpy(np.floor(u_crop[:, 0] * (sh - crop_size + 1)).astype(np.int64))
    x0 = torch.from_numpy(np.floor(u_crop[:, 1] * (sw - crop_size + 1)).astype(np.int64))
    x = images if images.is_floating_point() else images.float()
    out = x.new_empty(n, c, crop_size, crop_size)
    ar = torch.arange(crop_size)
    for s in np.unique(scales):
        sel = np.flatnonzero(scales == s)
        size = rescaled_size(h, w, int(s))
        resized = F.interpolate(x[torch.from_numpy(sel).to(x.device)], size=size, mode="bilinear",
                                align_corners=False, antialias=size[0] < h or size[1] < w)
        rows = (y0[sel][:, None] + ar).to(x.device)  # (k, crop)
        cols = (x0[sel][:, None] + ar).to(x.device)
        k = torch.arange(len(sel), device=x.device)
        out[torch.from_numpy(sel).to(x.device)] = \
            resized[k[:, None, None, None], torch.arange(c, device=x.device)[None, :, None, None],
                    rows[:, None, :, None], cols[:, None, None, :]]
    return out


def center_crop(images: Tensor, size: int) -> Tensor:
    """The central size x size crop of (..., H, W) images (offsets rounded down)."""
    h, w = images.shape[-2:]
    if h < size or w < size:
        raise ValueError(f"cannot crop {size}x{size} from a {h}x{w} image")
    top, left = (h - size) // 2, (w - size) // 2
    return images[..., top:top + size, left:left + size]


def grid_crops(images: Tensor, size: int, grid: int = 5) -> Tensor:
    """The grid x grid regular grid of size x size crops (Sec. 3.2 multi-crop: 5x5), corners included.
    (N, C, H, W) -> (N, grid*grid, C, size, size), crops in row-major order."""
    h, w = images.shape[-2:]
    if h < size or w < size:
        raise ValueError(f"cannot crop {size}x{size} from a {h}x{w} image")
    tops = np.linspace(0, h - size, grid).round().astype(int) if grid > 1 else [(h - size) // 2]
    lefts = np.linspace(0, w - size, grid).round().astype(int) if grid > 1 else [(w - size) // 2]
    crops = [images[..., t:t + size, s:s + size] for t in tops for s in lefts]
    return torch.stack(crops, dim=-4)


def hflip(images: Tensor, mask: Tensor | None = None) -> Tensor:
    """Mirror (..., H, W) images left-right; with a boolean (N,) mask, only the masked samples."""
    if mask is None:
        return images.flip(-1)
    return torch.where(mask.view(-1, *([1] * (images.dim() - 1))), images.flip(-1), images)


def pca_lighting(images: Tensor, alphas: Tensor, eigval, eigvec) -> Tensor:
    """AlexNet's colour shift (Krizhevsky et al. 2012, Sec. 4.1; VGG Sec. 3.1): add
    sum_i alpha_i * eigval_i * p_i to every pixel of a sample, p_i the i-th eigenvector (column i of
    ``eigvec``). ``alphas`` (N, C) are the samples' draws from N(0, std). Float (N, C, H, W) in/out."""
    shift = lighting_shift(alphas, eigval, eigvec).to(images.device, images.dtype)
    return images + shift[:, :, None, None]


def lighting_shift(alphas: Tensor, eigval, eigvec) -> Tensor:
    """The (N, C) colour shifts sum_i alpha_i * eigval_i * p_i of :func:`pca_lighting`."""
    val = torch.as_tensor(eigval, dtype=torch.float64)
    vec = torch.as_tensor(eigvec, dtype=torch.float64)
    return (alphas.cpu().double() * val) @ vec.T


def augment_parameters(augment: Augment, seed: int, epoch: int, positions, heights=None, widths=None) -> dict:
    """Every random choice of the samples at these epoch positions: S, the crop box (source pixels;
    only when the images' heights and widths are given; "u_crop" holds the uniform (u_y, u_x) that
    place it), the flip, and the lighting alphas.
    A pure function of (seed, epoch, position) and the image size."""
    positions = np.asarray(positions, dtype=np.int64)
    smin, smax = augment.scale
    u = [sample_uniform(seed, epoch, positions, k) for k in range(4)]
    scales = smin + np.minimum(np.floor(u[0] * (smax - smin + 1)), smax - smin).astype(np.int64)
    boxes = None if heights is None else crop_boxes(heights, widths, scales, augment.crop_size, u[1], u[2])
    flips = (u[3] < 0.5) if augment.flip else np.zeros(len(positions), dtype=bool)
    u_crop = np.stack([u[1], u[2]], axis=-1)
    channels = len(augment.pca["eigval"]) if augment.pca else 0
    alphas = np.stack([sample_normal(seed, epoch, positions, k) for k in range(channels)], axis=-1) \
        if channels else np.zeros((len(positions), 0))
    return {"scale": scales, "box": boxes, "flip": flips, "alpha": alphas * augment.lighting_std,
            "u_crop": u_crop}


# -- image folders -----------------------------------------------------------------------------------

IMAGE_EXTENSIONS = frozenset({".jpg", ".jpeg", ".jpe", ".png", ".webp", ".bmp", ".gif", ".tif", ".tiff",
                              ".ppm", ".pgm", ".pbm", ".pnm"})
# Images above this many pixels are refused as decompression bombs (Pillow's own default limit).
MAX_PIXELS = Image.MAX_IMAGE_PIXELS or 89478485
_ORIENTATION = {2: Image.Transpose.FLIP_LEFT_RIGHT, 3: Image.Transpose.ROTATE_180,
                4: Image.Transpose.FLIP_TOP_BOTTOM, 5: Image.Transpose.TRANSPOSE,
                6: Image.Transpose.ROTATE_270, 7: Image.Transpose.TRANSVERSE, 8: Image.Transpose.ROTATE_90}


class BadImage(Exception):
    """A file that cannot be used as an image; ``str(e)`` is the reason."""


def _bad_reason(path: str, error: BaseException) -> str:
    if isinstance(error, BadImage):
        return str(error)
    try:
        if os.path.getsize(path) == 0:
            return "empty file (0 bytes)"
    except OSError as e:
        return f"cannot read ({e.strerror or e})"
    if isinstance(error, Image.DecompressionBombError | Image.DecompressionBombWarning):
        return f"too large to decode safely ({error})"
    if isinstance(error, UnidentifiedImageError):
        return "not an image (Pillow cannot identify the format)"
    if "truncated" in str(error).lower():
        return f"truncated ({error})"
    return f"corrupt ({type(error).__name__}: {error})"


def open_image(path: str | Path) -> tuple[Image.Image, Image.Transpose | None]:
    """Open an image lazily (header only) and refuse decompression bombs; also return the transpose
    that applies its EXIF orientation (None when upright). Raises BadImage with the reason."""
    path = str(path)
    im = None
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            im = Image.open(path)
        if im.width * im.height > MAX_PIXELS:
            raise BadImage(f"too large to decode safely ({im.width}x{im.height} pixels > {MAX_PIXELS})")
        orientation = im.getexif().get(0x0112, 1) if im.format in ("JPEG", "TIFF", "PNG", "WEBP") else 1
        return im, _ORIENTATION.get(orientation)
    except Exception as e:  # any decoder error (Pillow raises many types) is a reason to skip the file
        if im is not None:
            im.close()
        raise e if isinstance(e, BadImage) else BadImage(_bad_reason(path, e)) from e


def oriented_size(im: Image.Image, transpose) -> tuple[int, int]:
    """(height, width) once EXIF orientation is applied."""
    w, h = im.size
    swaps = transpose in (Image.Transpose.TRANSPOSE, Image.Transpose.TRANSVERSE, Image.Transpose.ROTATE_90,
                          Image.Transpose.ROTATE_270)
    return (w, h) if swaps else (h, w)


def to_rgb(im: Image.Image) -> Image.Image:
    """Any Pillow mode to 8-bit RGB: 16/32-bit greyscale scaled (not clipped) to 0-255, transparency
    composited over white, palette/greyscale/CMYK/YCbCr converted."""
    if im.mode == "RGB":
        return im
    if im.mode.startswith("I") or im.mode == "F":
        a = np.asarray(im, dtype=np.float64)
        if im.mode == "F":
            a = a * 255.0 if a.size and a.max() <= 1.0 else a
        else:  # 16-bit samples (I;16*, or "I" from a 16-bit PNG/TIFF): 65535 -> 255
            a = a / 257.0
        return Image.fromarray(np.clip(a + 0.5, 0, 255).astype(np.uint8), "L").convert("RGB")
    if im.mode in ("RGBA", "LA", "PA", "RGBa", "La") or (im.mode == "P" and "transparency" in im.info):
        rgba = im.convert("RGBA")
        white = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
        return Image.alpha_composite(white, rgba).convert("RGB")
    return im.convert("RGB")


def load_image(path: str | Path, min_size: tuple[int, int] | None = None) -> Image.Image:
    """Decode ``path`` to an upright 8-bit RGB Pillow image.

    With ``min_size`` = (height, width) wanted after orientation, a JPEG at least twice as large is
    decoded at 1/2, 1/4 or 1/8 scale in the DCT domain (Pillow's draft mode), never below min_size.
    Raises BadImage with the reason (corrupt, truncated, empty, not an image, too large).
    """
    im, transpose = open_image(path)
    with im:
        return _decode(im, transpose, str(path), min_size)


def _decode(im: Image.Image, transpose, path: str, min_size: tuple[int, int] | None) -> Image.Image:
    try:
        if min_size is not None and im.format == "JPEG":
            h, w = oriented_size(im, transpose)
            if min(h, w) >= 2 * min(min_size):  # draft mode only pays when it can halve the image
                wanted = min_size if (h, w) != (im.height, im.width) else min_size[::-1]
                im.draft(im.mode, wanted)
        im.load()
        out = im.transpose(transpose) if transpose is not None else im
        out = to_rgb(out)
        return out.copy() if out is im else out  # detached from the file, which the caller closes
    except Exception as e:  # as above
        raise BadImage(_bad_reason(path, e)) from e


def _to_tensor(im: Image.Image) -> Tensor:
    """(3, H, W) uint8 view of a writable copy of an RGB image (channels-last in memory)."""
    return torch.from_numpy(np.array(im, dtype=np.uint8)).permute(2, 0, 1)


def decode_train_crop(path: str, crop_size: int, scale: int, u_y: float, u_x: float) -> Tensor:
    """The uint8 (3, crop, crop) training crop of one file (Sec. 3.1): rescaled to shorter side
    ``scale`` (S), then cropped where (u_y, u_x) in [0, 1) place it (see :func:`crop_boxes`). Only the
    crop's window of the source is resampled (``Image.resize(box=...)``), after draft-mode JPEG
    decoding at the rescaled size when the file is at least twice as large."""
    im, transpose = open_image(path)
    with im:
        h, w = oriented_size(im, transpose)
        rgb = _decode(im, transpose, path, rescaled_size(h, w, scale))
    x0, y0, x1, y1 = crop_boxes(h, w, scale, crop_size, u_y, u_x).tolist()
    fx, fy = rgb.width / w, rgb.height / h  # draft mode shrank the image by these factors
    crop = rgb.resize((crop_size, crop_size), Image.Resampling.BILINEAR,
                      box=(x0 * fx, y0 * fy, x1 * fx, y1 * fy))
    return _to_tensor(crop)


def decode_rescaled(path: str, scale: int, size: tuple[int, int] | None = None) -> Tensor:
    """The uint8 (3, H, W) image rescaled so its shorter side is ``scale`` (Q, Sec. 3.2), uncropped.
    ``size`` = the expected (H, W) after rescaling (from the header), checked."""
    im, transpose = open_image(path)
    with im:
        h, w = oriented_size(im, transpose)
        sh, sw = rescaled_size(h, w, scale)
        if size is not None and (sh, sw) != tuple(size):
            raise BadImage(f"changed on disk since it was listed: now {w}x{h}")
        rgb = _decode(im, transpose, path, (sh, sw))
    image = _to_tensor(rgb)
    if rgb.size != (sw, sh):
        # torch's uint8 channels-last bilinear (antialiased) resize gives Pillow's BILINEAR result,
        # bit for bit here, 3-6x faster (AVX2); the decoded (H, W, 3) array is already channels-last.
        image = F.interpolate(image[None], size=(sh, sw), mode="bilinear", align_corners=False,
                              antialias=True)[0]
    return image


class FolderDataset(ImageDataset):
    """Images stored as files ``<split folder>/<class>/<image>``, decoded on demand."""

    channels = 3

    def __init__(self, paths: list[str], labels: list[int], classes: list[str], name: str, split: str):
        self.paths, self.classes, self.name, self.split = list(paths), list(classes), name, split
        self.labels = torch.tensor(labels, dtype=torch.int64)
        self._sizes: list[tuple[int, int] | str] | None = None
        self._loaders: dict = {}

    def subset(self, indices) -> FolderDataset:
        """A dataset of the given indices (same classes)."""
        return FolderDataset([self.paths[i] for i in indices], [int(self.labels[i]) for i in indices],
                             self.classes, self.name, self.split)

    def sizes(self) -> list[tuple[int, int] | str]:
        """Every image's upright (height, width) read from its header, or the reason it is unreadable."""
        if self._sizes is None:
            sizes: list[tuple[int, int] | str] = []
            for path in self.paths:
                try:
                    im, transpose = open_image(path)
                    sizes.append(oriented_size(im, transpose))
                    im.close()
                except BadImage as e:
                    sizes.append(str(e))
            self._sizes = sizes
        return self._sizes

    def __getstate__(self):  # workers need the paths, not the cached loaders
        return {**self.__dict__, "_loaders": {}}


def _list_classes(split_dir: Path) -> list[str]:
    return sorted(d.name for d in split_dir.iterdir() if d.is_dir() and not d.name.startswith("."))


def _list_images(class_dir: Path) -> list[str]:
    found = []
    for dirpath, dirnames, filenames in os.walk(class_dir, followlinks=True):
        dirnames[:] = sorted(d for d in dirnames if not d.startswith("."))
        found += [os.path.join(dirpath, f) for f in sorted(filenames)
                  if not f.startswith(".") and os.path.splitext(f)[1].lower() in IMAGE_EXTENSIONS]
    return found


def open_folder(root: str | Path, split: str, *, limit: int | None = None,
                strict: bool = False) -> FolderDataset:
    """One split of an image-folder root (``root/<split>/<class>/<image>``; classes sorted by name as
    torchvision's ImageFolder sorts them). See :func:`open_dataset`."""
    root = Path(root).expanduser()
    if not root.is_dir():
        raise FileNotFoundError(f"{root}: no such folder (expected a dataset root with train/ and val/, "
                                f"or 'fashion-mnist')")
    split_dir = root / split
    if not split_dir.is_dir():
        present = [s for s in ("train", "val", "test") if (root / s).is_dir()]
        raise FileNotFoundError(f"{split_dir}: no {split} folder in {root} (found: {present or 'none'})")
    classes = _list_classes(split_dir)
    if not classes:
        raise ValueError(f"{split_dir}: no class folders (expected {split_dir}/<class>/<image>)")
    for other in ("train", "val", "test"):
        other_dir = root / other
        if other != split and other_dir.is_dir():
            other_classes = _list_classes(other_dir)
            if other_classes != classes:
                only_here = sorted(set(classes) - set(other_classes))
                only_there = sorted(set(other_classes) - set(classes))
                raise ValueError(f"class folders differ between {split_dir} and {other_dir}: "
                                 f"only in {split}: {only_here}, only in {other}: {only_there}")
    per_class = []
    for c in classes:
        files = _list_images(split_dir / c)
        if not files:
            raise ValueError(f"{split_dir / c}: class folder with no images "
                             f"(looked for {', '.join(sorted(IMAGE_EXTENSIONS))})")
        per_class.append(files)
    paths, labels = [], []
    if limit is None:
        for label, files in enumerate(per_class):
            paths += files
            labels += [label] * len(files)
    else:
        # The first N images taken round-robin over the classes, so a quick run still sees every class.
        for i in range(max(len(f) for f in per_class)):
            for label, files in enumerate(per_class):
                if i < len(files) and len(paths) < limit:
                    paths.append(files[i])
                    labels.append(label)
    dataset = FolderDataset(paths, labels, classes, str(root), split)
    if strict:
        check_images(dataset)
    return dataset


def bad_images(dataset: FolderDataset, workers: int | None = None) -> Iterator[tuple[str, str]]:
    """Decode every image (in ``workers`` processes, default up to 8); yield (path, reason) of each
    one that cannot be used, in listing order."""
    workers = min(8, os.cpu_count() or 1) if workers is None else workers
    chunk = 16
    plan = [list(range(k, min(k + chunk, len(dataset)))) for k in range(0, len(dataset), chunk)]
    for results in _loader(_CheckReader(dataset.paths), plan, workers if len(dataset) > 64 else 0,
                           pin=False, seed=0):
        for path, reason in results:
            if reason is not None:
                yield path, reason


def check_images(dataset: FolderDataset, workers: int | None = None) -> None:
    """Decode every image now; raise ValueError naming the first bad file and why (``--strict``)."""
    for path, reason in bad_images(dataset, workers):
        raise ValueError(f"{path}: {reason}")


def describe_dataset(data: str, *, check: bool = False, stats: bool = False, val_size: int = 5000,
                     seed: int = 0) -> dict:
    """What ``vgg data`` prints: for each split present, its images per class; with ``check`` every
    unreadable file and why; with ``stats`` the training set's channel statistics (mean, PCA)."""
    splits = {}
    for split in ("train", "val", "test"):
        try:
            ds = open_dataset(data, split, val_size=val_size, seed=seed)
        except FileNotFoundError:
            if split == "train":
                raise
            continue
        info = {"images": len(ds), "per_class": torch.bincount(ds.labels, minlength=len(ds.classes)).tolist()}
        if check and isinstance(ds, FolderDataset):
            info["bad"] = list(bad_images(ds))
        splits[split] = info
        if split == "train":
            classes, channels, name = ds.classes, ds.channels, ds.name
            statistics = channel_statistics(ds, seed=seed) if stats else None
    out = {"name": name, "classes": classes, "channels": channels, "splits": splits}
    if data.lower().replace("_", "-") in ("fashion-mnist", "fashionmnist"):
        out["files"] = str(find_fashion_mnist())
    if stats:
        out["statistics"] = statistics
    return out


class _CheckReader:
    def __init__(self, paths):
        self.paths = paths

    def __getitem__(self, i):
        try:
            load_image(self.paths[i])
            return self.paths[i], None
        except BadImage as e:
            return self.paths[i], str(e)


# -- loaders -----------------------------------------------------------------------------------------

class _Plan:
    """A DataLoader batch sampler whose batches of jobs are set per epoch (so that persistent workers
    serve every epoch): each job carries everything the worker needs, randomness included."""

    def __init__(self, plan):
        self.plan = plan

    def __iter__(self):
        return iter(self.plan)

    def __len__(self):
        return len(self.plan)


def _worker_init(seed: int, worker_id: int) -> None:
    # Workers draw no random numbers of their own (every parameter comes with the job), but anything
    # that does gets a seed derived from the run's, not from the clock.
    torch.set_num_threads(1)
    s = _mix64(_mix64(seed + 0xC0FFEE) ^ worker_id)
    torch.manual_seed(s & ((1 << 63) - 1))
    np.random.seed(s & 0xFFFFFFFF)
    random.seed(s)


def _loader(reader, plan, workers: int, pin: bool, seed: int, collate=list, cache: dict | None = None,
            key=None):
    """Iterate ``collate([reader[job] for job in batch])`` over the plan's batches, in the main process
    (workers=0) or in a DataLoader with ``workers`` persistent, seeded processes (cached in ``cache``)."""
    if workers <= 0:
        return (collate([reader[job] for job in jobs]) for jobs in plan)
    loader = cache.get(key) if cache is not None else None
    if loader is None:
        loader = torch.utils.data.DataLoader(
            reader, batch_sampler=_Plan(plan), num_workers=workers, collate_fn=collate, pin_memory=pin,
            persistent_workers=cache is not None, worker_init_fn=functools.partial(_worker_init, seed),
            prefetch_factor=4)
        if cache is not None:
            cache[key] = loader
    loader.batch_sampler.plan = plan
    return iter(loader)


def _collate(items):
    """(uint8 tensor | None, label, position, path, reason) items -> good samples stacked + the bad."""
    good = [it for it in items if it[0] is not None]
    return {"images": torch.stack([it[0] for it in good]) if good else None,
            "labels": torch.tensor([it[1] for it in good], dtype=torch.int64),
            "positions": torch.tensor([it[2] for it in good], dtype=torch.int64),
            "bad": [(it[3], it[4]) for it in items if it[0] is None]}


class _TrainJobs:
    """An epoch's batches of training jobs (index, position, crop, S, u_y, u_x), each batch's random
    parameters drawn in one vectorised call as the DataLoader asks for it."""

    def __init__(self, plan, order, augment, seed, epoch):
        self.plan, self.order, self.augment, self.seed, self.epoch = plan, order, augment, seed, epoch

    def __len__(self):
        return len(self.plan)

    def __iter__(self):
        for positions in self.plan:
            p = augment_parameters(self.augment, self.seed, self.epoch, positions)
            yield list(zip(self.order[positions].tolist(), positions.tolist(),
                           [self.augment.crop_size] * len(positions), p["scale"].tolist(),
                           p["u_crop"][:, 0].tolist(), p["u_crop"][:, 1].tolist()))


class _TrainReader:
    def __init__(self, paths, labels):
        self.paths, self.labels = paths, labels

    def __getitem__(self, job):
        index, position, crop_size, scale, u_y, u_x = job
        try:
            crop = decode_train_crop(self.paths[index], crop_size, scale, u_y, u_x)
            return crop, self.labels[index], position, self.paths[index], None
        except BadImage as e:
            return None, self.labels[index], position, self.paths[index], str(e)


class _EvalReader:
    def __init__(self, paths, labels):
        self.paths, self.labels = paths, labels

    def __getitem__(self, job):
        index, scale, size = job
        try:
            image = decode_rescaled(self.paths[index], scale, size)
            return image, self.labels[index], index, self.paths[index], None
        except BadImage as e:
            return None, self.labels[index], index, self.paths[index], str(e)


# -- batches -----------------------------------------------------------------------------------------

class Batches:
    """One epoch (or one evaluation pass) of batches: iterable, ``len()`` = number of batches, and
    ``skipped``: the (path, reason) of every undecodable file met so far (each also warned)."""

    def __init__(self, length: int, generate):
        self._length, self._generate = length, generate
        self.skipped: list[tuple[str, str]] = []

    def __len__(self) -> int:
        return self._length

    def __iter__(self) -> Iterator:
        return self._generate(self)

    def _skip(self, path: str, reason: str) -> None:
        if (path, reason) not in self.skipped:
            self.skipped.append((path, reason))
            warnings.warn(f"skipped {path}: {reason}", stacklevel=3)


def _slice(positions: np.ndarray, rank: int, world_size: int) -> np.ndarray:
    """Rank r's contiguous share of a global batch (Sec. 2: each GPU a slice of the batch)."""
    return np.array_split(positions, world_size)[rank]


def _finish(crops: Tensor, flips: np.ndarray, alphas: np.ndarray, augment: Augment,
            normalization: Normalization, channels_last: bool) -> Tensor:
    """Device side of a training batch: flip, then ``normalization(pca_lighting(x))`` as one in-place
    pass over the floats (the colour shift folds into the mean: (x + shift - mean) / std)."""
    if flips.any():
        mask = torch.from_numpy(flips).to(crops.device)
        crops[mask] = crops[mask].flip(-1)  # on the uint8 crops of folders: 4x less memory to move
    if channels_last:
        crops = crops.contiguous(memory_format=torch.channels_last)
    x = crops.float()
    mean = torch.tensor(normalization.mean, dtype=x.dtype, device=x.device)
    std = torch.tensor(normalization.std, dtype=x.dtype, device=x.device)
    offset = mean.expand(x.shape[0], -1)
    if augment.pca is not None and augment.lighting_std > 0:
        shift = lighting_shift(torch.from_numpy(alphas), augment.pca["eigval"], augment.pca["eigvec"])
        shift = shift.to(x.device, x.dtype)
        offset = offset - (shift.flip(1) if normalization.bgr else shift)
    if normalization.bgr:  # Caffe/Keras weights: BGR order (see Normalization)
        x = x.flip(1)
    return x.sub_(offset[:, :, None, None]).div_(std[None, :, None, None])


def train_batches(dataset: ImageDataset, *, augment: Augment, normalization: Normalization, batch_size: int,
                  seed: int, epoch: int, start_batch: int = 0, rank: int = 0, world_size: int = 1,
                  workers: int = 0, device="cpu", channels_last: bool = False,
                  drop_last: bool = True) -> Batches:
    """One training epoch of (images float32 normalised on ``device``, labels int64 on ``device``).

    ``batch_size`` is the global batch; rank r of ``world_size`` gets its contiguous slice of each.
    The order is a permutation seeded by (seed, epoch) and every random parameter of a sample depends
    on (seed, epoch, its position in the epoch) only, so ``start_batch=k`` resumes exactly at batch k
    and any world size sees the same samples. Augmentation follows Sec. 3.1 (see :class:`Augment`).

    ``workers`` DataLoader processes decode image folders (persistent across epochs, pinned memory on
    CUDA); in-memory data is augmented batched on ``device`` and needs none. An undecodable file is
    left out of its batch (warned, listed in ``Batches.skipped``); a batch with no readable file is
    left out of the epoch.
    """
    n = len(dataset)
    if batch_size < 1 or not 0 <= rank < world_size:
        raise ValueError(f"bad batch_size {batch_size} / rank {rank} / world_size {world_size}")
    if len(normalization.mean) != dataset.channels:
        raise ValueError(f"normalization has {len(normalization.mean)} channels, dataset {dataset.name} "
                         f"has {dataset.channels}")
    if augment.pca is not None and len(augment.pca["eigval"]) != dataset.channels:
        raise ValueError(f"pca has {len(augment.pca['eigval'])} channels, dataset has {dataset.channels}")
    length = n // batch_size if drop_last else -(-n // batch_size)
    if length == 0:
        raise ValueError(f"{dataset.name} {dataset.split}: {n} images is less than one batch of {batch_size}")
    if not 0 <= start_batch <= length:
        raise ValueError(f"start_batch {start_batch} outside the epoch's {length} batches")
    order = epoch_order(n, seed, epoch).numpy()
    device = torch.device(device)
    plan = [_slice(np.arange(k * batch_size, min((k + 1) * batch_size, n)), rank, world_size)
            for k in range(start_batch, length)]
    if isinstance(dataset, TensorDataset):
        gen = _tensor_train(dataset, plan, order, augment, normalization, seed, epoch, device, channels_last)
    else:
        gen = _folder_train(dataset, plan, order, augment, normalization, seed, epoch, device,
                            channels_last, workers)
    return Batches(length - start_batch, gen)


def _tensor_train(dataset: TensorDataset, plan, order, augment, normalization, seed, epoch, device,
                  channels_last):
    h, w = dataset.images.shape[-2:]
    pin = device.type == "cuda"

    def generate(batches: Batches):
        for positions in plan:
            idx = torch.from_numpy(order[positions])
            p = augment_parameters(augment, seed, epoch, positions, h, w)
            src = dataset.images[idx]
            labels = dataset.labels[idx]
            if pin:
                src, labels = src.pin_memory(), labels.pin_memory()
            src = src.to(device, non_blocking=True).float()
            if augment.scale[0] >= min(h, w):  # every sample enlarged: one grid_sample, exact
                crops = resized_crops(src, torch.from_numpy(p["box"]), augment.crop_size)
            else:  # some shrink: antialiased rescale per distinct S, then one gather
                crops = crops_by_scale(src, p["scale"], p["u_crop"], augment.crop_size)
            yield (_finish(crops, p["flip"], p["alpha"], augment, normalization, channels_last),
                   labels.to(device, non_blocking=True))

    return generate


def _folder_train(dataset: FolderDataset, plan, order, augment, normalization, seed, epoch, device,
                  channels_last, workers):
    reader = _TrainReader(dataset.paths, dataset.labels.tolist())
    jobs = _TrainJobs(plan, order, augment, seed, epoch)
    pin = device.type == "cuda"

    def generate(batches: Batches):
        loader = _loader(reader, jobs, workers, pin, seed, _collate, dataset._loaders,
                         ("train", workers, pin, seed))
        for batch in loader:
            for path, reason in batch["bad"]:
                batches._skip(path, reason)
            if batch["images"] is None:
                continue
            # Flip and lighting depend on the position only; the worker already drew S and the crop.
            p = augment_parameters(augment, seed, epoch, batch["positions"].numpy())
            crops = batch["images"].to(device, non_blocking=True)
            yield (_finish(crops, p["flip"], p["alpha"], augment, normalization, channels_last),
                   batch["labels"].to(device, non_blocking=True))

    return generate


def eval_batches(dataset: ImageDataset, *, scale: int, batch_size: int, workers: int = 0,
                 device="cpu") -> Batches:
    """Every image once, rescaled so its shorter side is ``scale`` (Q, Sec. 3.2), uncropped, as uint8
    (B, C, H, W) on ``device``, with labels and dataset indices: yields (images, labels, indices).
    Images whose rescaled sizes are equal are batched together."""
    if batch_size < 1 or scale < 1:
        raise ValueError(f"bad batch_size {batch_size} / scale {scale}")
    device = torch.device(device)
    n = len(dataset)
    if isinstance(dataset, TensorDataset):
        length = -(-n // batch_size)

        def generate(batches: Batches):
            for k in range(length):
                idx = torch.arange(k * batch_size, min((k + 1) * batch_size, n))
                src = dataset.images[idx].to(device, non_blocking=True)
                yield rescale_shorter(src, scale), dataset.labels[idx].to(device), idx.to(device)

        return Batches(length, generate)
    return _folder_eval(dataset, scale, batch_size, workers, device)


def _folder_eval(dataset: FolderDataset, scale: int, batch_size: int, workers: int, device) -> Batches:
    groups: dict[tuple[int, int], list[int]] = {}
    unreadable = []
    for i, size in enumerate(dataset.sizes()):
        if isinstance(size, str):
            unreadable.append((dataset.paths[i], size))
        else:
            groups.setdefault(rescaled_size(size[0], size[1], scale), []).append(i)
    # Images of one rescaled size form batches together (dense evaluation needs equal shapes).
    jobs = [[(i, scale, hw) for i in idx[k:k + batch_size]]
            for hw, idx in sorted(groups.items()) for k in range(0, len(idx), batch_size)]
    reader = _EvalReader(dataset.paths, dataset.labels.tolist())
    pin = device.type == "cuda"

    def generate(batches: Batches):
        for path, reason in unreadable:
            batches._skip(path, reason)
        loader = _loader(reader, jobs, workers, pin, 0, _collate, dataset._loaders, ("eval", workers, pin))
        for batch in loader:
            for path, reason in batch["bad"]:
                batches._skip(path, reason)
            if batch["images"] is not None:
                yield (batch["images"].to(device, non_blocking=True), batch["labels"].to(device),
                       batch["positions"].to(device))

    return Batches(len(jobs), generate)


def channel_statistics(dataset: ImageDataset, *, max_images: int = 10000, seed: int = 0) -> dict:
    """Per-channel pixel mean and the eigen-decomposition of the pixel covariance (0-255 scale) over up
    to ``max_images`` images drawn with ``seed``: {"mean": [C], "eigval": [C], "eigvec": [[C x C]]}.

    "mean" is the paper's mean RGB (Sec. 2). eigvec's columns are the principal components, largest
    first; eigval follows the convention of AlexNet's re-implementations (Caffe, fb.resnet.torch):
    the covariance eigenvalues of 0-1 pixels, times 255, so that ``alpha * eigval`` (alpha ~ N(0, 0.1))
    is the colour shift in 0-255 units (ImageNet gives about [55.5, 4.8, 1.1]).
    """
    n = len(dataset)
    take = np.sort(np.random.default_rng(seed).permutation(n)[:max_images]) if n > max_images \
        else np.arange(n)
    c = dataset.channels
    total = np.zeros(c)
    outer = np.zeros((c, c))
    count = 0
    for pixels in _pixels(dataset, take):  # (C, P) float64 chunks
        total += pixels.sum(1)
        outer += pixels @ pixels.T
        count += pixels.shape[1]
    if count == 0:
        raise ValueError(f"{dataset.name} {dataset.split}: no readable images for channel statistics")
    mean = total / count
    cov = outer / count - np.outer(mean, mean)
    val, vec = np.linalg.eigh(cov / 255.0 ** 2)
    order = np.argsort(val)[::-1]
    val, vec = np.clip(val[order], 0, None) * 255.0, vec[:, order]
    vec = vec * np.where(vec.sum(0) < 0, -1.0, 1.0)  # a fixed sign per component
    return {"mean": mean.tolist(), "eigval": val.tolist(), "eigvec": vec.tolist()}


def _pixels(dataset: ImageDataset, take: np.ndarray):
    if isinstance(dataset, TensorDataset):
        for start in range(0, len(take), 1024):
            chunk = dataset.images[torch.from_numpy(take[start:start + 1024])]
            yield chunk.permute(1, 0, 2, 3).reshape(dataset.channels, -1).double().numpy()
        return
    # Folders: colour statistics of the images rescaled to shorter side 256 (the paper's smallest S).
    subset = dataset.subset(take.tolist())
    batches = eval_batches(subset, scale=256, batch_size=1, workers=min(4, os.cpu_count() or 1))
    for images, _, _ in batches:
        yield images.reshape(3, -1).double().numpy()
