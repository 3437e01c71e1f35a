"""Small data for the data tests: an in-memory set, image folders, and broken files."""

from __future__ import annotations

import io
import struct
import zlib

import numpy as np
import torch
from PIL import Image

from vgg import data as D


def tensor_dataset(n=40, h=28, w=28, channels=1, seed=0, classes=4):
    g = torch.Generator().manual_seed(seed)
    images = torch.randint(0, 256, (n, channels, h, w), generator=g, dtype=torch.uint8)
    labels = torch.arange(n) % classes
    return D.TensorDataset(images, labels, [f"c{i}" for i in range(classes)], "toy", "train")


def smooth_image(h, w, seed=0):
    """A smooth RGB test picture (low frequencies only), so that JPEG and resampling errors are small."""
    rng = np.random.default_rng(seed)
    y, x = np.mgrid[0:h, 0:w] / max(h, w)
    chans = [128 + 100 * np.sin(2 * np.pi * (rng.uniform(0.5, 2) * x + rng.uniform(0.5, 2) * y
                                             + rng.random())) for _ in range(3)]
    return Image.fromarray(np.stack(chans, -1).round().astype(np.uint8), "RGB")


def make_folder(root, splits=("train", "val"), classes=("cat", "dog"), per_class=3, size=(40, 56), ext="png"):
    for split in splits:
        for ci, c in enumerate(classes):
            d = root / split / c
            d.mkdir(parents=True)
            for i in range(per_class):
                smooth_image(*size, seed=ci * 100 + i).save(d / f"{i}.{ext}")
    return root


def broken_files(folder) -> dict[str, str]:
    """Write one real broken file of every kind; return {file name: expected reason prefix}."""
    folder.mkdir(parents=True, exist_ok=True)
    img = smooth_image(40, 50)
    buf = io.BytesIO()
    img.save(buf, "PNG")
    png = bytearray(buf.getvalue())
    i = png.index(b"IDAT") + 24
    png[i:i + 30] = bytes(30)  # zeroed compressed data: the zlib stream is broken
    (folder / "corrupt.png").write_bytes(bytes(png))
    buf = io.BytesIO()
    img.save(buf, "JPEG")
    (folder / "truncated.jpg").write_bytes(buf.getvalue()[: len(buf.getvalue()) // 2])
    (folder / "empty.jpg").write_bytes(b"")
    (folder / "notes.png").write_bytes(b"just some text, not a picture\n" * 10)
    # A failed download saved under an image name: the extension says JPEG, the content is HTML.
    (folder / "download.jpg").write_bytes(b"<html><body><h1>404 Not Found</h1></body></html>")

    def chunk(kind, payload):
        crc = struct.pack(">I", zlib.crc32(kind + payload))
        return struct.pack(">I", len(payload)) + kind + payload + crc

    # A decompression bomb: a tiny PNG whose header claims 50,000 x 50,000 pixels.
    (folder / "bomb.png").write_bytes(
        b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", struct.pack(">IIBBBBB", 50000, 50000, 1, 0, 0, 0, 0))
        + chunk(b"IDAT", zlib.compress(bytes(100))) + chunk(b"IEND", b""))
    return {"corrupt.png": "corrupt", "truncated.jpg": "truncated", "empty.jpg": "empty file",
            "notes.png": "not an image", "download.jpg": "not an image", "bomb.png": "too large"}
