"""The validation pass after every epoch of a run: its number drives the plateau and the best
checkpoint. (The test of the best checkpoint at the end is the task's: ``held_out.py`` for
classification.)"""

from __future__ import annotations

from contextlib import nullcontext

import torch

from .. import distributed
from ..evaluation.posteriors import caffe_pooling
from ..models import VGG
from .tasks import CLASSIFICATION, Task, sums


@torch.no_grad()
def validate(model: VGG, dataset, *, scale: int, batch_size: int, ctx: distributed.Context, amp: bool,
             channels_last: bool, workers: int = 0, task: Task = CLASSIFICATION, ceil_mode: bool = True
             ) -> dict:
    """Val loss and the task's metric (top-1 accuracy for classification), the net applied densely
    at one test scale Q (Sec. 3.2, 4.1), without flips, pooling as Caffe (the whole image seen;
    ``ceil_mode=False``: PyTorch's floor); the batches are shared out over the processes and the
    sums reduced."""
    model.eval()
    total = torch.zeros(3, dtype=torch.float64, device=ctx.device)
    batches = task.val_batches(dataset, scale=scale, batch_size=batch_size, workers=workers,
                               device=ctx.device)
    autocast = distributed.autocast(ctx.device, amp)
    for i, (images, targets, _) in enumerate(batches):
        if i % ctx.world_size != ctx.rank:
            continue
        x = model.normalization(images)
        if channels_last:
            x = x.contiguous(memory_format=torch.channels_last)
        with autocast, (caffe_pooling(model) if ceil_mode else nullcontext()):
            outputs = task.outputs(model, x)
        total += sums(task, outputs, targets, task.loss(outputs, targets), len(images))
    distributed.all_reduce_sum(total)
    loss, correct, n = total.tolist()
    return {"loss": loss / max(n, 1), task.metric: 100.0 * correct / max(n, 1), "images": int(n),
            "skipped": batches.skipped}
