"""Tests for vgg.data: datasets, transforms (Sec. 3.1, 3.2), determinism, downloads and bad input."""

from __future__ import annotations

import functools
import gzip
import hashlib
import http.server
import io
import os
import struct
import threading
import zlib
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from PIL import Image, ImageOps

from vgg import data as D
from vgg.data import (
    Augment,
    channel_statistics,
    eval_batches,
    open_dataset,
    train_batches,
)
from vgg.models import Normalization

FMNIST = D.find_fashion_mnist()
needs_fmnist = pytest.mark.skipif(FMNIST is None, reason="Fashion-MNIST files not installed")


def tensor_dataset(n=40, h=28, w=28, channels=1, seed=0, classes=4):
    g = torch.Generator().manual_seed(seed)
    images = torch.randint(0, 256, (n, channels, h, w), generator=g, dtype=torch.uint8)
    labels = torch.arange(n) % classes
    return D.TensorDataset(images, labels, [f"c{i}" for i in range(classes)], "toy", "train")


# -- Fashion-MNIST -----------------------------------------------------------------------------------

@needs_fmnist
def test_fashion_mnist_splits():
    train = open_dataset("fashion-mnist", "train")
    val = open_dataset("fashion-mnist", "val")
    test = open_dataset("fashion-mnist", "test")
    assert (len(train), len(val), len(test)) == (55000, 5000, 10000)
    assert train.classes == val.classes == test.classes
    assert train.classes[0] == "T-shirt/top" and train.classes[9] == "Ankle boot"
    assert train.channels == 1 and train.images.dtype == torch.uint8
    assert train.images.shape[1:] == (1, 28, 28)
    # train and val partition the official 60,000: no image in both, and together all of them.
    x_all, y_all, _, _ = D.load_fashion_mnist()
    tr_idx, va_idx = D._split_fashion_mnist(5000, 0)
    assert len(np.intersect1d(tr_idx, va_idx)) == 0 and len(np.union1d(tr_idx, va_idx)) == 60000
    assert torch.equal(val.images[:, 0], torch.from_numpy(x_all[va_idx]))
    # Every class is present in val and roughly balanced (6,000 of each in the official train set).
    counts = torch.bincount(val.labels, minlength=10)
    assert counts.min() > 400
    # The split is fixed by the seed; another seed gives another split; val_size is honoured.
    assert torch.equal(open_dataset("fashion-mnist", "val").labels, val.labels)
    assert not torch.equal(open_dataset("fashion-mnist", "val", seed=1).labels, val.labels)
    assert len(open_dataset("fashion-mnist", "val", val_size=1000)) == 1000
    small = open_dataset("fashion-mnist", "train", limit=100)
    assert len(small) == 100 and torch.equal(small.images, train.images[:100])


@needs_fmnist
def test_fashion_mnist_content_matches_idx_files():
    # The first official test image is an ankle boot (label 9), the second a pullover (2).
    test = open_dataset("fashion-mnist", "test", limit=2)
    assert test.labels.tolist() == [9, 2]
    raw = D.read_idx(FMNIST / "t10k-images-idx3-ubyte.gz")
    assert torch.equal(test.images[:, 0], torch.from_numpy(raw[:2].copy()))


def test_bad_arguments():
    with pytest.raises(ValueError, match="split"):
        open_dataset("fashion-mnist", "training")
    with pytest.raises(ValueError, match="limit"):
        open_dataset("fashion-mnist", "train", limit=0)
    with pytest.raises(ValueError, match="Smin <= Smax"):
        Augment(32, (64, 32))
    with pytest.raises(ValueError, match="crop_size"):
        Augment(32, (28, 40))
    with pytest.raises(ValueError, match="pca"):
        Augment(32, (32, 40), pca={"eigval": [1.0, 2.0], "eigvec": [[1.0]]})


# -- transforms --------------------------------------------------------------------------------------

@pytest.mark.parametrize("h,w,s,expected", [(28, 28, 32, (32, 32)), (375, 500, 256, (256, 341)),
                                            (500, 375, 256, (341, 256)), (1536, 2048, 384, (384, 512))])
def test_rescaled_size(h, w, s, expected):
    assert D.rescaled_size(h, w, s) == expected


def test_rescale_shorter_matches_interpolate():
    img = torch.randint(0, 256, (3, 30, 45), dtype=torch.uint8)
    out = D.rescale_shorter(img, 60)
    assert out.shape == (3, 60, 90) and out.dtype == torch.uint8
    ref = F.interpolate(img[None].float(), size=(60, 90), mode="bilinear", align_corners=False)[0]
    assert (out.float() - ref).abs().max() <= 0.5
    down = D.rescale_shorter(img, 20)
    assert down.shape == (3, 20, 30)


@pytest.mark.parametrize("size", [(28, 28), (20, 33), (37, 24)])
def test_resized_crops_equal_rescale_then_crop(size):
    """The batched crop (one grid_sample) equals "rescale the shorter side to S, then crop" per image."""
    h, w = size
    n, crop = 16, 32
    images = torch.rand(n, 2, h, w, dtype=torch.float64) * 255
    rng = np.random.default_rng(0)
    scales = rng.integers(crop, 65, n)
    uy, ux = rng.random(n), rng.random(n)
    boxes = D.crop_boxes(h, w, scales, crop, uy, ux)
    out = D.resized_crops(images, torch.from_numpy(boxes), crop)
    for i in range(n):
        sh, sw = D.rescaled_size(h, w, int(scales[i]))
        y0, x0 = int(np.floor(uy[i] * (sh - crop + 1))), int(np.floor(ux[i] * (sw - crop + 1)))
        assert 0 <= y0 <= sh - crop and 0 <= x0 <= sw - crop
        full = F.interpolate(images[i:i + 1], size=(sh, sw), mode="bilinear", align_corners=False)
        ref = full[0, :, y0:y0 + crop, x0:x0 + crop]
        torch.testing.assert_close(out[i], ref, atol=1e-9, rtol=0)


def test_large_in_memory_images_use_antialiased_rescale_then_crop():
    """In-memory images larger than S (shrinking) get the exact antialiased rescale, then the crop."""
    ds = tensor_dataset(12, 80, 60, channels=3)
    aug = Augment(32, (32, 48), flip=False)
    norm = Normalization((0.0,) * 3, (1.0,) * 3)
    (x, y), = list(train_batches(ds, augment=aug, normalization=norm, batch_size=12, seed=5, epoch=0))
    order = D.epoch_order(12, 5, 0)
    p = D.augment_parameters(aug, 5, 0, np.arange(12), 80, 60)
    for i in range(12):
        s = int(p["scale"][i])
        sh, sw = D.rescaled_size(80, 60, s)
        y0 = int(np.floor(p["u_crop"][i, 0] * (sh - 31)))
        x0 = int(np.floor(p["u_crop"][i, 1] * (sw - 31)))
        full = F.interpolate(ds.images[order[i]][None].float(), size=(sh, sw), mode="bilinear",
                             align_corners=False, antialias=True)
        torch.testing.assert_close(x[i], full[0, :, y0:y0 + 32, x0:x0 + 32], atol=1e-4, rtol=0)
        # The same window as the box that the file path resamples.
        bx0, by0 = p["box"][i][:2]
        assert (round(bx0 * sw / 60), round(by0 * sh / 80)) == (x0, y0)
    assert torch.equal(y, ds.labels[order])


def test_crop_positions_cover_the_image():
    # Over many draws every valid offset occurs, and none outside [0, S - crop].
    u = np.linspace(0, 1, 1000, endpoint=False)
    boxes = D.crop_boxes(np.full(1000, 40), np.full(1000, 40), np.full(1000, 40), 32, u, u[::-1])
    x0 = np.round(boxes[:, 0]).astype(int)
    assert set(x0.tolist()) == set(range(9))


def test_center_and_grid_crops_and_flip():
    img = torch.arange(2 * 3 * 7 * 9).view(2, 3, 7, 9)
    c = D.center_crop(img, 5)
    assert torch.equal(c, img[..., 1:6, 2:7])
    g = D.grid_crops(img, 5, grid=5)
    assert g.shape == (2, 25, 3, 5, 5)
    assert torch.equal(g[:, 0], img[..., :5, :5]) and torch.equal(g[:, 24], img[..., 2:, 4:])
    assert torch.equal(g[:, 12], img[..., 1:6, 2:7])  # the middle of the grid is the centre crop
    assert torch.equal(D.hflip(img)[..., 0], img[..., -1])
    mask = torch.tensor([True, False])
    f = D.hflip(img, mask)
    assert torch.equal(f[0], img[0].flip(-1)) and torch.equal(f[1], img[1])
    with pytest.raises(ValueError, match="cannot crop"):
        D.center_crop(img, 8)


def test_pca_lighting_matches_formula():
    x = torch.zeros(2, 3, 4, 4)
    eigval = [50.0, 5.0, 1.0]
    q, _ = torch.linalg.qr(torch.randn(3, 3, dtype=torch.float64))
    alphas = torch.tensor([[0.1, -0.2, 0.3], [0.0, 0.0, 0.0]])
    out = D.pca_lighting(x, alphas, eigval, q.tolist())
    expected = sum(alphas[0, i].item() * eigval[i] * q[:, i] for i in range(3))
    torch.testing.assert_close(out[0, :, 2, 3], expected.float())
    assert torch.equal(out[1], x[1])


@pytest.mark.parametrize("bgr", [False, True])
def test_device_side_equals_flip_lighting_normalise(bgr):
    """The fused in-place finishing pass equals hflip, then pca_lighting, then Normalization."""
    crops = torch.randint(0, 256, (6, 3, 5, 7), dtype=torch.uint8)
    q, _ = torch.linalg.qr(torch.randn(3, 3, dtype=torch.float64))
    aug = Augment(5, (5, 9), pca={"eigval": [30.0, 5.0, 1.0], "eigvec": q.tolist()})
    p = D.augment_parameters(aug, 0, 0, np.arange(6))
    norm = Normalization((100.0, 110.0, 120.0), (50.0, 60.0, 70.0), bgr=bgr)
    expected = D.hflip(crops.float(), torch.from_numpy(p["flip"]))
    expected = norm(D.pca_lighting(expected, torch.from_numpy(p["alpha"]), [30.0, 5.0, 1.0], q.tolist()))
    for channels_last in (False, True):
        out = D._finish(crops.clone(), p["flip"], p["alpha"], aug, norm, channels_last)
        torch.testing.assert_close(out, expected)
        assert out.is_contiguous(memory_format=torch.channels_last) == channels_last


def test_rescaled_size_scalar_and_vector_agree():
    rng = np.random.default_rng(0)
    h, w, s = rng.integers(1, 3000, 500), rng.integers(1, 3000, 500), rng.integers(1, 600, 500)
    vh, vw = D.rescaled_size(h, w, s)
    assert [D.rescaled_size(int(a), int(b), int(c)) for a, b, c in zip(h, w, s)] == list(zip(vh, vw))


def test_sample_uniform_is_uniform_and_keyed():
    u = D.sample_uniform(0, 0, np.arange(100000), 0)
    assert 0 <= u.min() and u.max() < 1 and abs(u.mean() - 0.5) < 0.01
    assert np.histogram(u, 10, (0, 1))[0].min() > 9500
    for other in (D.sample_uniform(1, 0, np.arange(100000), 0), D.sample_uniform(0, 1, np.arange(100000), 0),
                  D.sample_uniform(0, 0, np.arange(100000), 1)):
        assert abs(np.corrcoef(u, other)[0, 1]) < 0.02
    z = D.sample_normal(0, 0, np.arange(100000), 0)
    assert abs(z.mean()) < 0.02 and abs(z.std() - 1) < 0.02


def test_augment_parameters_distribution():
    aug = Augment(32, (32, 64), pca={"eigval": [1.0], "eigvec": [[1.0]]})
    p = D.augment_parameters(aug, 3, 1, np.arange(20000), 28, 28)
    assert p["scale"].min() == 32 and p["scale"].max() == 64
    assert len(np.unique(p["scale"])) == 33
    assert 0.47 < p["flip"].mean() < 0.53
    assert abs(p["alpha"].std() - 0.1) < 0.005
    fixed = D.augment_parameters(Augment(32, (48, 48), flip=False), 3, 1, np.arange(100), 28, 28)
    assert (fixed["scale"] == 48).all() and not fixed["flip"].any()


# -- training batches --------------------------------------------------------------------------------

def _collect(batches):
    return [(x.clone(), y.clone()) for x, y in batches]


def test_train_batches_shapes_and_epoch():
    ds = tensor_dataset(40)
    aug = Augment(32, (32, 48))
    norm = Normalization((100.0,), (50.0,))
    b = train_batches(ds, augment=aug, normalization=norm, batch_size=8, seed=0, epoch=0)
    assert len(b) == 5
    out = _collect(b)
    assert all(x.shape == (8, 1, 32, 32) and x.dtype == torch.float32 for x, _ in out)
    labels = torch.cat([y for _, y in out])
    assert sorted(labels.tolist()) == sorted(ds.labels.tolist())  # each image once per epoch
    assert len(train_batches(ds, augment=aug, normalization=norm, batch_size=12, seed=0, epoch=0)) == 3
    assert len(train_batches(ds, augment=aug, normalization=norm, batch_size=12, seed=0, epoch=0,
                             drop_last=False)) == 4
    other = _collect(train_batches(ds, augment=aug, normalization=norm, batch_size=8, seed=0, epoch=1))
    assert not torch.equal(out[0][1], other[0][1])  # a new order each epoch


def test_train_batch_is_normalised_crop_of_the_right_image():
    # Constant images: every crop is that constant; normalisation (x - mean) / std applied.
    images = torch.arange(10, dtype=torch.uint8).mul(20).view(10, 1, 1, 1).expand(10, 1, 28, 28).clone()
    ds = D.TensorDataset(images, torch.arange(10), [str(i) for i in range(10)], "const", "train")
    norm = Normalization((10.0,), (2.0,))
    for x, y in train_batches(ds, augment=Augment(32, (32, 64)), normalization=norm, batch_size=5,
                              seed=1, epoch=0):
        expected = ((y.float() * 20 - 10) / 2).view(-1, 1, 1, 1).expand_as(x)
        torch.testing.assert_close(x, expected)


def test_train_batches_deterministic_resume_and_world_size():
    ds = tensor_dataset(64, 28, 28, channels=3)
    aug = Augment(32, (32, 64), pca={"eigval": [20.0, 4.0, 1.0], "eigvec": np.eye(3).tolist()})
    norm = Normalization((120.0, 110.0, 100.0), (60.0, 60.0, 60.0))
    kw = dict(augment=aug, normalization=norm, batch_size=16, seed=7, epoch=2)
    full = _collect(train_batches(ds, **kw))
    assert len(full) == 4
    again = _collect(train_batches(ds, **kw))
    assert all(torch.equal(a[0], b[0]) and torch.equal(a[1], b[1]) for a, b in zip(full, again))
    # Resuming at batch 2 yields exactly batches 2 and 3 of the uninterrupted epoch.
    resumed = _collect(train_batches(ds, **kw, start_batch=2))
    assert len(resumed) == 2
    for a, b in zip(full[2:], resumed):
        assert torch.equal(a[0], b[0]) and torch.equal(a[1], b[1])
    # Two processes: rank 0 and 1 get the two halves of every global batch, with identical crops.
    r0 = _collect(train_batches(ds, **kw, rank=0, world_size=2))
    r1 = _collect(train_batches(ds, **kw, rank=1, world_size=2))
    for a, b, c in zip(full, r0, r1):
        assert b[0].shape[0] == c[0].shape[0] == 8
        assert torch.equal(torch.cat([b[0], c[0]]), a[0]) and torch.equal(torch.cat([b[1], c[1]]), a[1])
    # Another seed changes the crops.
    other = _collect(train_batches(ds, **{**kw, "seed": 8}))
    assert not torch.equal(other[0][0], full[0][0])


def test_train_batches_bad_arguments():
    ds = tensor_dataset(10)
    aug = Augment(32, (32, 32))
    norm = Normalization((0.0,), (1.0,))
    with pytest.raises(ValueError, match="channels"):
        train_batches(ds, augment=aug, normalization=Normalization(), batch_size=2, seed=0, epoch=0)
    with pytest.raises(ValueError, match="less than one batch"):
        train_batches(ds, augment=aug, normalization=norm, batch_size=11, seed=0, epoch=0)
    with pytest.raises(ValueError, match="start_batch"):
        train_batches(ds, augment=aug, normalization=norm, batch_size=2, seed=0, epoch=0, start_batch=9)
    with pytest.raises(ValueError, match="rank"):
        train_batches(ds, augment=aug, normalization=norm, batch_size=2, seed=0, epoch=0, rank=2,
                      world_size=2)


# -- evaluation batches ------------------------------------------------------------------------------

def test_eval_batches_tensor_dataset():
    ds = tensor_dataset(10, 28, 28)
    seen = []
    for x, y, idx in eval_batches(ds, scale=40, batch_size=4):
        assert x.dtype == torch.uint8 and x.shape[1:] == (1, 40, 40)
        torch.testing.assert_close(x, D.rescale_shorter(ds.images[idx], 40))
        assert torch.equal(y, ds.labels[idx])
        seen += idx.tolist()
    assert seen == list(range(10))


# -- statistics --------------------------------------------------------------------------------------

def test_channel_statistics_match_numpy():
    g = torch.Generator().manual_seed(0)
    # Correlated channels so the principal components are non-trivial.
    base = torch.randint(0, 200, (30, 1, 8, 8), generator=g)
    noise = torch.randint(0, 50, (30, 3, 8, 8), generator=g)
    images = (base + noise).clamp(0, 255).to(torch.uint8)
    ds = D.TensorDataset(images, torch.zeros(30, dtype=torch.long), ["a"], "toy", "train")
    st = channel_statistics(ds)
    pixels = images.permute(1, 0, 2, 3).reshape(3, -1).double().numpy()
    np.testing.assert_allclose(st["mean"], pixels.mean(1), rtol=1e-10)
    cov = np.cov(pixels, bias=True) / 255.0 ** 2
    val, vec = np.linalg.eigh(cov)
    np.testing.assert_allclose(st["eigval"], val[::-1] * 255, rtol=1e-8)
    v = np.array(st["eigvec"])
    np.testing.assert_allclose(np.abs(v), np.abs(vec[:, ::-1]), atol=1e-8)
    np.testing.assert_allclose(v.T @ v, np.eye(3), atol=1e-10)
    assert st["eigval"][0] > st["eigval"][1] > st["eigval"][2]
    sub = channel_statistics(ds, max_images=10, seed=1)
    assert sub["mean"] != st["mean"]


# -- image folders -----------------------------------------------------------------------------------

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


def test_open_folder_layout(tmp_path):
    root = make_folder(tmp_path, classes=("zebra", "ant", "Bee"), per_class=3)
    (root / "train" / "ant" / "nested").mkdir()
    smooth_image(20, 20).save(root / "train" / "ant" / "nested" / "deep.jpg")
    (root / "train" / "ant" / "README.txt").write_text("not an image, ignored")
    (root / "train" / "ant" / ".hidden.png").write_bytes(b"")
    ds = open_dataset(str(root), "train")
    assert ds.classes == ["Bee", "ant", "zebra"]  # sorted by name, as torchvision's ImageFolder
    assert len(ds) == 10 and ds.channels == 3
    assert ds.labels.tolist() == [0] * 3 + [1] * 4 + [2] * 3
    assert any(p.endswith("deep.jpg") for p in ds.paths)
    assert not any(p.endswith((".txt", ".hidden.png")) for p in ds.paths)
    small = open_dataset(str(root), "train", limit=4)
    assert small.labels.tolist() == [0, 1, 2, 0]  # round-robin over classes: every class in a quick run
    assert open_dataset(str(root), "val").classes == ds.classes


def test_open_folder_errors(tmp_path):
    with pytest.raises(FileNotFoundError, match="no such folder"):
        open_dataset(str(tmp_path / "missing"), "train")
    root = make_folder(tmp_path / "a", splits=("train",))
    with pytest.raises(FileNotFoundError, match=r"val.*found: \['train'\]"):
        open_dataset(str(root), "val")
    (root / "val").mkdir()
    with pytest.raises(ValueError, match="no class folders"):
        open_dataset(str(root), "val")
    (root / "val" / "cat").mkdir()
    (root / "val" / "dog").mkdir()
    smooth_image(20, 20).save(root / "val" / "cat" / "a.png")
    with pytest.raises(ValueError, match=r"val/dog: class folder with no images"):
        open_dataset(str(root), "val")
    (root / "val" / "dog").rename(root / "val" / "dingo")
    smooth_image(20, 20).save(root / "val" / "dingo" / "a.png")
    with pytest.raises(ValueError, match=r"differ.*only in val: \['dingo'\].*only in train: \['dog'\]"):
        open_dataset(str(root), "val")
    with pytest.raises(ValueError, match="class folders differ"):
        open_dataset(str(root), "train")  # checked from either side, before any training


@pytest.mark.parametrize("fmt,ext", [("JPEG", "jpg"), ("PNG", "png"), ("WEBP", "webp"), ("BMP", "bmp"),
                                     ("GIF", "gif"), ("TIFF", "tif")])
def test_formats(tmp_path, fmt, ext):
    img = smooth_image(30, 40)
    path = tmp_path / f"x.{ext}"
    img.save(path, fmt, **({"lossless": True} if fmt == "WEBP" else {}))
    out = D.load_image(path)
    assert out.mode == "RGB" and out.size == (40, 30)
    err = np.abs(np.asarray(out, np.int16) - np.asarray(img, np.int16))
    assert err.mean() < (8 if fmt in ("JPEG", "GIF") else 0.01)


def test_modes_become_correct_rgb(tmp_path):
    grey = Image.new("L", (8, 6), 77)
    grey.save(tmp_path / "l.png")
    assert np.asarray(D.load_image(tmp_path / "l.png"))[0, 0].tolist() == [77, 77, 77]
    pal = Image.new("P", (8, 6), 1)
    pal.putpalette([0, 0, 0, 10, 200, 30] + [0] * 762)
    pal.save(tmp_path / "p.png")
    assert np.asarray(D.load_image(tmp_path / "p.png"))[2, 3].tolist() == [10, 200, 30]
    rgba = Image.new("RGBA", (8, 6), (200, 0, 0, 255))
    rgba.putpixel((0, 0), (0, 0, 0, 0))       # fully transparent: the white background
    rgba.putpixel((1, 0), (0, 0, 0, 128))     # half transparent black over white: grey
    rgba.save(tmp_path / "rgba.png")
    a = np.asarray(D.load_image(tmp_path / "rgba.png"))
    assert a[0, 0].tolist() == [255, 255, 255] and a[0, 2].tolist() == [200, 0, 0]
    assert abs(int(a[0, 1, 0]) - 127) <= 1
    Image.new("LA", (8, 6), (50, 255)).save(tmp_path / "la.png")
    assert np.asarray(D.load_image(tmp_path / "la.png"))[0, 0].tolist() == [50, 50, 50]
    tpal = Image.new("P", (8, 6), 0)
    tpal.putpalette([0, 0, 0, 10, 200, 30] + [0] * 762)
    tpal.putpixel((1, 1), 1)
    tpal.save(tmp_path / "tp.gif", transparency=0)
    t = np.asarray(D.load_image(tmp_path / "tp.gif"))
    assert t[0, 0].tolist() == [255, 255, 255] and t[1, 1].tolist() == [10, 200, 30]
    # CMYK JPEG: pure magenta + yellow ink is red.
    Image.new("CMYK", (16, 16), (0, 255, 255, 0)).save(tmp_path / "cmyk.jpg", quality=95)
    r, g, b = np.asarray(D.load_image(tmp_path / "cmyk.jpg"))[8, 8].tolist()
    assert r > 240 and g < 15 and b < 15
    # 16-bit greyscale: scaled to 8 bits, not clipped (65535 is white, 257 * 100 is 100).
    a16 = np.array([[65535, 257 * 100], [0, 32896]], dtype=np.uint16)
    Image.fromarray(a16).save(tmp_path / "g16.png")
    assert Image.open(tmp_path / "g16.png").mode.startswith("I")
    assert np.asarray(D.load_image(tmp_path / "g16.png"))[..., 0].tolist() == [[255, 100], [0, 128]]
    Image.new("1", (8, 6), 1).save(tmp_path / "bw.png")
    assert np.asarray(D.load_image(tmp_path / "bw.png"))[0, 0].tolist() == [255, 255, 255]


@pytest.mark.parametrize("orientation", [1, 2, 3, 4, 5, 6, 7, 8])
def test_exif_orientation(tmp_path, orientation):
    img = smooth_image(30, 50)  # landscape as stored
    exif = Image.Exif()
    exif[0x0112] = orientation
    img.save(tmp_path / "o.jpg", exif=exif, quality=95)
    expected = ImageOps.exif_transpose(Image.open(tmp_path / "o.jpg"))
    out = D.load_image(tmp_path / "o.jpg")
    assert out.size == expected.size == ((30, 50) if orientation >= 5 else (50, 30))
    assert np.array_equal(np.asarray(out), np.asarray(expected.convert("RGB")))
    im, transpose = D.open_image(tmp_path / "o.jpg")
    assert D.oriented_size(im, transpose) == (out.height, out.width)
    im.close()


def test_draft_mode_for_large_jpegs(tmp_path):
    img = smooth_image(600, 800)
    img.save(tmp_path / "big.jpg", quality=95)
    # Shorter side 100 wanted: 6x smaller, so the JPEG is decoded at 1/4 scale (200 x 150), not below.
    assert D.load_image(tmp_path / "big.jpg", (100, 133)).size == (200, 150)
    assert D.load_image(tmp_path / "big.jpg", (400, 533)).size == (800, 600)  # < 2x: full decode
    out = D.decode_rescaled(str(tmp_path / "big.jpg"), 100)
    assert out.shape == (3, 100, 133)
    ref = np.asarray(Image.open(tmp_path / "big.jpg").convert("RGB").resize((133, 100), Image.BILINEAR))
    assert np.abs(out.permute(1, 2, 0).numpy().astype(int) - ref).mean() < 2.0


def test_train_crop_equals_rescale_then_crop(tmp_path):
    """The worker's box-resized crop equals Pillow's full rescale to S followed by the crop."""
    img = smooth_image(45, 70)
    img.save(tmp_path / "x.png")
    for s in (32, 48, 64, 90):
        aug = Augment(32, (s, s), flip=False)
        for position in range(5):
            p = D.augment_parameters(aug, 0, 0, [position], 45, 70)
            crop = D.decode_train_crop(str(tmp_path / "x.png"), 32, s, *p["u_crop"][0])
            sh, sw = D.rescaled_size(45, 70, s)
            x0, y0 = round(p["box"][0][0] * sw / 70), round(p["box"][0][1] * sh / 45)
            full = np.asarray(img.resize((sw, sh), Image.BILINEAR))[y0:y0 + 32, x0:x0 + 32]
            assert np.abs(crop.permute(1, 2, 0).numpy().astype(int) - full).max() <= 1


def test_small_images_are_upscaled(tmp_path):
    root = make_folder(tmp_path, per_class=2, size=(9, 14))
    ds = open_dataset(str(root), "train")
    norm = Normalization((0.0,) * 3, (1.0,) * 3)
    batches = list(train_batches(ds, augment=Augment(32, (32, 40)), normalization=norm, batch_size=2,
                                 seed=0, epoch=0))
    assert len(batches) == 2 and all(x.shape == (2, 3, 32, 32) for x, _ in batches)
    sizes = [x.shape[-2:] for x, _, _ in eval_batches(ds, scale=36, batch_size=8)]
    assert sizes == [(36, 56)]


def test_folder_batches_deterministic_with_workers_resume_and_ranks(tmp_path):
    root = make_folder(tmp_path, per_class=6, size=(40, 56), ext="jpg")
    ds = open_dataset(str(root), "train")
    aug = Augment(32, (32, 48), pca={"eigval": [10.0, 2.0, 1.0], "eigvec": np.eye(3).tolist()})
    norm = Normalization((120.0, 110.0, 100.0), (60.0, 60.0, 60.0))
    kw = dict(augment=aug, normalization=norm, batch_size=4, seed=3, epoch=1)
    full = _collect(train_batches(ds, **kw))
    assert len(full) == 3
    with_workers = _collect(train_batches(ds, **kw, workers=2))
    resumed = _collect(train_batches(ds, **kw, start_batch=1, workers=2))
    r1 = _collect(train_batches(ds, **kw, rank=1, world_size=2, workers=2))
    for a, b in zip(full, with_workers):
        assert torch.equal(a[0], b[0]) and torch.equal(a[1], b[1])
    for a, b in zip(full[1:], resumed):
        assert torch.equal(a[0], b[0]) and torch.equal(a[1], b[1])
    for a, b in zip(full, r1):
        assert torch.equal(a[0][2:], b[0]) and torch.equal(a[1][2:], b[1])
    # The persistent workers serve the next epoch too, with that epoch's order.
    nxt = _collect(train_batches(ds, **{**kw, "epoch": 2}, workers=2))
    nxt_ref = _collect(train_batches(ds, **{**kw, "epoch": 2}))
    assert len(ds._loaders) == 1  # one persistent loader, reused
    for a, b in zip(nxt, nxt_ref):
        assert torch.equal(a[0], b[0]) and torch.equal(a[1], b[1])
    assert not torch.equal(full[0][0], nxt[0][0])


def test_eval_batches_folder_grouped_by_size(tmp_path):
    root = tmp_path / "d"
    for split in ("train", "val"):
        for c in ("a", "b"):
            (root / split / c).mkdir(parents=True)
    sizes = {"a/0.png": (30, 40), "a/1.png": (60, 80), "a/2.png": (40, 30), "b/0.png": (30, 40),
             "b/1.png": (50, 50), "b/2.jpg": (300, 400)}
    for name, (h, w) in sizes.items():
        smooth_image(h, w, seed=len(name)).save(root / "val" / name)
        smooth_image(h, w).save(root / "train" / name)
    ds = open_dataset(str(root), "val")
    seen = []
    batches = eval_batches(ds, scale=30, batch_size=2, workers=0)
    for x, y, idx in batches:
        assert x.dtype == torch.uint8 and min(x.shape[-2:]) == 30
        assert torch.equal(y, ds.labels[idx])
        for img, i in zip(x, idx.tolist()):
            assert torch.equal(img, D.decode_rescaled(ds.paths[i], 30))
        seen += idx.tolist()
    assert sorted(seen) == list(range(6))
    # 3:4 landscape (4 images incl. the 300x400 JPEG) in 2 batches; portrait and square alone.
    assert len(batches) == 4 and batches.skipped == []
    assert sorted(seen) == sorted(i for _, _, idx in eval_batches(ds, scale=30, batch_size=2, workers=2)
                                  for i in idx.tolist())


def test_bad_files_are_skipped_with_warnings(tmp_path):
    root = make_folder(tmp_path, per_class=2)
    expected = broken_files(root / "train" / "cat")
    ds = open_dataset(str(root), "train")
    assert len(ds) == 10
    norm = Normalization((0.0,) * 3, (1.0,) * 3)
    with pytest.warns(UserWarning) as record:
        batches = train_batches(ds, augment=Augment(32, (32, 40)), normalization=norm, batch_size=5,
                                seed=0, epoch=0)
        out = list(batches)
    assert sum(x.shape[0] for x, _ in out) == 4  # only the good images, in batches of their epoch slot
    reasons = {os.path.basename(p): r for p, r in batches.skipped}
    assert reasons.keys() == expected.keys()
    for name, prefix in expected.items():
        assert reasons[name].startswith(prefix), (name, reasons[name])
        assert any(name in str(w.message) and reasons[name] in str(w.message) for w in record)
    with pytest.warns(UserWarning):
        ev = eval_batches(ds, scale=32, batch_size=4, workers=2)
        got = [i for _, _, idx in ev for i in idx.tolist()]
    assert len(got) == 4 and {os.path.basename(p) for p, _ in ev.skipped} == expected.keys()
    # strict: the first bad file (in listing order) stops everything, named with its reason.
    with pytest.raises(ValueError, match=r"bomb\.png: too large to decode safely"):
        open_dataset(str(root), "train", strict=True)
    assert open_dataset(str(root), "val", strict=True).classes == ["cat", "dog"]


def test_misleading_extension_that_is_a_valid_image_is_read(tmp_path):
    smooth_image(20, 30).save(tmp_path / "really_a_png.jpg", "PNG")
    assert D.load_image(tmp_path / "really_a_png.jpg").size == (30, 20)


def test_channel_statistics_folder(tmp_path):
    root = tmp_path / "r"
    for c, colour in (("a", (10, 20, 30)), ("b", (50, 100, 150))):
        (root / "train" / c).mkdir(parents=True)
        Image.new("RGB", (300, 300), colour).save(root / "train" / c / "x.png")
    st = channel_statistics(open_dataset(str(root), "train"))
    np.testing.assert_allclose(st["mean"], [30, 60, 90], atol=1e-6)
    # All variance lies along (40, 80, 120): one non-zero component, in that direction.
    assert st["eigval"][0] > 1 and st["eigval"][1] < 1e-6
    np.testing.assert_allclose(np.array(st["eigvec"])[:, 0], np.array([1, 2, 3]) / np.sqrt(14), atol=1e-6)


# -- downloads ---------------------------------------------------------------------------------------

class _Handler(http.server.SimpleHTTPRequestHandler):
    """Serves a folder; under /short/ it promises more bytes than it sends (a cut transfer)."""

    def do_GET(self):
        if self.path.startswith("/short/"):
            body = (Path(self.directory) / self.path[len("/short/"):]).read_bytes()
            self.send_response(200)
            self.send_header("Content-Length", str(len(body) + 1000))
            self.end_headers()
            self.wfile.write(body[: len(body) // 2])
            self.close_connection = True
            return
        super().do_GET()

    def log_message(self, *args):
        pass


@pytest.fixture
def server(tmp_path):
    served = tmp_path / "served"
    served.mkdir()
    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0),
                                            functools.partial(_Handler, directory=str(served)))
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    yield served, f"http://127.0.0.1:{httpd.server_address[1]}/"
    httpd.shutdown()
    httpd.server_close()


def test_download_verifies_sha256_and_length(server, tmp_path):
    served, url = server
    payload = os.urandom(5000)
    (served / "f.bin").write_bytes(payload)
    sha = hashlib.sha256(payload).hexdigest()
    dest = tmp_path / "cache" / "f.bin"
    assert D.download(url + "f.bin", dest, sha, 5000).read_bytes() == payload
    dest.unlink()
    with pytest.raises(ValueError, match="SHA-256 .* does not match"):
        D.download(url + "f.bin", dest, "0" * 64)
    (served / "short.bin").write_bytes(payload[:3000])  # a truncated copy on the server
    with pytest.raises(ValueError, match="got 3000 bytes, expected 5000"):
        D.download(url + "short.bin", dest, sha, 5000)
    with pytest.raises(ValueError, match="cut short"):
        D.download(url + "short/f.bin", dest, sha, 5000)
    with pytest.raises(OSError, match="404"):
        D.download(url + "missing.bin", dest, sha, 5000)
    # Nothing half-written is left behind to be mistaken for the file.
    assert list((tmp_path / "cache").iterdir()) == []


# The canonical gzip files differ from Debian's only in their header (name and time), so the test can
# rebuild them exactly and check them against the MD5s the dataset publishes.
CANONICAL = {"train-images-idx3-ubyte": (1504176606, "8d4fb7e6c68d591d4c3dfef9ec88bf0d"),
             "train-labels-idx1-ubyte": (1504176606, "25c81989df183df01b3e8a0aad5dffbe"),
             "t10k-images-idx3-ubyte": (1504176627, "bef4ecab320f06d8554ea6380940ec79"),
             "t10k-labels-idx1-ubyte": (1504176627, "bb300cfdad3c16e7a12a480ee83cd310")}


@pytest.mark.skipif(not D._has_fashion_mnist(D.FASHION_MNIST_SYSTEM_DIR), reason="needs Debian's files")
def test_fashion_mnist_download_from_mirrors(server, tmp_path, monkeypatch):
    served, url = server
    good = served / "good"
    good.mkdir()
    for name, (mtime, md5) in CANONICAL.items():
        body = (D.FASHION_MNIST_SYSTEM_DIR / f"{name}.gz").read_bytes()[10:]
        data = b"\x1f\x8b\x08\x08" + struct.pack("<I", mtime) + b"\x00\x03" + name.encode() + b"\0" + body
        assert hashlib.md5(data).hexdigest() == md5
        (good / f"{name}.gz").write_bytes(data)
    bad = served / "bad"  # a mirror with one corrupted file and one truncated file
    bad.mkdir()
    for name in CANONICAL:
        data = (good / f"{name}.gz").read_bytes()
        if name.startswith("t10k-labels"):
            data = data[:100] + bytes(10) + data[110:]
        elif name.startswith("t10k-images"):
            data = data[: len(data) // 2]
        (bad / f"{name}.gz").write_bytes(data)
    monkeypatch.setenv("VGG_HOME", str(tmp_path / "home"))
    monkeypatch.delenv("VGG_DATA", raising=False)
    monkeypatch.setattr(D, "FASHION_MNIST_SYSTEM_DIR", tmp_path / "no-debian-package")
    monkeypatch.setattr(D, "FASHION_MNIST_MIRRORS", (url + "nothing-here/", url + "bad/", url + "good/"))
    assert D.find_fashion_mnist() is None
    test = open_dataset("fashion-mnist", "test", limit=3)  # downloads into $VGG_HOME, then reads
    assert test.labels.tolist() == [9, 2, 1]
    cache = tmp_path / "home" / "fashion-mnist"
    assert D.find_fashion_mnist() == cache
    for name, size, sha in D.FASHION_MNIST_FILES.values():
        assert (cache / name).stat().st_size == size and D._sha256(cache / name) == sha
    # Only bad mirrors: a clear error listing every failure; a file already verified is kept.
    (cache / "t10k-labels-idx1-ubyte.gz").unlink()
    with pytest.raises(ValueError, match=r"t10k-labels-idx1-ubyte.gz:(.|\n)*404(.|\n)*does not match"):
        D.download_fashion_mnist(mirrors=(url + "nothing-here/", url + "bad/"))
    assert (cache / "train-images-idx3-ubyte.gz").is_file()
    monkeypatch.setattr(D, "FASHION_MNIST_MIRRORS", (url + "nothing-here/",))
    with pytest.raises(ValueError, match=r"not in \$VGG_DATA.*downloading them failed"):
        open_dataset("fashion-mnist", "train")
    # $VGG_DATA is looked at first, as a folder or with a fashion-mnist subfolder.
    monkeypatch.setenv("VGG_DATA", str(served))
    assert D.find_fashion_mnist() is None
    (served / "fashion-mnist").symlink_to(good)
    assert D.find_fashion_mnist() == served / "fashion-mnist"


def test_read_idx_rejects_bad_files(tmp_path):
    good = b"\x00\x00\x08\x01" + (3).to_bytes(4, "big") + bytes([1, 2, 3])
    (tmp_path / "ok.gz").write_bytes(gzip.compress(good))
    assert D.read_idx(tmp_path / "ok.gz").tolist() == [1, 2, 3]
    (tmp_path / "short.gz").write_bytes(gzip.compress(good[:-1]))
    with pytest.raises(ValueError, match="short.gz: IDX header says"):
        D.read_idx(tmp_path / "short.gz")
    (tmp_path / "cut.gz").write_bytes(gzip.compress(good)[:-6])
    with pytest.raises(ValueError, match="cut.gz: cannot read IDX"):
        D.read_idx(tmp_path / "cut.gz")
    (tmp_path / "magic.gz").write_bytes(gzip.compress(b"\x00\x00\x0d\x01" + good[4:]))
    with pytest.raises(ValueError, match="not an unsigned-byte IDX"):
        D.read_idx(tmp_path / "magic.gz")


def test_describe_dataset_lists_counts_bad_files_and_statistics(tmp_path):
    root = make_folder(tmp_path, per_class=2)
    broken_files(root / "val" / "dog")
    info = D.describe_dataset(str(root), check=True, stats=True)
    assert info["classes"] == ["cat", "dog"] and info["channels"] == 3
    assert info["splits"]["train"] == {"images": 4, "per_class": [2, 2], "bad": []}
    assert info["splits"]["val"]["per_class"] == [2, 8] and "test" not in info["splits"]
    assert {os.path.basename(p) for p, _ in info["splits"]["val"]["bad"]} == {
        "corrupt.png", "truncated.jpg", "empty.jpg", "notes.png", "download.jpg", "bomb.png"}
    assert len(info["statistics"]["mean"]) == 3


def test_cli_data(tmp_path, capsys):
    from vgg.cli import main

    root = make_folder(tmp_path, per_class=2)
    broken_files(root / "train" / "dog")
    assert main(["data", str(root), "--check"]) == 0
    out = capsys.readouterr().out
    assert "2 classes, 3 channel(s)" in out and "6 unreadable file(s)" in out
    assert "train: unreadable " in out and "bomb.png: too large to decode safely" in out
    assert main(["data", str(tmp_path / "nowhere")]) == 2
    assert "vgg data: error: " in capsys.readouterr().err
