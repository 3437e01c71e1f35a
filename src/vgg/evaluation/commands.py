"""The ``vgg evaluate`` and ``vgg predict`` commands: load the nets, run the library, print the
paper-style tables (:mod:`vgg.report`) and write the files."""

from __future__ import annotations

import json
import sys
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import torch

from ..data import open_dataset
from ..distributed import resolve_device
from ..models import VGG
from ..report import per_class_table, result_table, save_confusion_png, write_json
from .predict import predict
from .protocols import EvalResult, evaluate_protocols
from .views import PROTOCOLS


def load_nets(specs: Sequence[str], device, bf16: bool = False) -> list[VGG]:
    """Load every checkpoint, ready for inference: our file or run folder (its best checkpoint), a
    foreign weight file (torchvision, timm, Keras), a known name (``vgg16``) or a URL. ``bf16``: the
    CPU engine in bfloat16 (:func:`vgg.engine.attach_cpu_inference`; on a GPU ``amp`` does it)."""
    from ..engine import prepare_for_inference
    from ..weights import load_any

    if not specs:
        raise ValueError("give at least one checkpoint (or --pretrained NAME|PATH|URL)")
    return [prepare_for_inference(load_any(spec), device, bf16=bf16 and torch.device(device).type == "cpu")
            for spec in specs]


@dataclass
class EvalConfig:
    """``vgg evaluate``: nets (fused when several), data, split and protocol(s); outputs."""

    checkpoints: list[str]
    data: str = "fashion-mnist"
    split: str = "test"
    protocols: list[str] = field(default_factory=lambda: ["dense"])
    scales: list[int] | None = None
    single_scale: bool = False
    breakdown: bool = False
    flip: bool | None = None
    limit: int | None = None
    batch_size: int = 64
    workers: int = 0
    device: str | None = None
    amp: bool = True
    bf16: bool = False
    ceil_mode: bool = True
    json: str | None = None
    confusion: str | None = None
    per_class: bool = True
    progress: bool = True

    def __post_init__(self):
        problems = []
        if not self.checkpoints:
            problems.append("give at least one checkpoint (or --pretrained NAME|PATH|URL)")
        if self.split not in ("train", "val", "test"):
            problems.append(f"split must be train, val or test, got {self.split!r}")
        problems += [f"unknown protocol {p!r}; valid: {', '.join(PROTOCOLS)}" for p in self.protocols
                     if p not in PROTOCOLS]
        if self.batch_size < 1:
            problems.append(f"batch size must be >= 1, got {self.batch_size}")
        if self.workers < 0:
            problems.append(f"workers must be >= 0, got {self.workers}")
        if self.limit is not None and self.limit < 1:
            problems.append(f"limit must be >= 1, got {self.limit}")
        if self.scales is not None and any(q < 1 for q in self.scales):
            problems.append(f"scales must be positive, got {self.scales}")
        if problems:
            raise ValueError("; ".join(problems))


def default_confusion_path(config: EvalConfig, protocol: str) -> str:
    """confusion_SPLIT_PROTOCOL.png beside the JSON, else in the first checkpoint's run folder, else
    in the current folder."""
    name = f"confusion_{config.split}_{protocol}.png"
    first = Path(config.checkpoints[0])
    folder = Path(config.json).parent if config.json else first if first.is_dir() else Path(".")
    return str(folder / name)


def run_evaluate(config: EvalConfig, out=print) -> list[EvalResult]:
    """The ``vgg evaluate`` command: evaluate, print the paper-style table and per-class accuracy,
    write the confusion matrix PNG and (``json``) every number."""
    device = resolve_device(config.device)
    dataset = open_dataset(config.data, config.split, limit=config.limit)
    models = load_nets(config.checkpoints, device, config.bf16)
    results = evaluate_protocols(models, dataset, names=config.checkpoints, protocols=config.protocols,
                                 scales=config.scales, flip=config.flip, single_scale=config.single_scale,
                                 breakdown=config.breakdown, amp=config.amp, ceil_mode=config.ceil_mode,
                                 batch_size=config.batch_size, workers=config.workers,
                                 progress=config.progress)
    out(f"{dataset.name} {config.split}: {results[0].metrics['images']} images, "
        f"{len(results[0].classes)} classes, on {device}")
    out(result_table(results))
    last = results[-1]  # the per-class table and the confusion matrix are those of the last row
    if config.per_class:
        out(f"\nper-class accuracy ({last.protocol}):")
        out(per_class_table(last))
    confusion = config.confusion or default_confusion_path(config, last.protocol)
    title = (f"{' + '.join(Path(c).stem for c in config.checkpoints)}: {last.protocol}, Q={last.scales}, "
             f"{dataset.name} {config.split}")
    save_confusion_png(last.metrics["confusion"], last.classes, confusion, title)
    out(f"confusion matrix ({last.protocol}): {confusion}")
    for path, reason in last.skipped:
        out(f"skipped {path}: {reason}")
    if config.json:
        summaries = [r.summary() for r in results]
        write_json(summaries[0] if len(summaries) == 1 else summaries, config.json)
        out(f"wrote {config.json}")
    return results


def run_predict(checkpoints: Sequence[str], inputs: Sequence[str], *, protocol: str = "dense",
                scales: Sequence[int] | None = None, flip: bool | None = None, single_scale: bool = False,
                topk: int = 5, device: str | None = None, amp: bool = True, bf16: bool = False,
                ceil_mode: bool = True, as_json: bool = False, heatmap: str | None = None, out=print,
                err=None) -> list[dict]:
    """The ``vgg predict`` command: the top-k classes of each image; unreadable files are reported
    by name (on ``err``) and skipped. ``heatmap``: a folder for each image's class score map
    (:func:`.heatmap.write_heatmaps`)."""
    err = err or (lambda s: print(s, file=sys.stderr))
    models = load_nets(checkpoints, resolve_device(device), bf16)
    if heatmap:
        from .heatmap import write_heatmaps

        maps, _ = write_heatmaps(models, inputs, heatmap, scale=scales[0] if scales else None,
                                 ceil_mode=ceil_mode)
        err(f"wrote {len(maps)} score map(s) to {heatmap}")
    results, skipped = predict(models, inputs, names=checkpoints, protocol=protocol, scales=scales,
                               flip=flip, single_scale=single_scale, topk=topk, amp=amp,
                               ceil_mode=ceil_mode)
    for path, reason in skipped:
        err(f"skipped {path}: {reason}")
    grey = sum(1 for r in results if r.get("colour_to_grey"))
    if grey:
        err(f"note: {grey} colour image{'s were' if grey > 1 else ' was'} converted to grey: "
            f"{', '.join(checkpoints)} take{'s' if len(checkpoints) == 1 else ''} 1-channel (grey) images")
    if as_json:
        out(json.dumps({"protocol": protocol, "predictions": results,
                        "skipped": [{"file": p, "reason": r} for p, r in skipped]}, indent=2))
    else:
        for r in results:
            out(r["file"])
            for t in r["top"]:
                out(f"  {t['probability']:7.4f}  {t['class']}")
    if not results:
        raise ValueError("the file could not be read" if len(skipped) == 1 else
                         f"none of the {len(skipped)} files could be read")
    return results
