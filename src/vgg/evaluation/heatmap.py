"""Dense evaluation made visible (Sec. 3.2): the class score map of the whole image, as the soft-max
posterior of the image's top class at every position of the map, drawn over the image."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor

from ..data import rescale_shorter
from ..models import VGG
from .posteriors import caffe_pooling
from .predict import image_files, read_image
from .views import check_scales, default_scales, match_channels, train_scale


@torch.inference_mode()
def class_heatmap(model: VGG, image: Tensor, scale: int | None = None, ceil_mode: bool = True
                  ) -> tuple[Tensor, int, float]:
    """The dense score map of a uint8 (C, H, W) image rescaled to shorter side ``scale`` (default
    the net's one test scale Q): returns the map of the top class's posterior (h, w) (the soft-max
    over classes at each position), the top class (of the spatially averaged scores, as dense
    evaluation decides) and its posterior."""
    q = scale or default_scales(model.crop_size, train_scale(model), single=True)[0]
    x = rescale_shorter(image, q).unsqueeze(0).to(next(model.parameters()).device)
    x = model.normalization(match_channels(x, model.in_channels))
    model.eval()
    if ceil_mode:
        with caffe_pooling(model):
            scores = model.score_map(x).float()[0]
    else:
        scores = model.score_map(x).float()[0]
    mean = F.softmax(scores.mean(dim=(1, 2)), dim=0)
    top = int(mean.argmax())
    return F.softmax(scores, dim=0)[top].cpu(), top, float(mean[top])


def heat_colours(values: np.ndarray) -> np.ndarray:
    """A black-red-yellow-white ramp for values in [0, 1], (..., 3) uint8."""
    v = np.clip(values, 0.0, 1.0)
    rgb = np.stack([np.clip(3 * v, 0, 1), np.clip(3 * v - 1, 0, 1), np.clip(3 * v - 2, 0, 1)], axis=-1)
    return (rgb * 255).astype(np.uint8)


def draw_heatmap(image: Tensor, heat: Tensor, label: str = "", side: int = 224, alpha: float = 0.55):
    """The image (grey or RGB uint8 (C, H, W)) with ``heat`` (h, w, in [0, 1]) stretched over it; the
    map covers the rescaled image as the net saw it. Returns a PIL image of shorter side ``side``."""
    from PIL import Image, ImageDraw

    h, w = image.shape[-2:]
    k = max(1, side // min(h, w))
    picture = image.expand(3, -1, -1) if image.shape[0] == 1 else image[:3]
    picture = np.asarray(picture.permute(1, 2, 0).numpy(), dtype=np.float32)
    picture = np.kron(picture, np.ones((k, k, 1), dtype=np.float32))
    big = F.interpolate(heat[None, None].float(), size=picture.shape[:2], mode="nearest")[0, 0].numpy()
    blended = (1 - alpha) * picture + alpha * heat_colours(big).astype(np.float32)
    im = Image.fromarray(np.clip(blended, 0, 255).astype(np.uint8))
    if label:
        ImageDraw.Draw(im).text((3, 2), label, fill=(0, 255, 255))
    return im


def write_heatmaps(models: Sequence[VGG], inputs: Sequence[str | Path], folder: str | Path, *,
                   scale: int | None = None, ceil_mode: bool = True) -> tuple[list[dict], list]:
    """``vgg predict --heatmap DIR``: for each image file, ``DIR/<name>.png`` with the first net's
    score map of its top class. Returns one ``{"file", "heatmap", "class", "probability", "map"}``
    per image, and the (file, reason) of the unreadable ones."""
    model = models[0]
    if scale is not None:
        check_scales([scale], model.crop_size, model.arch)
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    classes = list(model.classes or [str(i) for i in range(model.num_classes)])
    written, skipped, used = [], [], set()
    for path in image_files(inputs):
        try:
            image = read_image(path, model.in_channels)
        except ValueError as e:
            skipped.append((str(path), str(e)))
            continue
        heat, top, p = class_heatmap(model, image, scale, ceil_mode)
        stem, k = path.stem, 1
        while stem in used:
            k += 1
            stem = f"{path.stem}_{k}"
        used.add(stem)
        target = folder / f"{stem}.png"
        draw_heatmap(image, heat, f"{classes[top]} {p:.2f}").save(target, format="PNG")
        written.append({"file": str(path), "heatmap": str(target), "class": classes[top], "probability": p,
                        "map": [list(map(float, row)) for row in heat.tolist()]})
    return written, skipped
