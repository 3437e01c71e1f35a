"""The data-set interface (:class:`ImageDataset`) and its in-memory kind (:class:`TensorDataset`);
image folders are :class:`vgg.data.folders.FolderDataset`."""

from __future__ import annotations

import torch
from torch import Tensor


class ImageDataset:
    """A labelled set of images: ``classes``, ``labels`` (int64, N), ``channels``, ``name``, ``split``.

    Subclasses hold the images in memory (:class:`TensorDataset`) or as files (:class:`FolderDataset`).
    """

    name: str
    split: str
    classes: list[str]
    labels: Tensor
    channels: int

    def __len__(self) -> int:
        return len(self.labels)

    def __repr__(self) -> str:
        return (f"{type(self).__name__}({self.name!r}, split={self.split!r}, images={len(self)}, "
                f"classes={len(self.classes)}, channels={self.channels})")


class TensorDataset(ImageDataset):
    """Images held in memory as one uint8 (N, C, H, W) tensor."""

    def __init__(self, images: Tensor, labels: Tensor, classes: list[str], name: str, split: str):
        if images.dtype != torch.uint8 or images.dim() != 4:
            raise ValueError(f"expected uint8 (N, C, H, W) images, got {images.dtype} {tuple(images.shape)}")
        if len(images) != len(labels):
            raise ValueError(f"{len(images)} images but {len(labels)} labels")
        self.images, self.labels = images, labels.long()
        self.classes, self.name, self.split = list(classes), name, split
        self.channels = images.shape[1]

    def subset(self, indices) -> TensorDataset:
        """A dataset of the given indices (same classes)."""
        idx = torch.as_tensor(list(indices), dtype=torch.int64)
        return TensorDataset(self.images[idx], self.labels[idx], self.classes, self.name, self.split)
