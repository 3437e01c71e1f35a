"""Metrics: top-1 / top-5 error (the paper's numbers, Sec. 4), per-class accuracy, confusion."""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor


def topk_correct(probs: Tensor, labels: Tensor, k: int) -> Tensor:
    """Whether each label is among the ``k`` highest posteriors (k capped at the number of classes)."""
    k = min(k, probs.shape[1])
    return (probs.topk(k, dim=1).indices == labels.view(-1, 1)).any(dim=1)


def confusion_matrix(pred: Tensor, labels: Tensor, num_classes: int) -> Tensor:
    """counts[true, predicted]."""
    flat = labels.long() * num_classes + pred.long()
    return torch.bincount(flat, minlength=num_classes ** 2).view(num_classes, num_classes)


def metrics(probs: Tensor, labels: Tensor, classes: Sequence[str]) -> dict:
    """Top-1 / top-5 error and accuracy (percent; the paper reports errors), per-class accuracy and
    the confusion matrix."""
    probs, labels = probs.cpu(), labels.cpu().long()
    n = len(labels)
    if n == 0:
        raise ValueError("no images were evaluated")
    top1 = topk_correct(probs, labels, 1).double().mean().item() * 100
    top5 = topk_correct(probs, labels, 5).double().mean().item() * 100
    conf = confusion_matrix(probs.argmax(1), labels, len(classes))
    support = conf.sum(1)
    per_class = {c: {"images": int(s), "accuracy": (float(conf[i, i]) / float(s) * 100 if s else None)}
                 for i, (c, s) in enumerate(zip(classes, support.tolist()))}
    return {"images": n, "top1_error": 100 - top1, "top5_error": 100 - top5, "top1_accuracy": top1,
            "top5_accuracy": top5, "per_class": per_class, "confusion": conf.tolist()}
