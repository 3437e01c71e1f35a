"""Crop geometry, the one implementation for training and testing (Sec. 3.1, 3.2): a crop at an
offset, the centre crop, the n x n regular grid of crops (Sec. 3.2 multi-crop: 5x5), and the flip.

Offsets round as torchvision's CenterCrop does (``int(round(...))``, ties to even), so the centre
protocol matches its numbers and the middle crop of an odd grid is the centre crop.
"""

from __future__ import annotations

import torch
from torch import Tensor

GRID = 5  # Sec. 3.2: a 5 x 5 regular grid of crops per scale, each with its flip


def crop(images: Tensor, top: int, left: int, size: int) -> Tensor:
    """The ``size`` x ``size`` crop at (top, left)."""
    h, w = images.shape[-2:]
    if not (0 <= top <= h - size and 0 <= left <= w - size):
        raise ValueError(f"crop {size}x{size} at ({top}, {left}) does not fit a {h}x{w} image")
    return images[..., top:top + size, left:left + size]


def centre_offset(side: int, size: int) -> int:
    # torchvision's CenterCrop rounds the same way, so our centre protocol matches its numbers.
    return int(round((side - size) / 2.0))


def center_crop(images: Tensor, size: int) -> Tensor:
    """The centre ``size`` x ``size`` crop of (..., H, W) images (offsets: :func:`centre_offset`)."""
    h, w = images.shape[-2:]
    if h < size or w < size:
        raise ValueError(f"cannot crop {size}x{size} from a {h}x{w} image")
    return crop(images, centre_offset(h, size), centre_offset(w, size), size)


def grid_offsets(side: int, size: int, n: int = GRID) -> list[int]:
    """Offsets of ``n`` crops of ``size`` evenly spread over ``side``: linspace(0, side - size, n)
    rounded (ties to even, as numpy): the first crop touches one border, the last the other, the
    grid is symmetric and its middle crop is the centre crop."""
    if side < size:
        raise ValueError(f"a {size}-pixel crop does not fit a side of {side}")
    if n == 1:
        return [centre_offset(side, size)]
    return [int(round(i * (side - size) / (n - 1))) for i in range(n)]


def grid_crop(images: Tensor, size: int, cell: tuple[int, int], n: int = GRID) -> Tensor:
    """Crop ``cell`` = (row, col) of the n x n regular grid of ``size`` crops."""
    h, w = images.shape[-2:]
    return crop(images, grid_offsets(h, size, n)[cell[0]], grid_offsets(w, size, n)[cell[1]], size)


def grid_crops(images: Tensor, size: int, grid: int = GRID) -> Tensor:
    """The grid x grid regular grid of size x size crops (Sec. 3.2 multi-crop: 5x5), corners included.
    (N, C, H, W) -> (N, grid*grid, C, size, size), crops in row-major order (offsets:
    :func:`grid_offsets`)."""
    h, w = images.shape[-2:]
    if h < size or w < size:
        raise ValueError(f"cannot crop {size}x{size} from a {h}x{w} image")
    tops, lefts = grid_offsets(h, size, grid), grid_offsets(w, size, grid)
    return torch.stack([crop(images, t, s, size) for t in tops for s in lefts], dim=-4)


def hflip(images: Tensor, mask: Tensor | None = None) -> Tensor:
    """Mirror (..., H, W) images left-right; with a boolean (N,) mask, only the masked samples."""
    if mask is None:
        return images.flip(-1)
    return torch.where(mask.view(-1, *([1] * (images.dim() - 1))), images.flip(-1), images)
