"""Test scales and views (Sec. 3.2, 4.1, 4.2): what a net is shown of an image at test time.

A view is a small pure function of a uint8 batch already rescaled to its test scale Q:

- ``dense``: the whole image through the fully-convolutional net, whose class score map is spatially
  averaged (``model(x)`` does that, Sec. 3.2);
- ``centre``: one centre crop of the crop size (what the libraries report, at Q = 256/224 x crop);
- ``grid``: one of the 5x5 crops of the crop size on a regular grid whose outer crops touch the
  image's corners (Sec. 3.2: "50 crops per scale (5 x 5 regular grid with 2 flips)");
- each of them optionally horizontally flipped.

The crop geometry itself (centre offsets, the grid, flips) is :mod:`vgg.data.crops`, shared with
training.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import torch
from torch import Tensor

from ..data import GRID, center_crop, centre_offset, grid_crop, grid_offsets, hflip
from ..models import VGG

PROTOCOLS = ("centre", "dense", "multi-crop", "dense+multi-crop")
LIBRARY_RATIO = 256 / 224  # torchvision & co: resize to 256, centre crop 224
SCALE_STEP = 32 / 224  # Sec. 4.2: Q in {S - 32, S, S + 32} at crop 224, proportionate elsewhere
# GRID (vgg.data.crops): Sec. 3.2, a 5 x 5 regular grid of crops per scale, each with its flip


# -- scales ------------------------------------------------------------------------------------------

def library_scale(crop_size: int) -> int:
    """The test scale of the libraries' centre-crop protocol: 256 at crop 224, 37 at crop 32."""
    return int(math.floor(crop_size * LIBRARY_RATIO + 0.5))


def scale_step(crop_size: int) -> int:
    """The step between the paper's three test scales: 32 at crop 224, crop/7 rounded elsewhere."""
    return max(1, int(math.floor(crop_size * SCALE_STEP + 0.5)))


def train_scale(model: VGG) -> tuple[int, int]:
    """The (Smin, Smax) the net was trained at, from ``model.info["train_scale"]``; (S, S) for fixed
    S. A net without it (foreign weights) is taken as trained at the libraries' S = 256/224 x crop."""
    value = model.info.get("train_scale")
    if value is None:
        s = library_scale(model.crop_size)
        return s, s
    if isinstance(value, (int, float)):
        value = [value, value]
    smin, smax = (int(v) for v in value)
    return min(smin, smax), max(smin, smax)


def default_scales(crop_size: int, scale: tuple[int, int], single: bool = False) -> list[int]:
    """The paper's test scales for a net trained at ``scale`` = (Smin, Smax) (Sec. 4.1, 4.2).

    Fixed S: {S - d, S, S + d} with d = round(32 x crop / 224) (d = 32 at crop 224, 5 at crop 32);
    a scale below the crop size is raised to the crop size and duplicates dropped, so the smallest
    test scale is never smaller than the net's input. Jittered: {Smin, (Smin + Smax) / 2, Smax}.
    ``single``: the paper's one test scale, Q = S, or (Smin + Smax) / 2 for jittered S (Table 3).
    """
    smin, smax = scale
    if smin == smax:
        d = scale_step(crop_size)
        scales = [smin] if single else [smin - d, smin, smin + d]
    else:
        mid = int(math.floor((smin + smax) / 2 + 0.5))
        scales = [mid] if single else [smin, mid, smax]
    return sorted({max(crop_size, q) for q in scales})


def check_scales(scales: Sequence[int], crop_size: int, name: str = "net") -> list[int]:
    scales = [int(q) for q in scales]
    if not scales:
        raise ValueError("no test scales given")
    small = [q for q in scales if q < crop_size]
    if small:
        raise ValueError(f"test scales {small} are smaller than the crop size {crop_size} of {name}; "
                         f"every scale Q must be >= {crop_size}")
    return sorted(set(scales))


# -- views: small pure functions over uint8 batches ----------------------------------------------------

@dataclass(frozen=True)
class View:
    """One way of showing a rescaled image to a net: ``kind`` is dense, centre or grid (``cell`` =
    (row, col) of the 5x5 grid), at test scale ``scale``, optionally flipped; ``weight`` is its share
    of the method's posterior."""

    scale: int
    kind: str
    cell: tuple[int, int] | None = None
    flip: bool = False
    weight: float = 1.0


def view_images(images: Tensor, view: View, crop_size: int) -> Tensor:
    """What the net sees of a batch rescaled to ``view.scale`` under ``view``."""
    if view.kind == "dense":
        out = images
    elif view.kind == "centre":
        out = center_crop(images, crop_size)
    elif view.kind == "grid":
        out = grid_crop(images, crop_size, view.cell, GRID)
    else:
        raise ValueError(f"unknown view kind {view.kind!r}; valid: dense, centre, grid")
    return hflip(out) if view.flip else out


def _views(scales: Sequence[int], kinds: Sequence[tuple[str, tuple[int, int] | None]],
           flip: bool, total: float) -> list[View]:
    flips = (False, True) if flip else (False,)
    plain = [(q, k, c, f) for q in scales for k, c in kinds for f in flips]
    return [View(q, k, c, f, total / len(plain)) for q, k, c, f in plain]


def method_views(protocol: str, scales: Sequence[int], flip: bool = True) -> list[View]:
    """The views of one net under a protocol at the given test scales, weights summing to 1.

    centre: one centre crop per scale; dense: the whole image per scale; multi-crop: the 5x5 grid per
    scale; each with its flip when ``flip``. dense+multi-crop: both sets, each half weighing 1/2.
    """
    if protocol not in PROTOCOLS:
        raise ValueError(f"unknown protocol {protocol!r}; valid: {', '.join(PROTOCOLS)}")
    grid = [("grid", (r, c)) for r in range(GRID) for c in range(GRID)]
    if protocol == "centre":
        return _views(scales, [("centre", None)], flip, 1.0)
    if protocol == "dense":
        return _views(scales, [("dense", None)], flip, 1.0)
    if protocol == "multi-crop":
        return _views(scales, grid, flip, 1.0)
    return _views(scales, [("dense", None)], flip, 0.5) + _views(scales, grid, flip, 0.5)


def default_flip(protocol: str) -> bool:
    """The libraries' centre crop is a single unflipped crop; the paper's protocols add flips."""
    return protocol != "centre"


def plan_views(models: Sequence[VGG], protocol: str, scales: Sequence[int] | None = None,
               flip: bool | None = None, single_scale: bool = False) -> list[list[View]]:
    """Each net's views: its own default scales (from its training scale; the libraries' 256/224
    scale for the centre protocol) unless ``scales`` overrides them."""
    flip = default_flip(protocol) if flip is None else flip
    plans = []
    for model in models:
        if scales:
            qs = check_scales(scales, model.crop_size, model.arch)
        elif protocol == "centre":
            qs = [library_scale(model.crop_size)]
        else:
            qs = default_scales(model.crop_size, train_scale(model), single=single_scale)
        plans.append(method_views(protocol, qs, flip))
    return plans


def match_channels(images: Tensor, channels: int) -> Tensor:
    """A grey batch for a colour net is repeated over three channels; a colour batch for a grey net
    (a Fashion-MNIST net on an image folder) becomes its luma, rounded as Pillow's ``convert("L")``
    (ITU-R 601-2); anything else must match."""
    c = images.shape[1]
    if c == channels:
        return images
    if c == 1:
        return images.expand(-1, channels, -1, -1)
    if c == 3 and channels == 1:
        if images.dtype == torch.uint8:
            rgb = images.to(torch.int32)
            luma = (rgb[:, 0:1] * 19595 + rgb[:, 1:2] * 38470 + rgb[:, 2:3] * 7471 + 0x8000) >> 16
            return luma.to(torch.uint8)
        return images[:, 0:1] * 0.299 + images[:, 1:2] * 0.587 + images[:, 2:3] * 0.114
    raise ValueError(f"the net expects {channels}-channel images, got {c} channels")


@torch.inference_mode()
def view_box(view: View, height: int, width: int, crop_size: int) -> tuple[int, int, int, int, bool]:
    """(top, left, height, width, flipped) of the pixels a view shows of a height x width image."""
    if view.kind == "dense":
        return 0, 0, height, width, view.flip
    if view.kind == "centre":
        top, left = centre_offset(height, crop_size), centre_offset(width, crop_size)
    elif view.kind == "grid":
        top = grid_offsets(height, crop_size, GRID)[view.cell[0]]
        left = grid_offsets(width, crop_size, GRID)[view.cell[1]]
    else:
        raise ValueError(f"unknown view kind {view.kind!r}; valid: dense, centre, grid")
    return top, left, crop_size, crop_size, view.flip
