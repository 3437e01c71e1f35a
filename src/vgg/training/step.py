"""One optimisation step's arithmetic: the module the loop calls (DDP, compile) and the gradients of
the mean loss over a process's share of the batch, with gradient accumulation (Sec. 3.1, 3.3)."""

from __future__ import annotations

from contextlib import nullcontext

import torch
from torch import nn

from .. import distributed
from ..models import VGG
from .tasks import Task, sums


def wrap(model: VGG, ctx: distributed.Context, compile_: bool):
    """The module the loop calls: DistributedDataParallel over the trainable parameters when several
    processes run (gradients averaged, Sec. 3.3), optionally compiled; and DDP's ``no_sync``."""
    net: nn.Module = model
    no_sync = None
    if ctx.distributed:
        from torch.nn.parallel import DistributedDataParallel

        net = DistributedDataParallel(model, device_ids=[ctx.device] if ctx.device.type == "cuda" else None)
        no_sync = net.no_sync
    if compile_:
        net = torch.compile(net)
    return net, no_sync


def forward_backward(net: nn.Module, task: Task, images, targets, micro: int, amp: bool, no_sync
                     ) -> torch.Tensor:
    """Gradients of the mean loss over this process's share of the batch, in chunks of ``micro``
    images (gradient accumulation); returns (loss sum, correct, images) as float64."""
    n = len(images)
    # ``amp`` was decided once for the run (distributed.training_amp): bf16 autocast of the forward.
    autocast = torch.autocast(images.device.type, dtype=torch.bfloat16, enabled=amp)
    out = torch.zeros(3, dtype=torch.float64, device=images.device)
    starts = list(range(0, n, micro))
    for i, s in enumerate(starts):
        x, y = images[s:s + micro], chunk(targets, s, micro)
        # DDP all-reduces gradients once, after the last chunk.
        sync = no_sync() if no_sync is not None and i < len(starts) - 1 else nullcontext()
        with sync:
            with autocast:
                outputs = net(x)
            loss = task.loss(outputs, y)
            (loss / n).backward()
        out += sums(task, outputs, y, loss, len(x))
    return out


def chunk(targets, start: int, size: int):
    """Rows start:start+size of a batch's targets: a tensor, or a tuple/dict of tensors."""
    if isinstance(targets, torch.Tensor):
        return targets[start:start + size]
    if isinstance(targets, dict):
        return {k: v[start:start + size] for k, v in targets.items()}
    return type(targets)(t[start:start + size] for t in targets)
