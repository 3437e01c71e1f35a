"""The test of a classification run's best checkpoint on the held-out test split, at the end of
``vgg train --test`` (Sec. 3.2, 4.2); shared out over the processes under torchrun."""

from __future__ import annotations

from pathlib import Path

from .. import data, distributed
from ..models import VGG
from .build import select_classes
from .config import TrainConfig


def run_test(config: TrainConfig, out: Path, ctx: distributed.Context, log, step: int) -> dict | None:
    """Evaluate the best checkpoint on the test split: dense evaluation over the paper's three test
    scales with flips (Sec. 3.2, 4.2). Folder data without a test/ split is skipped. Every process
    evaluates its share of the images (every world_size-th), so that none waits for another's
    evaluation past the process group's timeout; rank 0 writes the record and returns it. (A
    localisation run's test is its task's: :meth:`vgg.training.localization.Localization.test`.)"""
    from ..weights import load_model

    try:
        test_set = data.open_dataset(config.data, "test", limit=config.limit, seed=config.seed,
                                     val_size=config.val_size, strict=config.strict)
    except FileNotFoundError as e:
        if ctx.main:
            print(f"no test split to evaluate: {e}")
        return None
    if config.classes is not None:
        test_set = select_classes(test_set, config.classes)
    if ctx.distributed:
        test_set = test_set.subset(range(ctx.rank, len(test_set), ctx.world_size))
    model = load_model(out, device=ctx.device)
    part = evaluate_share(model, test_set, config, out) if len(test_set) else None
    summary = merge_test_shares(distributed.all_gather_objects(part))
    if not ctx.main:
        return None
    record = {"event": "test", "step": step, "protocol": "dense", "scales": summary["scales"],
              "flip": summary["flip"], "top1_accuracy": summary["top1_accuracy"],
              "top5_accuracy": summary["top5_accuracy"], "images": summary["images"],
              "seconds": summary["seconds"]}
    if log is not None:
        log.write(record)
    print(f"test ({summary['images']} images, dense, Q={summary['scales']}, flips): top-1 accuracy "
          f"{summary['top1_accuracy']:.2f}%, top-5 {summary['top5_accuracy']:.2f}%", flush=True)
    return record


def evaluate_share(model: VGG, test_set, config: TrainConfig, out: Path) -> dict:
    """This process's part of the test: its summary and its top-1 / top-5 counts."""
    from ..evaluation import evaluate, topk_correct
    from ..weights import BEST

    result = evaluate([model], test_set, names=[str(out / BEST)], protocol="dense", batch_size=256,
                      ceil_mode=not config.floor_pooling, amp=config.amp, workers=config.workers)
    summary = result.summary()
    keep = ("scales", "flip", "images", "seconds", "top1_accuracy", "top5_accuracy")
    counts = {f"top{k}": int(topk_correct(result.probs, result.labels, k).sum()) for k in (1, 5)}
    return {**{key: summary[key] for key in keep}, **counts}


def merge_test_shares(parts: list) -> dict:
    """The test of every process's share as one: accuracies from the summed counts, the slowest
    process's seconds (one share's summary as it is)."""
    parts = [p for p in parts if p is not None]
    if len(parts) == 1:
        return parts[0]
    n = sum(p["images"] for p in parts)
    return {**parts[0], "images": n, "seconds": max(p["seconds"] for p in parts),
            "top1_accuracy": 100.0 * sum(p["top1"] for p in parts) / n,
            "top5_accuracy": 100.0 * sum(p["top5"] for p in parts) / n}
