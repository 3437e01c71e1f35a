"""Image folders: ``<root>/<split>/<class>/<image>`` as a :class:`FolderDataset` (classes sorted by
name, as torchvision's ImageFolder), the folder checks that run before anything else, and the search
for undecodable files (``vgg data --check``, ``--strict``)."""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import torch

from .datasets import ImageDataset
from .images import IMAGE_EXTENSIONS, BadImage, open_image, oriented_size
from .workers import _CheckReader, _loader


class FolderDataset(ImageDataset):
    """Images stored as files ``<split folder>/<class>/<image>``, decoded on demand."""

    channels = 3

    def __init__(self, paths: list[str], labels: list[int], classes: list[str], name: str, split: str):
        self.paths, self.classes, self.name, self.split = list(paths), list(classes), name, split
        self.labels = torch.tensor(labels, dtype=torch.int64)
        self._sizes: list[tuple[int, int] | str] | None = None
        self._loaders: dict = {}

    def subset(self, indices) -> FolderDataset:
        """A dataset of the given indices (same classes)."""
        return FolderDataset([self.paths[i] for i in indices], [int(self.labels[i]) for i in indices],
                             self.classes, self.name, self.split)

    def sizes(self) -> list[tuple[int, int] | str]:
        """Every image's upright (height, width) read from its header, or the reason it is unreadable."""
        if self._sizes is None:
            sizes: list[tuple[int, int] | str] = []
            for path in self.paths:
                try:
                    im, transpose = open_image(path)
                    sizes.append(oriented_size(im, transpose))
                    im.close()
                except BadImage as e:
                    sizes.append(str(e))
            self._sizes = sizes
        return self._sizes

    def __getstate__(self):  # workers need the paths, not the cached loaders
        return {**self.__dict__, "_loaders": {}}


def _list_classes(split_dir: Path) -> list[str]:
    return sorted(d.name for d in split_dir.iterdir() if d.is_dir() and not d.name.startswith("."))


def _list_images(class_dir: Path) -> list[str]:
    found = []
    for dirpath, dirnames, filenames in os.walk(class_dir, followlinks=True):
        dirnames[:] = sorted(d for d in dirnames if not d.startswith("."))
        found += [os.path.join(dirpath, f) for f in sorted(filenames)
                  if not f.startswith(".") and os.path.splitext(f)[1].lower() in IMAGE_EXTENSIONS]
    return found


def open_folder(root: str | Path, split: str, *, limit: int | None = None,
                strict: bool = False) -> FolderDataset:
    """One split of an image-folder root (``root/<split>/<class>/<image>``; classes sorted by name as
    torchvision's ImageFolder sorts them). See :func:`open_dataset`."""
    root = Path(root).expanduser()
    if not root.is_dir():
        raise FileNotFoundError(f"{root}: no such folder (expected a dataset root with train/ and val/, "
                                f"or 'fashion-mnist')")
    split_dir = root / split
    if not split_dir.is_dir():
        present = [s for s in ("train", "val", "test") if (root / s).is_dir()]
        raise FileNotFoundError(f"{split_dir}: no {split} folder in {root} (found: {present or 'none'})")
    classes = _list_classes(split_dir)
    if not classes:
        raise ValueError(f"{split_dir}: no class folders (expected {split_dir}/<class>/<image>)")
    for other in ("train", "val", "test"):
        other_dir = root / other
        if other != split and other_dir.is_dir():
            other_classes = _list_classes(other_dir)
            if other_classes != classes:
                only_here = sorted(set(classes) - set(other_classes))
                only_there = sorted(set(other_classes) - set(classes))
                raise ValueError(f"class folders differ between {split_dir} and {other_dir}: "
                                 f"only in {split}: {only_here}, only in {other}: {only_there}")
    per_class = []
    for c in classes:
        files = _list_images(split_dir / c)
        if not files:
            raise ValueError(f"{split_dir / c}: class folder with no images "
                             f"(looked for {', '.join(sorted(IMAGE_EXTENSIONS))})")
        per_class.append(files)
    paths, labels = [], []
    if limit is None:
        for label, files in enumerate(per_class):
            paths += files
            labels += [label] * len(files)
    else:
        # The first N images taken round-robin over the classes, so a quick run still sees every class.
        for i in range(max(len(f) for f in per_class)):
            for label, files in enumerate(per_class):
                if i < len(files) and len(paths) < limit:
                    paths.append(files[i])
                    labels.append(label)
    dataset = FolderDataset(paths, labels, classes, str(root), split)
    if strict:
        check_images(dataset)
    return dataset


def bad_images(dataset: FolderDataset, workers: int | None = None) -> Iterator[tuple[str, str]]:
    """Decode every image (in ``workers`` processes, default up to 8); yield (path, reason) of each
    one that cannot be used, in listing order."""
    workers = min(8, os.cpu_count() or 1) if workers is None else workers
    chunk = 16
    plan = [list(range(k, min(k + chunk, len(dataset)))) for k in range(0, len(dataset), chunk)]
    for results in _loader(_CheckReader(dataset.paths), plan, workers if len(dataset) > 64 else 0,
                           pin=False, seed=0):
        for path, reason in results:
            if reason is not None:
                yield path, reason


def check_images(dataset: FolderDataset, workers: int | None = None) -> None:
    """Decode every image now; raise ValueError naming the first bad file and why (``--strict``)."""
    for path, reason in bad_images(dataset, workers):
        raise ValueError(f"{path}: {reason}")

