"""Batch loaders: one training epoch (Sec. 3.1 augmentation, Sec. 3.3 a rank's slice of each global
batch) and one evaluation pass (every image rescaled to Q, Sec. 3.2), as :class:`Batches`.

In-memory data is augmented batched on the device; image folders are decoded in DataLoader workers
(:mod:`vgg.data.workers`). Float conversion, flip, lighting and normalisation run on the device,
batched. Every random choice is a function of (seed, epoch, position) (:mod:`vgg.data.sampling`),
so ``start_batch=k`` resumes exactly and any world size sees the same samples.
"""

from __future__ import annotations

import warnings
from collections.abc import Iterator

import numpy as np
import torch
from torch import Tensor

from ..models import Normalization
from .augment import (
    Augment,
    augment_parameters,
    crops_by_scale,
    lighting_shift,
    rescale_shorter,
    rescaled_size,
    resized_crops,
)
from .datasets import ImageDataset, TensorDataset
from .folders import FolderDataset
from .sampling import epoch_order
from .workers import _collate, _EvalReader, _loader, _TrainJobs, _TrainReader


class Batches:
    """One epoch (or one evaluation pass) of batches: iterable, ``len()`` = number of batches, and
    ``skipped``: the (path, reason) of every undecodable file met so far (each also warned)."""

    def __init__(self, length: int, generate):
        self._length, self._generate = length, generate
        self.skipped: list[tuple[str, str]] = []

    def __len__(self) -> int:
        return self._length

    def __iter__(self) -> Iterator:
        return self._generate(self)

    def _skip(self, path: str, reason: str) -> None:
        if (path, reason) not in self.skipped:
            self.skipped.append((path, reason))
            warnings.warn(f"skipped {path}: {reason}", stacklevel=3)


def pinned_transfers(device: torch.device) -> bool:
    """Whether batches bound for ``device`` go through page-locked host memory (CUDA: the copy then
    runs asynchronously, overlapping the GPU's work; a CPU-only torch cannot pin memory)."""
    return device.type == "cuda"


def _slice(positions: np.ndarray, rank: int, world_size: int) -> np.ndarray:
    """Rank r's contiguous share of a global batch (Sec. 2: each GPU a slice of the batch)."""
    return np.array_split(positions, world_size)[rank]


def _finish(crops: Tensor, flips: np.ndarray, alphas: np.ndarray, augment: Augment,
            normalization: Normalization, channels_last: bool) -> Tensor:
    """Device side of a training batch: flip, then ``normalization(pca_lighting(x))`` as one in-place
    pass over the floats (the colour shift folds into the mean: (x + shift - mean) / std).
    Nothing here waits for the device: the flipped rows are indices found on the host, and the small
    host tensors are copied without blocking (a CUDA step meets the host only where the loop says)."""
    if flips.any():
        rows = torch.from_numpy(np.flatnonzero(flips)).to(crops.device, non_blocking=True)
        crops[rows] = crops[rows].flip(-1)  # on the uint8 crops of folders: 4x less memory to move
    if channels_last:
        crops = crops.contiguous(memory_format=torch.channels_last)
    x = crops.float()
    mean = torch.tensor(normalization.mean, dtype=x.dtype).to(x.device, non_blocking=True)
    std = torch.tensor(normalization.std, dtype=x.dtype).to(x.device, non_blocking=True)
    offset = mean.expand(x.shape[0], -1)
    if augment.pca is not None and augment.lighting_std > 0:
        shift = lighting_shift(torch.from_numpy(alphas), augment.pca["eigval"], augment.pca["eigvec"])
        shift = shift.to(x.dtype).to(x.device, non_blocking=True)
        offset = offset - (shift.flip(1) if normalization.bgr else shift)
    if normalization.bgr:  # Caffe/Keras weights: BGR order (see Normalization)
        x = x.flip(1)
    return x.sub_(offset[:, :, None, None]).div_(std[None, :, None, None])


def train_batches(dataset: ImageDataset, *, augment: Augment, normalization: Normalization, batch_size: int,
                  seed: int, epoch: int, start_batch: int = 0, rank: int = 0, world_size: int = 1,
                  workers: int = 0, device="cpu", channels_last: bool = False,
                  drop_last: bool = True) -> Batches:
    """One training epoch of (images float32 normalised on ``device``, labels int64 on ``device``).

    ``batch_size`` is the global batch; rank r of ``world_size`` gets its contiguous slice of each.
    The order is a permutation seeded by (seed, epoch) and every random parameter of a sample depends
    on (seed, epoch, its position in the epoch) only, so ``start_batch=k`` resumes exactly at batch k
    and any world size sees the same samples. Augmentation follows Sec. 3.1 (see :class:`Augment`).

    ``workers`` DataLoader processes decode image folders (persistent across epochs, pinned memory on
    CUDA); in-memory data is augmented batched on ``device`` and needs none. An undecodable file is
    left out of its batch (warned, listed in ``Batches.skipped``); a batch with no readable file is
    left out of the epoch.
    """
    n = len(dataset)
    if batch_size < 1 or not 0 <= rank < world_size:
        raise ValueError(f"bad batch_size {batch_size} / rank {rank} / world_size {world_size}")
    if len(normalization.mean) != dataset.channels:
        raise ValueError(f"normalization has {len(normalization.mean)} channels, dataset {dataset.name} "
                         f"has {dataset.channels}")
    if augment.pca is not None and len(augment.pca["eigval"]) != dataset.channels:
        raise ValueError(f"pca has {len(augment.pca['eigval'])} channels, dataset has {dataset.channels}")
    length = n // batch_size if drop_last else -(-n // batch_size)
    if length == 0:
        raise ValueError(f"{dataset.name} {dataset.split}: {n} images is less than one batch of {batch_size}")
    if not 0 <= start_batch <= length:
        raise ValueError(f"start_batch {start_batch} outside the epoch's {length} batches")
    order = epoch_order(n, seed, epoch).numpy()
    device = torch.device(device)
    plan = [_slice(np.arange(k * batch_size, min((k + 1) * batch_size, n)), rank, world_size)
            for k in range(start_batch, length)]
    if isinstance(dataset, TensorDataset):
        gen = _tensor_train(dataset, plan, order, augment, normalization, seed, epoch, device, channels_last)
    else:
        gen = _folder_train(dataset, plan, order, augment, normalization, seed, epoch, device,
                            channels_last, workers)
    return Batches(length - start_batch, gen)


def _tensor_train(dataset: TensorDataset, plan, order, augment, normalization, seed, epoch, device,
                  channels_last):
    h, w = dataset.images.shape[-2:]
    pin = pinned_transfers(device)

    def generate(batches: Batches):
        for positions in plan:
            idx = torch.from_numpy(order[positions])
            p = augment_parameters(augment, seed, epoch, positions, h, w)
            src = dataset.images[idx]
            labels = dataset.labels[idx]
            if pin:
                src, labels = src.pin_memory(), labels.pin_memory()
            src = src.to(device, non_blocking=True).float()
            if augment.scale[0] >= min(h, w):  # every sample enlarged: one grid_sample, exact
                crops = resized_crops(src, torch.from_numpy(p["box"]), augment.crop_size)
            else:  # some shrink: antialiased rescale per distinct S, then one gather
                crops = crops_by_scale(src, p["scale"], p["u_crop"], augment.crop_size)
            yield (_finish(crops, p["flip"], p["alpha"], augment, normalization, channels_last),
                   labels.to(device, non_blocking=True))

    return generate


def _folder_train(dataset: FolderDataset, plan, order, augment, normalization, seed, epoch, device,
                  channels_last, workers):
    reader = _TrainReader(dataset.paths, dataset.labels.tolist())
    jobs = _TrainJobs(plan, order, augment, seed, epoch)
    pin = pinned_transfers(device)

    def generate(batches: Batches):
        loader = _loader(reader, jobs, workers, pin, seed, _collate, dataset._loaders,
                         ("train", workers, pin, seed))
        for batch in loader:
            for path, reason in batch["bad"]:
                batches._skip(path, reason)
            if batch["images"] is None:
                continue
            # Flip and lighting depend on the position only; the worker already drew S and the crop.
            p = augment_parameters(augment, seed, epoch, batch["positions"].numpy())
            crops = batch["images"].to(device, non_blocking=True)
            yield (_finish(crops, p["flip"], p["alpha"], augment, normalization, channels_last),
                   batch["labels"].to(device, non_blocking=True))

    return generate


def eval_batches(dataset: ImageDataset, *, scale: int, batch_size: int, workers: int = 0,
                 device="cpu") -> Batches:
    """Every image once, rescaled so its shorter side is ``scale`` (Q, Sec. 3.2), uncropped, as uint8
    (B, C, H, W) on ``device``, with labels and dataset indices: yields (images, labels, indices).
    Images whose rescaled sizes are equal are batched together."""
    if batch_size < 1 or scale < 1:
        raise ValueError(f"bad batch_size {batch_size} / scale {scale}")
    device = torch.device(device)
    n = len(dataset)
    if isinstance(dataset, TensorDataset):
        length = -(-n // batch_size)

        def generate(batches: Batches):
            for k in range(length):
                idx = torch.arange(k * batch_size, min((k + 1) * batch_size, n))
                src = dataset.images[idx].to(device, non_blocking=True)
                yield (rescale_shorter(src, scale), dataset.labels[idx].to(device, non_blocking=True),
                       idx.to(device, non_blocking=True))

        return Batches(length, generate)
    return _folder_eval(dataset, scale, batch_size, workers, device)


def _folder_eval(dataset: FolderDataset, scale: int, batch_size: int, workers: int, device) -> Batches:
    groups: dict[tuple[int, int], list[int]] = {}
    unreadable = []
    for i, size in enumerate(dataset.sizes()):
        if isinstance(size, str):
            unreadable.append((dataset.paths[i], size))
        else:
            groups.setdefault(rescaled_size(size[0], size[1], scale), []).append(i)
    # Images of one rescaled size form batches together (dense evaluation needs equal shapes).
    jobs = [[(i, scale, hw) for i in idx[k:k + batch_size]]
            for hw, idx in sorted(groups.items()) for k in range(0, len(idx), batch_size)]
    reader = _EvalReader(dataset.paths, dataset.labels.tolist())
    pin = pinned_transfers(device)

    def generate(batches: Batches):
        for path, reason in unreadable:
            batches._skip(path, reason)
        loader = _loader(reader, jobs, workers, pin, 0, _collate, dataset._loaders, ("eval", workers, pin))
        for batch in loader:
            for path, reason in batch["bad"]:
                batches._skip(path, reason)
            if batch["images"] is not None:
                yield (batch["images"].to(device, non_blocking=True),
                       batch["labels"].to(device, non_blocking=True),
                       batch["positions"].to(device, non_blocking=True))

    return Batches(len(jobs), generate)
