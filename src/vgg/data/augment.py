"""The paper's training augmentation (Sec. 3.1) and the rescaling shared with testing (Sec. 3.2).

Training: each image is isotropically rescaled so that its shorter side is S (fixed, or drawn per
image from [Smin, Smax]: scale jittering), one random crop_size crop is taken, randomly flipped, and
shifted in colour by AlexNet's PCA lighting noise. Testing rescales to shorter side Q
(:func:`rescale_shorter`). In-memory data is augmented on tensors, a whole batch at once: the
rescale-then-crop of each sample is one affine resampling of the source image (``grid_sample``), so no
Python runs per image.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor

from .sampling import sample_normal, sample_uniform


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
    # F.affine_grid computes, built directly: affine_grid's batched matmul is slower on CPU).
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

