"""Bounding boxes for Appendix A: geometry, the encoding the localisation net regresses, the dense
windows, and the box under the training transforms of Sec. 3.1.

Conventions (one set, used by every module of the package):

- A box is a float tensor ``(x1, y1, x2, y2)`` in pixels, ``(..., 4)``. Coordinates are pixel
  *edges*: pixel ``(i, j)`` (row, column) covers ``[j, j+1) x [i, i+1)``, its centre is at
  ``(j + 0.5, i + 0.5)``, a box ``(0, 0, W, H)`` is the whole ``H x W`` image, and its width is
  ``x2 - x1`` (no "+1": the devkits' inclusive-pixel count differs by one pixel, which is what
  ``F.interpolate(align_corners=False)`` and the project's crops assume too).
- The net's target (A.1: "a bounding box is represented by a 4-D vector storing its centre
  coordinates, width, and height") is that vector *relative to the window the net saw*:
  ``((cx - wx1) / ww, (cy - wy1) / wh, w / ww, h / wh)`` for a window ``(wx1, wy1, wx2, wy2)`` of
  width ``ww`` and height ``wh``. For a training crop the window is the crop, so a box inside the
  crop encodes to values in ``[0, 1]``; applied densely (Sec. 3.2) the net's box output at each
  position of its map is in the frame of that position's window (:func:`dense_windows`), exactly
  as a crop's would be. No log-sizes, no anchors: the paper's Euclidean loss on this vector.
"""

from __future__ import annotations

import torch
from torch import Tensor

__all__ = [
    "area", "as_boxes", "box_iou", "clip_boxes", "cxcywh_to_xyxy", "decode", "dense_windows",
    "elementwise_iou", "encode", "hflip_boxes", "localization_correct", "rescale_boxes", "to_original",
    "transform_boxes", "xyxy_to_cxcywh", "MIN_KEPT",
]

MIN_KEPT = 0.5  # a crop keeping less than half of the box's area gives the sample box weight 0


def as_boxes(boxes) -> Tensor:
    """``boxes`` as a floating tensor (..., 4); float64 input stays float64, anything else float32."""
    t = torch.as_tensor(boxes)
    if not t.is_floating_point():
        t = t.float()
    if t.shape[-1:] != (4,):
        raise ValueError(f"boxes must have shape (..., 4), got {tuple(t.shape)}")
    return t


# -- geometry ------------------------------------------------------------------------------------------

def area(boxes) -> Tensor:
    """Area of each box (..., 4) -> (...); 0 for an empty box (x2 <= x1 or y2 <= y1)."""
    b = as_boxes(boxes)
    return (b[..., 2] - b[..., 0]).clamp(min=0) * (b[..., 3] - b[..., 1]).clamp(min=0)


def _intersection(a: Tensor, b: Tensor) -> Tensor:
    """Intersection areas of broadcast box tensors a, b (..., 4)."""
    w = (torch.minimum(a[..., 2], b[..., 2]) - torch.maximum(a[..., 0], b[..., 0])).clamp(min=0)
    h = (torch.minimum(a[..., 3], b[..., 3]) - torch.maximum(a[..., 1], b[..., 1])).clamp(min=0)
    return w * h


def _iou(a: Tensor, b: Tensor) -> Tensor:
    inter = _intersection(a, b)
    union = area(a) + area(b) - inter
    # Two empty boxes have no overlap: IoU 0, not 0/0.
    return torch.where(union > 0, inter / union.clamp(min=torch.finfo(union.dtype).tiny),
                       torch.zeros_like(inter))


def box_iou(a, b) -> Tensor:
    """Intersection over union of every pair: (N, 4) x (M, 4) -> (N, M) (as ``torchvision.ops.box_iou``).
    A.2's criterion: a predicted box is correct when its IoU with a true box of its class is > 0.5."""
    a, b = as_boxes(a), as_boxes(b)
    dtype = torch.promote_types(a.dtype, b.dtype)
    return _iou(a.to(dtype)[:, None, :], b.to(dtype)[None, :, :])


def elementwise_iou(a, b) -> Tensor:
    """IoU of corresponding boxes: (..., 4) and (..., 4), broadcast -> (...)."""
    a, b = as_boxes(a), as_boxes(b)
    dtype = torch.promote_types(a.dtype, b.dtype)
    return _iou(a.to(dtype), b.to(dtype))


def clip_boxes(boxes, width: float, height: float) -> Tensor:
    """Boxes clipped to the image ``(0, 0, width, height)``; a box wholly outside becomes empty."""
    b = as_boxes(boxes)
    x = b[..., 0::2].clamp(0, width)
    y = b[..., 1::2].clamp(0, height)
    return torch.stack([x[..., 0], y[..., 0], x[..., 1], y[..., 1]], dim=-1)


def xyxy_to_cxcywh(boxes) -> Tensor:
    """(x1, y1, x2, y2) -> (centre x, centre y, width, height)."""
    b = as_boxes(boxes)
    return torch.stack([(b[..., 0] + b[..., 2]) / 2, (b[..., 1] + b[..., 3]) / 2,
                        b[..., 2] - b[..., 0], b[..., 3] - b[..., 1]], dim=-1)


def cxcywh_to_xyxy(boxes) -> Tensor:
    """(centre x, centre y, width, height) -> (x1, y1, x2, y2)."""
    b = as_boxes(boxes)
    half_w, half_h = b[..., 2] / 2, b[..., 3] / 2
    return torch.stack([b[..., 0] - half_w, b[..., 1] - half_h, b[..., 0] + half_w, b[..., 1] + half_h],
                       dim=-1)


def _factors(factor, dtype) -> Tensor:
    """A rescale factor as (..., 2) = (fx, fy): from a number, (fx, fy), (..., 1) or (..., 2)."""
    f = torch.as_tensor(factor, dtype=dtype)
    f = f.reshape(1) if f.dim() == 0 else f
    if f.shape[-1] == 1:
        f = f.expand(*f.shape[:-1], 2)
    if f.shape[-1] != 2:
        raise ValueError(f"a rescale factor is a number, (fx, fy) or (N, 2), got shape {tuple(f.shape)}")
    return f


def rescale_boxes(boxes, factor) -> Tensor:
    """Boxes of an image rescaled by ``factor``: a number, or ``(fx, fy)`` (the rescaled width over the
    original width, and the same for heights), or per box (N, 1) / (N, 2)."""
    b = as_boxes(boxes)
    f = _factors(factor, b.dtype)
    return b * torch.cat([f, f], dim=-1)  # (fx, fy, fx, fy)


def to_original(boxes, factor) -> Tensor:
    """Boxes found on an image rescaled by ``factor`` (as :func:`rescale_boxes`; e.g. to the test
    scale Q, Sec. 3.2), in the original image's pixels: divided by the factor."""
    b = as_boxes(boxes)
    f = _factors(factor, torch.float64)
    return (b.double() / torch.cat([f, f], dim=-1)).to(b.dtype)


def hflip_boxes(boxes, width: float) -> Tensor:
    """Boxes of the image mirrored left-right (an image ``width`` pixels wide): x -> width - x."""
    b = as_boxes(boxes)
    return torch.stack([width - b[..., 2], b[..., 1], width - b[..., 0], b[..., 3]], dim=-1)


# -- the encoding the net regresses (A.1) --------------------------------------------------------------

def encode(boxes, window) -> Tensor:
    """The net's target for ``boxes`` (..., 4) seen through ``window`` (..., 4), both (x1, y1, x2, y2)
    in the same pixels: (cx, cy, w, h) relative to the window's corner, divided by its width (x, w)
    and height (y, h). A.1: "centre coordinates, width and height". See the module docstring."""
    c = xyxy_to_cxcywh(boxes)
    win = as_boxes(window).to(c.dtype)
    ww, wh = win[..., 2] - win[..., 0], win[..., 3] - win[..., 1]
    return torch.stack([(c[..., 0] - win[..., 0]) / ww, (c[..., 1] - win[..., 1]) / wh,
                        c[..., 2] / ww, c[..., 3] / wh], dim=-1)


def decode(params, window) -> Tensor:
    """Inverse of :func:`encode`: the net's (..., 4) outputs for ``window`` -> boxes in its pixels."""
    p = as_boxes(params)
    win = as_boxes(window).to(p.dtype)
    ww, wh = win[..., 2] - win[..., 0], win[..., 3] - win[..., 1]
    return cxcywh_to_xyxy(torch.stack([win[..., 0] + p[..., 0] * ww, win[..., 1] + p[..., 1] * wh,
                                       p[..., 2] * ww, p[..., 3] * wh], dim=-1))


def dense_windows(map_h: int, map_w: int, crop_size: int, stride: int = 32) -> Tensor:
    """The input window of each position of a dense score map, (map_h, map_w, 4) in input pixels.

    Sec. 3.2: the FC layers become convolutions, the first of kernel crop/32 on the last pooled map
    (stride 32), so output position (i, j) is the net applied to the crop whose top-left corner is
    (32 j, 32 i) in the (rescaled) input: window ``(32 j, 32 i, 32 j + crop, 32 i + crop)``. A map of
    an H x W input has ``H // 32 - crop // 32 + 1`` rows. Decode each position's box output with its
    window (``decode(params, dense_windows(...))``), then map the boxes to the original image with
    :func:`to_original` (after :func:`hflip_boxes` for a mirrored input).
    """
    ys = torch.arange(map_h, dtype=torch.float32)[:, None].expand(map_h, map_w) * stride
    xs = torch.arange(map_w, dtype=torch.float32)[None, :].expand(map_h, map_w) * stride
    return torch.stack([xs, ys, xs + crop_size, ys + crop_size], dim=-1)


# -- the box under the training transforms (Sec. 3.1) --------------------------------------------------

def transform_boxes(boxes, scale, crop_box, flip, crop_size: int,
                    min_kept: float = MIN_KEPT) -> tuple[Tensor, Tensor]:
    """A training sample's box after Sec. 3.1's transforms: rescale, crop, optional horizontal flip.

    ``boxes`` (N, 4) or (4,) in the source image's pixels. ``scale``: the rescale factor, a number or
    ``(fx, fy)`` (rescaled width / source width, rescaled height / source height; rescaling the shorter
    side to S gives per-axis factors that differ by the rounding of the longer side), shared or per
    sample (N, 1) / (N, 2). ``crop_box``: the crop ``(x1, y1, x2, y2)`` in the rescaled image, (4,) or
    (N, 4), resampled to ``crop_size x crop_size`` (a plain crop has ``x2 - x1 = crop_size``; with
    ``scale=1`` a crop box given in source pixels, as the project's ``crop_boxes`` gives them, is the
    same transform). ``flip`` (bool or (N,) bool): the crop mirrored left-right after cropping.

    Returns ``(boxes, weights)``: the boxes in crop pixels, clipped to the crop, and a float weight per
    sample: 1 when the crop keeps at least ``min_kept`` (0.5) of the box's area, else 0. Such a sample
    is *down-weighted*, not redrawn: every crop is a pure function of (seed, epoch, sample position)
    through the project's counter-based draws, and redrawing until a crop fits would make the number
    of draws, and so the sample's crop, depend on earlier rejections. With weight 0 the sample still
    trains the classification loss of a joint net, or simply contributes nothing to the box loss.
    """
    b = as_boxes(boxes).double()
    s = _factors(scale, torch.float64)
    crop = as_boxes(crop_box).double()
    # rescale -> the crop's frame -> resample the crop to crop_size (identity for a plain crop)
    fx = crop_size / (crop[..., 2] - crop[..., 0])
    fy = crop_size / (crop[..., 3] - crop[..., 1])
    x = (b[..., 0::2] * s[..., 0:1] - crop[..., 0:1]) * fx[..., None]
    y = (b[..., 1::2] * s[..., 1:2] - crop[..., 1:2]) * fy[..., None]
    out = torch.stack([x[..., 0], y[..., 0], x[..., 1], y[..., 1]], dim=-1)
    full = area(out)
    out = clip_boxes(out, crop_size, crop_size)
    kept = torch.where(full > 0, area(out) / full.clamp(min=1e-12), torch.zeros_like(full))
    weights = (kept >= min_kept).to(torch.float32)
    f = torch.as_tensor(flip, dtype=torch.bool)
    out = torch.where(f[..., None], hflip_boxes(out, crop_size), out)
    return out.to(as_boxes(boxes).dtype), weights


# -- A.2's criterion -----------------------------------------------------------------------------------

def localization_correct(pred_labels, pred_boxes, true_labels, true_boxes, threshold: float = 0.5) -> bool:
    """ILSVRC's localisation criterion (A.2): one of the guesses (k labels, (k, 4) boxes; k = 5 for the
    top-5 error) has a true object's label and overlaps that object's box by IoU > ``threshold``."""
    pred_labels = torch.as_tensor(pred_labels).reshape(-1)
    true_labels = torch.as_tensor(true_labels).reshape(-1)
    if len(pred_labels) == 0 or len(true_labels) == 0:
        return False
    iou = box_iou(torch.as_tensor(pred_boxes).reshape(-1, 4), torch.as_tensor(true_boxes).reshape(-1, 4))
    same = pred_labels[:, None] == true_labels[None, :]
    return bool(((iou > threshold) & same).any())
