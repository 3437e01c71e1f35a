"""Data sets with boxes (App. A): cluttered Fashion-MNIST (``fashion-mnist-loc``) and image folders
with annotation files, as the data sets of the rest of the package plus their ground-truth boxes.

A box data set *is* a :class:`TensorDataset` or a :class:`FolderDataset` (so classification trains
and evaluates on it unchanged: ``vgg train --data fashion-mnist-loc`` trains the classifier whose
scores rank the boxes, App. A.1) with three more things:

- ``gt_boxes`` (N, G, 4) float32: every box of each image, ``(x1, y1, x2, y2)`` in the original
  image's pixels (pixel edges, :mod:`vgg.localization.boxes`), padded with NaN to the most boxes an
  image has; ``gt_labels`` (N, G) int64: each box's class index, -1 for padding;
- ``problems``: the ``(where, reason)`` of every annotation entry skipped when the set was opened.

An image with no valid box of its own class cannot be trained or scored: it is left out of the data
set, and the reason is one of ``problems``. The training target of an image is the largest of the
boxes of its class (:meth:`BoxData.target_boxes`; ILSVRC images mostly have one object, and its
biggest instance is the one a single regressed box can be asked for); a prediction counts as correct
when it overlaps *any* box of the class by IoU > 0.5 (A.2).

Where a folder split's boxes are found: :func:`vgg.localization.find_annotations` (``--boxes PATH``,
or ``boxes.csv`` in the split folder, ``Annotations/<split>/``, ``Annotations/CLS-LOC/<split>/``,
``LOC_<split>_solution.csv`` beside it). ``--boxes`` names one split's file or folder: ``PATH`` alone
is the split being opened (``vgg evaluate``), ``SPLIT=PATH`` says which (``vgg train`` needs
``train=... val=...`` unless the files sit where they are looked for).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch
from torch import Tensor

from .datasets import TensorDataset
from .fashion_mnist import FASHION_MNIST_CLASSES
from .folders import FolderDataset, open_folder

__all__ = ["BoxData", "BoxFolderDataset", "BoxTensorDataset", "FASHION_MNIST_LOC", "boxes_for_split",
           "has_boxes", "is_fashion_mnist_loc", "open_box_dataset", "sample_picture"]

FASHION_MNIST_LOC = "fashion-mnist-loc"


def is_fashion_mnist_loc(data: str) -> bool:
    return data.lower().replace("_", "-") in (FASHION_MNIST_LOC, "fashionmnist-loc")


class BoxData:
    """What a box data set adds to a data set: ground-truth boxes per image (see the module)."""

    gt_boxes: Tensor
    gt_labels: Tensor
    problems: list[tuple[str, str]]

    def _set_boxes(self, gt_boxes: Tensor, gt_labels: Tensor, problems) -> None:
        n = len(self.labels)
        if gt_boxes.dim() != 3 or gt_boxes.shape[0] != n or gt_boxes.shape[2] != 4 or \
                gt_labels.shape != gt_boxes.shape[:2]:
            raise ValueError(f"expected gt_boxes ({n}, G, 4) and gt_labels ({n}, G), got "
                             f"{tuple(gt_boxes.shape)} and {tuple(gt_labels.shape)}")
        own = gt_labels == self.labels[:, None]
        if n and not own.any(1).all():
            i = int((~own.any(1)).nonzero()[0])
            raise ValueError(f"image {i} of {self.name} {self.split} has no box of its class")
        self.gt_boxes, self.gt_labels = gt_boxes.float(), gt_labels.long()
        self.problems = list(problems)
        self._targets: Tensor | None = None

    def image_sizes(self) -> Tensor:
        """(N, 2) int64: every image's (height, width) in pixels, the frame of its boxes."""
        raise NotImplementedError

    def own_boxes(self, indices=None) -> Tensor:
        """(n, G, 4): each image's boxes of its own class, NaN elsewhere (the true-class criterion)."""
        idx = slice(None) if indices is None else torch.as_tensor(indices, dtype=torch.long)
        boxes, labels, own = self.gt_boxes[idx], self.gt_labels[idx], self.labels[idx]
        return torch.where((labels == own[:, None])[..., None], boxes, torch.full_like(boxes, math.nan))

    def target_boxes(self) -> Tensor:
        """(N, 4): each image's training target, the largest of its boxes of its own class."""
        if self._targets is None:
            own = self.own_boxes()
            areas = ((own[..., 2] - own[..., 0]) * (own[..., 3] - own[..., 1])).nan_to_num(-1.0)
            self._targets = own[torch.arange(len(own)), areas.argmax(1)]
        return self._targets


class BoxTensorDataset(BoxData, TensorDataset):
    """In-memory images with their boxes (cluttered Fashion-MNIST)."""

    def __init__(self, images: Tensor, labels: Tensor, classes: list[str], name: str, split: str,
                 gt_boxes: Tensor, gt_labels: Tensor, problems=()):
        TensorDataset.__init__(self, images, labels, classes, name, split)
        self._set_boxes(gt_boxes, gt_labels, problems)

    def image_sizes(self) -> Tensor:
        return torch.tensor(self.images.shape[-2:]).expand(len(self), 2)


class BoxFolderDataset(BoxData, FolderDataset):
    """Image files with their boxes (an image folder and its annotation files)."""

    def __init__(self, paths: list[str], labels: list[int], classes: list[str], name: str, split: str,
                 gt_boxes: Tensor, gt_labels: Tensor, problems=()):
        FolderDataset.__init__(self, paths, labels, classes, name, split)
        self._set_boxes(gt_boxes, gt_labels, problems)

    def image_sizes(self) -> Tensor:
        sizes = self.sizes()
        bad = [(self.paths[i], s) for i, s in enumerate(sizes) if isinstance(s, str)]
        if bad:
            raise ValueError(f"{bad[0][0]}: {bad[0][1]}")
        return torch.tensor(sizes, dtype=torch.int64).reshape(-1, 2)

    def subset(self, indices) -> BoxFolderDataset:
        idx = torch.as_tensor(list(indices), dtype=torch.long)
        return BoxFolderDataset([self.paths[i] for i in idx.tolist()], self.labels[idx].tolist(),
                                self.classes, self.name, self.split, self.gt_boxes[idx],
                                self.gt_labels[idx], self.problems)


def has_boxes(dataset) -> bool:
    return isinstance(dataset, BoxData)


def boxes_for_split(spec, split: str) -> str | None:
    """The ``--boxes`` value for one split: None, ``PATH`` (any split) or a list of ``PATH`` /
    ``SPLIT=PATH`` items (a ``SPLIT=`` item wins over a bare one)."""
    if spec is None:
        return None
    items = [spec] if isinstance(spec, (str, Path)) else list(spec)
    bare, named = [], {}
    for item in map(str, items):
        head, sep, tail = item.partition("=")
        if sep and head in ("train", "val", "test"):
            named[head] = tail
        else:
            bare.append(item)
    if len(bare) > 1:
        raise ValueError(f"--boxes: several paths without a split ({', '.join(bare)}); write "
                         "train=PATH val=PATH")
    return named.get(split, bare[0] if bare else None)


def _padded(per_image: Sequence[list[tuple[int, tuple]]]) -> tuple[Tensor, Tensor]:
    g = max((len(b) for b in per_image), default=1) or 1
    boxes = torch.full((len(per_image), g, 4), math.nan)
    labels = torch.full((len(per_image), g), -1, dtype=torch.long)
    for i, items in enumerate(per_image):
        for j, (label, box) in enumerate(items):
            boxes[i, j] = torch.tensor(box)
            labels[i, j] = label
    return boxes, labels


def open_box_dataset(data: str, split: str, *, limit: int | None = None, val_size: int = 5000,
                     seed: int = 0, boxes=None, strict: bool = False) -> BoxTensorDataset | BoxFolderDataset:
    """One split of a data set with boxes: ``fashion-mnist-loc`` (cluttered Fashion-MNIST, generated
    on first use and cached, :func:`vgg.localization.load_cluttered`; its val split holds out the same
    images as Fashion-MNIST's) or an image folder with annotations (see the module; ``boxes`` is the
    ``--boxes`` value). ``strict``: any annotation problem is an error listing them all; otherwise
    the bad entries are skipped and listed in ``problems``, and images left without a box of their
    class are left out."""
    if split not in ("train", "val", "test"):
        raise ValueError(f"split must be train, val or test, got {split!r}")
    if is_fashion_mnist_loc(data):
        from ..localization.cluttered import load_cluttered  # localization's data set, built on ours

        if split == "val" and val_size == 0:
            raise ValueError(f"{FASHION_MNIST_LOC} val split is empty (val_size=0)")
        canvases, gt, labels = load_cluttered(split, val_size=val_size, seed=seed, limit=limit)
        images = torch.from_numpy(np.array(canvases)).unsqueeze(1)
        y = torch.from_numpy(labels.astype(np.int64))
        return BoxTensorDataset(images, y, FASHION_MNIST_CLASSES, FASHION_MNIST_LOC, split,
                                torch.from_numpy(np.array(gt))[:, None], y[:, None].clone())
    from ..localization.annotations import load_boxes

    if data.lower().replace("_", "-") in ("fashion-mnist", "fashionmnist"):
        raise ValueError(f"{data} has no boxes: use {FASHION_MNIST_LOC} (its garments placed at random on "
                         "a cluttered canvas, with their boxes) or a folder with box annotations")
    folder = open_folder(data, split, limit=limit, strict=strict)
    names = [folder.classes[i] for i in folder.labels.tolist()]
    matched, problems = load_boxes(data, split, folder.paths, classes=folder.classes, labels=names,
                                   boxes=boxes_for_split(boxes, split), check_sizes=True,
                                   strict=strict and limit is None)
    if limit is not None:
        # The annotations of the images beyond the limit match none of those kept: not a problem.
        problems = [(w, r) for w, r in problems if not r.endswith("which is not among the images")]
    index = {c: i for i, c in enumerate(folder.classes)}
    keep, per_image = [], []
    for i, anns in enumerate(matched):
        items = [(index[a.label], a.box) for a in anns if a.label in index]
        if not any(label == int(folder.labels[i]) for label, _ in items):
            if anns:  # (an image without any box is already a problem of the matching)
                problems.append((folder.paths[i], f"no box of its class {names[i]!r}"))
            continue
        keep.append(i)
        per_image.append(items)
    if strict and problems:  # (with a limit: the problems of the images kept)
        lines = "\n".join(f"  {w}: {r}" for w, r in problems)
        raise ValueError(f"{len(problems)} problem(s) in the boxes of {Path(data) / split}:\n{lines}")
    if not keep:
        first = f"; first: {problems[0][0]}: {problems[0][1]}" if problems else ""
        raise ValueError(f"no image of {Path(data) / split} has a usable box ({len(problems)} "
                         f"problem(s){first})")
    gt_boxes, gt_labels = _padded(per_image)
    return BoxFolderDataset([folder.paths[i] for i in keep], folder.labels[keep].tolist(), folder.classes,
                            folder.name, split, gt_boxes, gt_labels, problems)


def sample_picture(dataset: BoxData, path: str | Path, n: int = 16, side: int = 128):
    """A PNG grid of the first ``n`` images of a box data set with their boxes drawn (green) and class
    names, each image shown at about ``side`` pixels (``vgg data DATA --draw PATH``)."""
    from ..localization.draw import sample_grid
    from .images import load_image

    count = min(n, len(dataset))
    images, boxes = [], []
    for i in range(count):
        if isinstance(dataset, TensorDataset):
            image = dataset.images[i]
        else:
            im = load_image(dataset.paths[i])
            image = torch.frombuffer(bytearray(im.tobytes()), dtype=torch.uint8).view(
                im.height, im.width, -1).permute(2, 0, 1)
        h, w = image.shape[-2:]
        f = side / max(h, w)
        if f < 1:  # big photographs shrink to the tile; small canvases are enlarged by sample_grid
            size = (max(1, round(h * f)), max(1, round(w * f)))
            image = torch.nn.functional.interpolate(image[None].float(), size=size, mode="bilinear",
                                                    antialias=True)[0].round().clamp(0, 255).byte()
            b = dataset.gt_boxes[i] * torch.tensor([size[1] / w, size[0] / h] * 2)
        else:
            b = dataset.gt_boxes[i]
        images.append(image)
        boxes.append(b[~b.isnan().any(1)])
    scale = max(1, side // max(max(x.shape[-2:]) for x in images))
    captions = [dataset.classes[int(dataset.labels[i])] for i in range(count)]
    # sample_grid takes one box count for all images: pad with NaN (not drawn).
    g = max(len(b) for b in boxes)
    padded = torch.stack([torch.cat([b, torch.full((g - len(b), 4), math.nan)]) for b in boxes])
    return sample_grid(images, padded, captions, path, n=count, scale=scale)
