"""Tests for vgg.data.statistics: mean and PCA against numpy, in memory and on folders."""

from __future__ import annotations

import numpy as np
import torch
from PIL import Image

from vgg import data as D
from vgg.data import channel_statistics, open_dataset


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
