"""Tests for vgg.data: datasets, transforms (Sec. 3.1, 3.2), determinism, downloads and bad input."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F

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
