"""``vgg evaluate`` and ``vgg predict`` for localisation nets (App. A.2): load the nets, run
:mod:`.localization`, print the table in the paper's form, write the JSON and the pictures."""

from __future__ import annotations

import json
import sys
from collections.abc import Sequence
from pathlib import Path

import torch

from ..distributed import resolve_device
from ..report import write_json
from .commands import load_nets
from .localization import (
    LOC_PROTOCOLS,
    TOP_K,
    LocResult,
    evaluate_localization,
    loc_scales,
    localization_table,
    localize,
)
from .predict import image_files, read_image
from .protocols import batches_by_size

__all__ = ["is_localization_checkpoint", "predict_boxes", "run_localization_evaluate",
           "run_localization_predict"]


def is_localization_checkpoint(spec: str) -> bool:
    """Whether ``spec`` is one of our checkpoints (file or run folder) of a localisation net."""
    from ..weights import read_metadata

    try:
        return bool((read_metadata(spec).get("info") or {}).get("localization"))
    except (ValueError, FileNotFoundError, OSError):
        return False  # a name, URL or foreign file: a classifier (or an error later, with its reason)


def run_localization_evaluate(checkpoints: Sequence[str], *, classifiers: Sequence[str] = (),
                              data: str | None = None, split: str = "val",
                              protocols: Sequence[str] = ("centre",), gt_class: bool = False,
                              scales: Sequence[int] | None = None, single_scale: bool = False,
                              flip: bool | None = None, limit: int | None = None, boxes=None,
                              strict: bool = False, batch_size: int = 64, workers: int = 0,
                              device: str | None = None, amp: bool = True, ceil_mode: bool = True,
                              json_path: str | None = None, progress: bool = True,
                              out=print) -> list[LocResult]:
    """``vgg evaluate LOC_RUN [--classifier CLS_RUN ...] [--gt-class]``: one row per protocol. The
    data defaults to the one the first net was trained on."""
    from ..data import open_box_dataset

    bad = [p for p in protocols if p not in LOC_PROTOCOLS]
    if bad:
        raise ValueError(f"localisation nets are evaluated under {' or '.join(LOC_PROTOCOLS)} (App. A.2), "
                         f"not {bad[0]!r}")
    dev = resolve_device(device)
    loc_nets = load_nets(checkpoints, dev)
    cls_nets = load_nets(classifiers, dev) if classifiers else []
    data = data or loc_nets[0].info.get("data")
    if not data:
        raise ValueError(f"{checkpoints[0]} does not record its data set: give --data")
    dataset = open_box_dataset(data, split, limit=limit, boxes=boxes, strict=strict)
    for where, reason in dataset.problems[:20]:
        out(f"skipped {where}: {reason}")
    results = [evaluate_localization(loc_nets, dataset, classifiers=cls_nets, names=checkpoints,
                                     classifier_names=classifiers, protocol=p, gt_class=gt_class,
                                     scales=scales, single_scale=single_scale, flip=flip,
                                     batch_size=batch_size, workers=workers, amp=amp, ceil_mode=ceil_mode,
                                     progress=progress) for p in protocols]
    out(f"{dataset.name} {split}: {results[0].images} images with boxes, {len(dataset.classes)} classes, "
        f"on {dev}; a box is correct at IoU > 0.5 (A.2)")
    out(localization_table(results))
    for path, reason in results[-1].skipped:
        out(f"skipped {path}: {reason}")
    if json_path:
        summaries = [r.summary() for r in results]
        write_json(summaries[0] if len(summaries) == 1 else summaries, json_path)
        out(f"wrote {json_path}")
    return results


def predict_boxes(loc_nets, classifiers, inputs: Sequence[str | Path], *, scales=None,
                  single_scale: bool = False, flip: bool = True, topk: int = TOP_K, amp: bool = True,
                  ceil_mode: bool = True, chunk: int = 64) -> tuple[list[dict], list[tuple[str, str]]]:
    """The dense protocol (A.2) on image files: one ``{"file", "size": [w, h], "predictions":
    [{"class", "probability", "score", "box": [x1, y1, x2, y2]}]}`` per readable image, boxes in the
    original image's pixels, ranked by the merged boxes' scores (``probability``: the classifiers'
    posterior of the class over every window and view); and the (file, reason) of each unreadable one."""
    if not classifiers:
        raise ValueError("a localisation net's boxes are ranked by a classifier's scores (A.1): give "
                         "--classifier CLS_RUN")
    if topk < 1:
        raise ValueError(f"topk must be >= 1, got {topk}")
    classes = list(loc_nets[0].classes or [])
    channels = max(m.in_channels for m in [*loc_nets, *classifiers])
    device = next(loc_nets[0].parameters()).device
    plans = [loc_scales(m, "dense", scales, single_scale) for m in loc_nets]
    files = image_files(inputs)
    if not files:
        raise ValueError(f"no image files in {', '.join(map(str, inputs))}")
    results, skipped = [], []
    for start in range(0, len(files), chunk):
        loaded = []
        for path in files[start:start + chunk]:
            try:
                loaded.append((path, read_image(path, channels)))
            except ValueError as e:
                skipped.append((str(path), str(e)))
        if not loaded:
            continue
        sizes = torch.tensor([list(x.shape[-2:]) for _, x in loaded])
        found = localize(loc_nets, classifiers, batches_by_size([x for _, x in loaded], device), sizes,
                         protocol="dense", plans=plans, flip=flip, k=max(topk, TOP_K), amp=amp,
                         ceil_mode=ceil_mode)
        for i, (path, image) in enumerate(loaded):
            top = [{"class": classes[c] if c < len(classes) else str(c),
                    "probability": float(found.probs[i, c]), "score": float(s),
                    "box": [round(float(v), 2) for v in b]}
                   for c, b, s in zip(found.labels[i][:topk].tolist(), found.boxes[i], found.scores[i])]
            results.append({"file": str(path), "size": [int(sizes[i, 1]), int(sizes[i, 0])],
                            "predictions": top, "image": image})
    return results, skipped


def draw_predictions(results: list[dict], folder: str | Path, shown: int = 3) -> list[Path]:
    """A PNG per image (``folder/<name>.png``) with its ``shown`` best boxes and their labels."""
    from ..localization.draw import COLORS, draw_boxes

    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    written, used = [], set()
    for r in results:
        name = Path(r["file"]).stem
        stem, k = name, 1
        while stem in used:
            k += 1
            stem = f"{name}_{k}"
        used.add(stem)
        image = r["image"]
        preds = r["predictions"][:shown]
        scale = max(1, 256 // max(image.shape[-2:]))
        boxes = torch.tensor([p["box"] for p in preds]).reshape(-1, 4)
        labels = [f"{p['class']} {p['probability']:.2f}" for p in preds]
        colors = [COLORS[1 + j % (len(COLORS) - 1)] for j in range(len(preds))]  # red, blue, ...
        picture = draw_boxes(image, boxes, labels, colors, scale=scale, width=2 if scale > 1 else 1)
        path = folder / f"{stem}.png"
        picture.save(path, format="PNG")
        written.append(path)
    return written


def run_localization_predict(checkpoints: Sequence[str], inputs: Sequence[str], *,
                             classifiers: Sequence[str] = (), scales=None, single_scale: bool = False,
                             flip: bool | None = None, topk: int = TOP_K, device: str | None = None,
                             amp: bool = True, ceil_mode: bool = True, as_json: bool = False,
                             draw: str | None = None, out=print, err=None) -> list[dict]:
    """``vgg predict LOC_RUN --classifier CLS_RUN IMAGES... [--draw DIR] [--json]``."""
    err = err or (lambda s: print(s, file=sys.stderr))
    dev = resolve_device(device)
    loc_nets = load_nets(checkpoints, dev)
    cls_nets = load_nets(classifiers, dev) if classifiers else []
    results, skipped = predict_boxes(loc_nets, cls_nets, inputs, scales=scales, single_scale=single_scale,
                                     flip=True if flip is None else flip, topk=topk, amp=amp,
                                     ceil_mode=ceil_mode)
    for path, reason in skipped:
        err(f"skipped {path}: {reason}")
    if draw:
        for path in draw_predictions(results, draw):
            err(f"wrote {path}")
    plain = [{k: v for k, v in r.items() if k != "image"} for r in results]
    if as_json:
        out(json.dumps({"protocol": "dense", "predictions": plain,
                        "skipped": [{"file": p, "reason": r} for p, r in skipped]}, indent=2))
    else:
        for r in plain:
            out(r["file"])
            for p in r["predictions"]:
                x1, y1, x2, y2 = p["box"]
                out(f"  {p['probability']:7.4f}  {p['class']:<16} box ({x1:.1f}, {y1:.1f}, {x2:.1f}, "
                    f"{y2:.1f})")
    if not results:
        raise ValueError(f"none of the {len(skipped)} files could be read")
    return plain
