"""Pictures of boxes: one image with its boxes, and a PNG grid of samples (Pillow only).

For looking at what the localisation net sees and predicts (App. A): the true box and the predicted
one drawn on the image, as a grid of a few samples written next to a run's logs.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch
from PIL import Image, ImageDraw

from ..files import atomic_write
from .boxes import as_boxes

__all__ = ["COLORS", "draw_boxes", "sample_grid", "to_pil"]

# Distinct on black and on white: ground truth first (green), then predictions.
COLORS = ((0, 220, 0), (255, 40, 40), (40, 120, 255), (255, 200, 0), (220, 0, 220), (0, 220, 220))


def to_pil(image) -> Image.Image:
    """An RGB PIL image from a PIL image, a uint8 (H, W) / (H, W, 3) array, or a (C, H, W) tensor
    (uint8, or float in [0, 1]; 1 or 3 channels)."""
    if isinstance(image, Image.Image):
        return image.convert("RGB")
    if isinstance(image, torch.Tensor):
        t = image.detach().cpu()
        if t.is_floating_point():
            t = (t.clamp(0, 1) * 255).round().to(torch.uint8)
        if t.dim() == 3:
            t = t.permute(1, 2, 0)
        image = t.numpy()
    a = np.asarray(image)
    if a.dtype != np.uint8:
        raise ValueError(f"expected a uint8 image, got {a.dtype}")
    if a.ndim == 3 and a.shape[2] == 1:
        a = a[:, :, 0]
    if a.ndim not in (2, 3) or (a.ndim == 3 and a.shape[2] != 3):
        raise ValueError(f"expected an (H, W), (H, W, 3) or (C, H, W) image, got shape {a.shape}")
    return Image.fromarray(a).convert("RGB")


def draw_boxes(image, boxes, labels: Sequence[str] | None = None, colors=None, *, scale: int = 1,
               width: int = 1) -> Image.Image:
    """``image`` (see :func:`to_pil`) enlarged ``scale`` times (nearest, so pixels stay visible) with
    ``boxes`` ((N, 4) or (4,), x1 y1 x2 y2 in the image's pixels, edges) outlined ``width`` pixels wide
    just inside the box, each captioned by its entry of ``labels``. ``colors``: one RGB colour for all
    boxes, or one per box; default :data:`COLORS` in turn."""
    im = to_pil(image)
    if scale != 1:
        im = im.resize((im.width * scale, im.height * scale), Image.Resampling.NEAREST)
    b = as_boxes(boxes).reshape(-1, 4).double() * scale
    if colors is None:
        colors = [COLORS[i % len(COLORS)] for i in range(len(b))]
    elif len(colors) == 3 and all(isinstance(c, int) for c in colors):
        colors = [tuple(colors)] * len(b)
    draw = ImageDraw.Draw(im)
    for i, (x1, y1, x2, y2) in enumerate(b.tolist()):
        if not all(math.isfinite(v) for v in (x1, y1, x2, y2)) or x2 <= x1 or y2 <= y1:
            continue
        # Pillow's rectangle includes both corners' pixels: the box's last pixel is x2 - 1.
        shape = [round(x1), round(y1), max(round(x1), round(x2) - 1), max(round(y1), round(y2) - 1)]
        draw.rectangle(shape, outline=tuple(colors[i]), width=width)
        if labels is not None and labels[i]:
            # On a black backing, so that the caption reads over the image.
            at = (shape[0] + width + 1, shape[1] + width)
            draw.rectangle(draw.textbbox(at, str(labels[i])), fill=(0, 0, 0))
            draw.text(at, str(labels[i]), fill=tuple(colors[i]))
    return im


def sample_grid(images, boxes, labels=None, path: str | Path | None = None, n: int = 16, *,
                predicted=None, columns: int | None = None, scale: int = 4, pad: int = 2) -> Image.Image:
    """A grid of the first ``n`` images, each with its true box (green) and, given ``predicted``
    ((N, 4) or (N, k, 4)), the predicted ones (red, blue, ...); ``labels`` (a caption per image, e.g.
    its class name) over the true box. Written as a PNG to ``path`` (atomically) when given; returned.

    ``images``: (N, H, W) / (N, H, W, 3) uint8 arrays or (N, C, H, W) tensors; ``boxes``: (N, 4) or
    (N, k, 4), several true boxes an image."""
    count = min(n, len(images))
    if count == 0:
        raise ValueError("no images to draw")
    true = as_boxes(boxes)
    pred = as_boxes(predicted) if predicted is not None else None
    tiles = []
    for i in range(count):
        t = true[i].reshape(-1, 4)
        p = pred[i].reshape(-1, 4) if pred is not None else t[:0]
        caption = [str(labels[i]) if labels is not None else ""] + [""] * (len(t) - 1 + len(p))
        colors = [COLORS[0]] * len(t) + [COLORS[1 + j % (len(COLORS) - 1)] for j in range(len(p))]
        tiles.append(draw_boxes(images[i], torch.cat([t, p.to(t.dtype)]), caption, colors, scale=scale))
    columns = columns or math.ceil(math.sqrt(count))
    rows = math.ceil(count / columns)
    tw, th = max(t.width for t in tiles), max(t.height for t in tiles)
    grid = Image.new("RGB", (columns * (tw + pad) + pad, rows * (th + pad) + pad), (128, 128, 128))
    for i, tile in enumerate(tiles):
        grid.paste(tile, (pad + (i % columns) * (tw + pad), pad + (i // columns) * (th + pad)))
    if path is not None:
        atomic_write(path, lambda tmp: grid.save(tmp, format="PNG"))
    return grid
