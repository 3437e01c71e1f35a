"""What a training run learns: a task gives the loop its loss, what a batch carries besides the
images, the number it counts as correct, and the metric that the plateau and the best checkpoint
watch. The loop itself (``loop.py``) knows none of this.

:class:`Classification` is the paper's task (Sec. 3.1: multinomial logistic regression); the
localisation of Appendix A is a second task with its own targets (boxes) and loss
(:class:`vgg.training.localization.Localization`); :func:`task_for` picks one from a config.
"""

from __future__ import annotations

from typing import Protocol

import torch
import torch.nn.functional as F
from torch import Tensor

from .. import data
from ..models import VGG


class Task(Protocol):
    """The interface the loop uses. Batches are ``(images, targets)`` in training and
    ``(images, targets, indices)`` in validation; ``targets`` is whatever the task's batches carry
    (class labels, or labels with boxes), passed through untouched to :meth:`loss` and
    :meth:`correct`."""

    name: str
    metric: str  # the record's key stem: "accuracy" gives train_accuracy and val_accuracy
    label: str  # its short name in progress bars and epoch lines

    def build_model(self, config, classes: list[str], channels: int, stats: dict) -> VGG: ...

    def open_data(self, config) -> tuple: ...

    def train_batches(self, dataset, **kwargs): ...

    def val_batches(self, dataset, **kwargs): ...

    def outputs(self, model, images: Tensor) -> Tensor: ...

    def loss(self, outputs: Tensor, targets) -> Tensor: ...

    def correct(self, outputs: Tensor, targets) -> Tensor: ...

    def test(self, config, out, ctx, log, step: int) -> dict | None: ...


class Classification:
    """Image classification with the paper's loss; the metric is top-1 accuracy (%)."""

    name = "classification"
    metric = "accuracy"
    label = "acc"

    def build_model(self, config, classes: list[str], channels: int, stats: dict) -> VGG:
        from .build import build_model

        return build_model(config, classes, channels, stats)

    def open_data(self, config) -> tuple:
        """(train, val) of ``config.data``: the fixed val split, optionally a subset of classes."""
        from .build import open_data

        return open_data(config)

    def train_batches(self, dataset, **kwargs):
        return data.train_batches(dataset, **kwargs)

    def val_batches(self, dataset, **kwargs):
        return data.eval_batches(dataset, **kwargs)

    def outputs(self, model, images: Tensor) -> Tensor:
        """Validation's view: the net applied densely to the whole image at one test scale
        (Sec. 3.2), its score map averaged."""
        return model(images)

    def loss(self, outputs: Tensor, targets: Tensor) -> Tensor:
        """Summed multinomial logistic loss (Sec. 3.1), in fp32 whatever the autocast."""
        return F.cross_entropy(outputs.float(), targets, reduction="sum")

    def correct(self, outputs: Tensor, targets: Tensor) -> Tensor:
        return (outputs.argmax(1) == targets).sum()

    def test(self, config, out, ctx, log, step: int) -> dict | None:
        """``--test``: the best net, dense over three test scales with flips (Sec. 3.2, 4.2)."""
        from .held_out import run_test

        return run_test(config, out, ctx, log, step)


CLASSIFICATION = Classification()


def task_for(config) -> Task:
    """The task ``config.task`` names: classification (Sec. 3.1) or localisation (App. A)."""
    if config.task == "localization":
        from .localization import Localization

        return Localization(config.head, config.crop_size)
    return CLASSIFICATION


def sums(task: Task, outputs: Tensor, targets, loss: Tensor, n: int) -> Tensor:
    """(loss sum, correct, images) as float64: what the loop adds up over an epoch."""
    return torch.stack([loss.detach().double(), task.correct(outputs, targets).double(),
                        torch.tensor(float(n), dtype=torch.float64, device=loss.device)])
