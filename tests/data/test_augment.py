"""Tests for vgg.data.augment: Sec. 3.1 rescale-then-crop, batched crops, PCA lighting."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from vgg import data as D
from vgg.data import Augment, train_batches
from vgg.models import Normalization

from .samples import tensor_dataset


def test_augment_bad_arguments():
    with pytest.raises(ValueError, match="Smin <= Smax"):
        Augment(32, (64, 32))
    with pytest.raises(ValueError, match="crop_size"):
        Augment(32, (28, 40))
    with pytest.raises(ValueError, match="pca"):
        Augment(32, (32, 40), pca={"eigval": [1.0, 2.0], "eigvec": [[1.0]]})


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


def test_pca_lighting_matches_formula():
    x = torch.zeros(2, 3, 4, 4)
    eigval = [50.0, 5.0, 1.0]
    q, _ = torch.linalg.qr(torch.randn(3, 3, dtype=torch.float64))
    alphas = torch.tensor([[0.1, -0.2, 0.3], [0.0, 0.0, 0.0]])
    out = D.pca_lighting(x, alphas, eigval, q.tolist())
    expected = sum(alphas[0, i].item() * eigval[i] * q[:, i] for i in range(3))
    torch.testing.assert_close(out[0, :, 2, 3], expected.float())
    assert torch.equal(out[1], x[1])


def test_rescaled_size_scalar_and_vector_agree():
    rng = np.random.default_rng(0)
    h, w, s = rng.integers(1, 3000, 500), rng.integers(1, 3000, 500), rng.integers(1, 600, 500)
    vh, vw = D.rescaled_size(h, w, s)
    assert [D.rescaled_size(int(a), int(b), int(c)) for a, b, c in zip(h, w, s)] == list(zip(vh, vw))


def test_augment_parameters_distribution():
    aug = Augment(32, (32, 64), pca={"eigval": [1.0], "eigvec": [[1.0]]})
    p = D.augment_parameters(aug, 3, 1, np.arange(20000), 28, 28)
    assert p["scale"].min() == 32 and p["scale"].max() == 64
    assert len(np.unique(p["scale"])) == 33
    assert 0.47 < p["flip"].mean() < 0.53
    assert abs(p["alpha"].std() - 0.1) < 0.005
    fixed = D.augment_parameters(Augment(32, (48, 48), flip=False), 3, 1, np.arange(100), 28, 28)
    assert (fixed["scale"] == 48).all() and not fixed["flip"].any()
