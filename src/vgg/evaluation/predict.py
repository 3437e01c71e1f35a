"""Prediction of image files: the evaluation rule (views, posteriors, fusion) on files and folders."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import torch
from torch import Tensor

from ..data import IMAGE_EXTENSIONS, BadImage, load_image
from ..models import VGG
from .posteriors import fused_posteriors
from .protocols import batches_by_size, common_classes
from .views import plan_views


def image_files(inputs: Sequence[str | Path]) -> list[Path]:
    """Files named directly, and the images (by suffix, ``vgg.data.IMAGE_EXTENSIONS``: the suffixes
    training reads) under each named folder, sorted."""
    files: list[Path] = []
    for item in inputs:
        path = Path(item)
        if path.is_dir():
            files += sorted(p for p in path.rglob("*")
                            if p.is_file() and p.suffix.lower() in IMAGE_EXTENSIONS)
        else:
            files.append(path)
    return files


def read_image(path: str | Path, channels: int) -> Tensor:
    """Decode one image file as uint8 (C, H, W) the way the data pipeline does (upright by EXIF,
    any mode to RGB, decompression bombs refused): grey for a 1-channel net, RGB otherwise. An
    unreadable file raises ValueError with the reason."""
    return decode_image(path, channels)[0]


def decode_image(path: str | Path, channels: int) -> tuple[Tensor, bool]:
    """:func:`read_image`, and whether a colour image was turned grey for a 1-channel net (an image
    whose three channels are equal everywhere counts as grey, whatever its file's mode)."""
    path = Path(path)
    if not path.exists():
        raise ValueError("no such file")
    if path.is_dir():
        raise ValueError("is a folder")
    try:
        im = load_image(path)
    except BadImage as e:
        raise ValueError(str(e)) from None
    x = torch.frombuffer(bytearray(im.tobytes()), dtype=torch.uint8)
    x = x.view(im.height, im.width, -1).permute(2, 0, 1).contiguous()
    if channels != 1:
        return x, False
    colour = x.shape[0] > 1 and not (torch.equal(x[0], x[1]) and torch.equal(x[1], x[2]))
    im = im.convert("L")
    return torch.frombuffer(bytearray(im.tobytes()), dtype=torch.uint8).view(1, im.height, im.width), colour


def predict(models: Sequence[VGG], inputs: Sequence[str | Path], *, names: Sequence[str] | None = None,
            protocol: str = "dense", scales: Sequence[int] | None = None, flip: bool | None = None,
            single_scale: bool = False, topk: int = 5, chunk: int = 64, amp: bool = True,
            ceil_mode: bool = True) -> tuple[list[dict], list[tuple[str, str]]]:
    """Class posteriors of image files (and the images of folders) under a protocol: returns one
    ``{"file", "top": [{"class", "probability"}]}`` per readable image (with ``"colour_to_grey":
    True`` where a colour image was shown grey to a 1-channel net) and the (file, reason) of every
    unreadable one, which is skipped."""
    if topk < 1:
        raise ValueError(f"topk must be >= 1, got {topk}")
    names = list(names or [m.arch for m in models])
    classes = common_classes(models, names)
    plans = plan_views(models, protocol, scales, flip, single_scale)
    channels = max(m.in_channels for m in models)
    device = next(models[0].parameters()).device
    results, skipped = [], []
    files = image_files(inputs)
    if not files:
        raise ValueError(f"no image files in {', '.join(map(str, inputs))}")
    for start in range(0, len(files), chunk):
        loaded, grey = [], set()
        for path in files[start:start + chunk]:
            try:
                x, colour = decode_image(path, channels)
            except ValueError as e:
                skipped.append((str(path), str(e)))
                continue
            loaded.append((path, x))
            if colour:
                grey.add(path)
        if not loaded:
            continue
        batches = batches_by_size([x for _, x in loaded], device)
        probs, _ = fused_posteriors(models, plans, batches, len(loaded), amp=amp, ceil_mode=ceil_mode)
        top = probs.topk(min(topk, probs.shape[1]), dim=1)
        for (path, _), p, i in zip(loaded, top.values.tolist(), top.indices.tolist()):
            results.append({"file": str(path),
                            "top": [{"class": classes[j], "probability": v} for v, j in zip(p, i)]})
            if path in grey:
                results[-1]["colour_to_grey"] = True
    return results, skipped
