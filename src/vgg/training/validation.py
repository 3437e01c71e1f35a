"""Evaluation inside a run: the validation pass after every epoch (its number drives the plateau
and the best checkpoint) and the optional test of the best checkpoint at the end."""

from __future__ import annotations

from contextlib import nullcontext
from pathlib import Path

import torch

from .. import data, distributed
from ..models import VGG
from .build import select_classes
from .config import TrainConfig
from .tasks import CLASSIFICATION, Task, sums


@torch.no_grad()
def validate(model: VGG, dataset, *, scale: int, batch_size: int, ctx: distributed.Context, amp: bool,
             channels_last: bool, workers: int = 0, task: Task = CLASSIFICATION) -> dict:
    """Val loss and the task's metric (top-1 accuracy for classification), the net applied densely
    at one test scale Q (Sec. 3.2, 4.1), without flips; the batches are shared out over the
    processes and the sums reduced."""
    model.eval()
    total = torch.zeros(3, dtype=torch.float64, device=ctx.device)
    batches = task.val_batches(dataset, scale=scale, batch_size=batch_size, workers=workers,
                               device=ctx.device)
    autocast = torch.autocast("cuda", dtype=torch.bfloat16) if amp else nullcontext()
    for i, (images, targets, _) in enumerate(batches):
        if i % ctx.world_size != ctx.rank:
            continue
        x = model.normalization(images)
        if channels_last:
            x = x.contiguous(memory_format=torch.channels_last)
        with autocast:
            outputs = task.outputs(model, x)
        total += sums(task, outputs, targets, task.loss(outputs, targets), len(images))
    distributed.all_reduce_sum(total)
    loss, correct, n = total.tolist()
    return {"loss": loss / max(n, 1), task.metric: 100.0 * correct / max(n, 1), "images": int(n),
            "skipped": batches.skipped}


def run_test(config: TrainConfig, out: Path, ctx: distributed.Context, log, step: int) -> dict | None:
    """Evaluate the best checkpoint on the test split: dense evaluation over the paper's three test
    scales with flips (Sec. 3.2, 4.2). Folder data without a test/ split is skipped."""
    from ..evaluation import evaluate
    from ..weights import BEST, load_model

    if not ctx.main:
        return None
    try:
        test_set = data.open_dataset(config.data, "test", limit=config.limit, seed=config.seed,
                                     val_size=config.val_size, strict=config.strict)
    except FileNotFoundError as e:
        print(f"no test split to evaluate: {e}")
        return None
    if config.classes is not None:
        test_set = select_classes(test_set, config.classes)
    model = load_model(out, device=ctx.device)
    result = evaluate([model], test_set, names=[str(out / BEST)], protocol="dense", batch_size=256)
    summary = result.summary()
    record = {"event": "test", "step": step, "protocol": "dense", "scales": summary["scales"],
              "flip": summary["flip"], "top1_accuracy": summary["top1_accuracy"],
              "top5_accuracy": summary["top5_accuracy"], "images": summary["images"],
              "seconds": summary["seconds"]}
    if log is not None:
        log.write(record)
    print(f"test ({summary['images']} images, dense, Q={summary['scales']}, flips): top-1 accuracy "
          f"{summary['top1_accuracy']:.2f}%, top-5 {summary['top5_accuracy']:.2f}%", flush=True)
    return record
