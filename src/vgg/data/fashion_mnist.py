"""Fashion-MNIST: its four files (SHA-256 pinned), where they are found or downloaded from, the IDX
reader, and the train/val split of the official 60,000 training images."""

from __future__ import annotations

import gzip
import math
import os
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from .. import files

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


def _has_fashion_mnist(folder: Path) -> bool:
    return all((folder / name).is_file() for name, _, _ in FASHION_MNIST_FILES.values())


def find_fashion_mnist() -> Path | None:
    """The first folder holding the four gzipped IDX files: ``$VGG_DATA`` (or its ``fashion-mnist``
    subfolder), Debian's ``/usr/share/datasets/fashion-mnist``, then the download cache."""
    candidates = []
    if os.environ.get("VGG_DATA"):
        root = Path(os.environ["VGG_DATA"]).expanduser()
        candidates += [root, root / "fashion-mnist"]
    candidates += [FASHION_MNIST_SYSTEM_DIR, files.cache_root() / "fashion-mnist"]
    return next((c for c in candidates if _has_fashion_mnist(c)), None)


def download_fashion_mnist(dest: str | Path | None = None, mirrors: Sequence[str] | None = None,
                           timeout: float = 60) -> Path:
    """Fetch the four Fashion-MNIST files into ``dest`` (default: the cache), trying each mirror in
    turn (default: FASHION_MNIST_MIRRORS); every file is SHA-256 checked. Raises ValueError listing
    every failure."""
    folder = Path(dest) if dest is not None else files.cache_root() / "fashion-mnist"
    mirrors = FASHION_MNIST_MIRRORS if mirrors is None else mirrors
    for name, size, sha in FASHION_MNIST_FILES.values():
        if (folder / name).is_file() and files.sha256_file(folder / name) == sha:
            continue
        errors = []
        for mirror in mirrors:
            try:
                files.download(mirror.rstrip("/") + "/" + name, folder / name, sha256=sha, size=size,
                               progress=False, timeout=timeout)
                break
            except (OSError, ValueError) as e:  # ValueError: the transfer or its check; OSError: the disk
                errors.append(f"{mirror}: {e}")
        else:
            raise ValueError(f"could not download Fashion-MNIST file {name}:\n  " + "\n  ".join(errors))
    return folder


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
                             f"{FASHION_MNIST_SYSTEM_DIR} or {files.cache_root() / 'fashion-mnist'}, and "
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


def split_fashion_mnist(val_size: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """The train/val split of the official 60,000 training images: ``(train indices, val indices)``,
    each sorted, ``val_size`` images held out by a permutation drawn with ``seed``. Every data set
    built on these images (the classification set, cluttered Fashion-MNIST) splits them by this rule,
    so a net fine-tuned from another is validated on images neither saw in training."""
    if not 0 <= val_size < 60000:
        raise ValueError(f"val_size must be in [0, 60000), got {val_size}")
    perm = np.random.default_rng(seed).permutation(60000)
    # Sorted, so that "the first N" (limit) is the same whichever seed drew the split.
    return np.sort(perm[val_size:]), np.sort(perm[:val_size])
