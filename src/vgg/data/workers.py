"""The DataLoader side of image folders: the batches of jobs an epoch is planned as, the readers that
decode them in worker processes (each job carries everything a worker needs, randomness included),
the workers' seeding, and the persistent loader that serves every epoch."""

from __future__ import annotations

import functools
import random

import numpy as np
import torch

from .augment import augment_parameters
from .images import BadImage, decode_rescaled, decode_train_crop, load_image
from .sampling import _mix64


class _Plan:
    """A DataLoader batch sampler whose batches of jobs are set per epoch (so that persistent workers
    serve every epoch): each job carries everything the worker needs, randomness included."""

    def __init__(self, plan):
        self.plan = plan

    def __iter__(self):
        return iter(self.plan)

    def __len__(self):
        return len(self.plan)


def _worker_init(seed: int, worker_id: int) -> None:
    # Workers draw no random numbers of their own (every parameter comes with the job), but anything
    # that does gets a seed derived from the run's, not from the clock.
    torch.set_num_threads(1)
    s = _mix64(_mix64(seed + 0xC0FFEE) ^ worker_id)
    torch.manual_seed(s & ((1 << 63) - 1))
    np.random.seed(s & 0xFFFFFFFF)
    random.seed(s)


def _loader(reader, plan, workers: int, pin: bool, seed: int, collate=list, cache: dict | None = None,
            key=None):
    """Iterate ``collate([reader[job] for job in batch])`` over the plan's batches, in the main process
    (workers=0) or in a DataLoader with ``workers`` persistent, seeded processes (cached in ``cache``)."""
    if workers <= 0:
        return (collate([reader[job] for job in jobs]) for jobs in plan)
    loader = cache.get(key) if cache is not None else None
    if loader is None:
        loader = torch.utils.data.DataLoader(
            reader, batch_sampler=_Plan(plan), num_workers=workers, collate_fn=collate, pin_memory=pin,
            persistent_workers=cache is not None, worker_init_fn=functools.partial(_worker_init, seed),
            prefetch_factor=4)
        if cache is not None:
            cache[key] = loader
    loader.batch_sampler.plan = plan
    return iter(loader)


def _collate(items):
    """(uint8 tensor | None, label, position, path, reason) items -> good samples stacked + the bad."""
    good = [it for it in items if it[0] is not None]
    return {"images": torch.stack([it[0] for it in good]) if good else None,
            "labels": torch.tensor([it[1] for it in good], dtype=torch.int64),
            "positions": torch.tensor([it[2] for it in good], dtype=torch.int64),
            "bad": [(it[3], it[4]) for it in items if it[0] is None]}


class _TrainJobs:
    """An epoch's batches of training jobs (index, position, crop, S, u_y, u_x), each batch's random
    parameters drawn in one vectorised call as the DataLoader asks for it."""

    def __init__(self, plan, order, augment, seed, epoch):
        self.plan, self.order, self.augment, self.seed, self.epoch = plan, order, augment, seed, epoch

    def __len__(self):
        return len(self.plan)

    def __iter__(self):
        for positions in self.plan:
            p = augment_parameters(self.augment, self.seed, self.epoch, positions)
            yield list(zip(self.order[positions].tolist(), positions.tolist(),
                           [self.augment.crop_size] * len(positions), p["scale"].tolist(),
                           p["u_crop"][:, 0].tolist(), p["u_crop"][:, 1].tolist()))


class _TrainReader:
    def __init__(self, paths, labels):
        self.paths, self.labels = paths, labels

    def __getitem__(self, job):
        index, position, crop_size, scale, u_y, u_x = job
        try:
            crop = decode_train_crop(self.paths[index], crop_size, scale, u_y, u_x)
            return crop, self.labels[index], position, self.paths[index], None
        except BadImage as e:
            return None, self.labels[index], position, self.paths[index], str(e)


class _EvalReader:
    def __init__(self, paths, labels):
        self.paths, self.labels = paths, labels

    def __getitem__(self, job):
        index, scale, size = job
        try:
            image = decode_rescaled(self.paths[index], scale, size)
            return image, self.labels[index], index, self.paths[index], None
        except BadImage as e:
            return None, self.labels[index], index, self.paths[index], str(e)


class _CheckReader:
    def __init__(self, paths):
        self.paths = paths

    def __getitem__(self, i):
        try:
            load_image(self.paths[i])
            return self.paths[i], None
        except BadImage as e:
            return self.paths[i], str(e)

