"""Tests for vgg.data.crops: centre crop, the regular grid of crops (Sec. 3.2), flips."""

from __future__ import annotations

import pytest
import torch

from vgg import data as D


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
