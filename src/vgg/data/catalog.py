"""A data set by name: "fashion-mnist" or an image-folder root (:func:`open_dataset`), and what
``vgg data`` prints about one (:func:`describe_dataset`)."""

from __future__ import annotations

import numpy as np
import torch

from .boxes import is_fashion_mnist_loc, open_box_dataset
from .datasets import ImageDataset, TensorDataset
from .fashion_mnist import FASHION_MNIST_CLASSES, find_fashion_mnist, load_fashion_mnist, split_fashion_mnist
from .folders import FolderDataset, bad_images, open_folder
from .statistics import channel_statistics


def open_dataset(data: str, split: str, *, limit: int | None = None, val_size: int = 5000, seed: int = 0,
                 strict: bool = False) -> ImageDataset:
    """Open a split ("train", "val" or "test") of ``data``: "fashion-mnist", "fashion-mnist-loc" (its
    cluttered, translated version with boxes, :mod:`vgg.data.boxes`) or a folder root holding
    ``train/``, ``val/`` and optionally ``test/``, each with one subfolder of images per class.

    Fashion-MNIST's train split is the official 60,000 less a held-out val of ``val_size`` images
    drawn with ``seed``; test is the official 10,000. ``limit`` keeps the first N images of the split.
    Folder problems (missing folder, empty class, class lists differing between splits) raise before
    anything runs; ``strict=True`` also decodes every image now and raises on the first bad one.
    """
    if split not in ("train", "val", "test"):
        raise ValueError(f"split must be train, val or test, got {split!r}")
    if limit is not None and limit < 1:
        raise ValueError(f"limit must be >= 1, got {limit}")
    if is_fashion_mnist_loc(data):  # cluttered Fashion-MNIST (App. A), its boxes along
        return open_box_dataset(data, split, limit=limit, val_size=val_size, seed=seed)
    if data.lower().replace("_", "-") in ("fashion-mnist", "fashionmnist"):
        train_x, train_y, test_x, test_y = load_fashion_mnist()
        if split == "test":
            x, y = test_x, test_y
        else:
            train_idx, val_idx = split_fashion_mnist(val_size, seed)
            idx = train_idx if split == "train" else val_idx
            if len(idx) == 0:
                raise ValueError("fashion-mnist val split is empty (val_size=0)")
            x, y = train_x[idx], train_y[idx]
        if limit is not None:
            x, y = x[:limit], y[:limit]
        images = torch.from_numpy(np.array(x)).unsqueeze(1)  # a writable copy
        return TensorDataset(images, torch.from_numpy(y.astype(np.int64)), FASHION_MNIST_CLASSES,
                             "fashion-mnist", split)
    return open_folder(data, split, limit=limit, strict=strict)


def describe_dataset(data: str, *, check: bool = False, stats: bool = False, val_size: int = 5000,
                     seed: int = 0) -> dict:
    """What ``vgg data`` prints: for each split present, its images per class; with ``check`` every
    unreadable file and why; with ``stats`` the training set's channel statistics (mean, PCA)."""
    splits = {}
    for split in ("train", "val", "test"):
        try:
            ds = open_dataset(data, split, val_size=val_size, seed=seed)
        except FileNotFoundError:
            if split == "train":
                raise
            continue
        info = {"images": len(ds), "per_class": torch.bincount(ds.labels, minlength=len(ds.classes)).tolist()}
        if check and isinstance(ds, FolderDataset):
            info["bad"] = list(bad_images(ds))
        splits[split] = info
        if split == "train":
            classes, channels, name = ds.classes, ds.channels, ds.name
            statistics = channel_statistics(ds, seed=seed) if stats else None
    out = {"name": name, "classes": classes, "channels": channels, "splits": splits}
    if data.lower().replace("_", "-") in ("fashion-mnist", "fashionmnist"):
        out["files"] = str(find_fashion_mnist())
    if stats:
        out["statistics"] = statistics
    return out

