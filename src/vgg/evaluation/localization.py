"""Appendix A.2's testing protocols for localisation nets, over a data set with boxes or image files.

Every protocol is one rule: each localisation net is shown views of the image (a test scale Q, the
centre crop or the whole image, optionally mirrored); each view gives a box per window (the centre
crop: one window; dense, Sec. 3.2: one window per position of the net's map) and class, in the
original image's pixels; the classification nets (``--classifier``, several are fused: their
soft-max maps averaged) score the same windows; the boxes of the top-5 classes of every view, net
and scale are merged by OverFeat's greedy procedure (:func:`vgg.localization.merge_per_class`: "the
union of their boxes" for several nets), each merged box rated by the sum of its windows' class
scores; each class keeps its best box and the classes are ranked by it.

- ``centre`` (protocol 1, Table 8): the centre crop at the one test scale Q = S, no flip. With
  ``gt_class`` the box of the true class (PCR) or the shared box (SCR) is scored alone, classification
  errors factored out: ``localization_error_gt_class``.
- ``dense`` (protocol 2, Table 9): the whole image at the net's test scales ({S - d, S, S + d}, or
  ``single_scale``: Q = S), with flips.
- top-k localisation error (ILSVRC, A.2): an image is correct when one of its k guesses has a true
  object's class and overlaps that object's box by IoU > 0.5; ``localization_error_top1`` and
  ``localization_error_top5``, in percent.

With ``gt_class`` and several views, the true class's boxes of all views are merged with equal
weights and the most supported merged box is kept.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field

import torch
import torch.nn.functional as F
from torch import Tensor

from ..data import center_crop, centre_offset, eval_batches
from ..localization.boxes import (
    decode,
    dense_windows,
    elementwise_iou,
    hflip_boxes,
    localization_correct,
    to_original,
)
from ..localization.merge import (
    MERGE_THRESHOLD,
    Detections,
    best_per_class,
    dense_boxes,
    greedy_merge,
    merge_per_class,
    top_k_predictions,
)
from ..models import VGG
from ..report import format_scale, table
from .posteriors import caffe_pooling
from .views import check_scales, default_scales, match_channels, train_scale

__all__ = ["LOC_PROTOCOLS", "LocResult", "Localized", "evaluate_localization", "localization_table",
           "localize", "loc_scales"]

LOC_PROTOCOLS = ("centre", "dense")
TOP_K = 5  # ILSVRC's five guesses; also OverFeat's top classes per view


def _info(model: VGG) -> dict:
    return (model.info or {}).get("localization") or {}


def loc_scales(model: VGG, protocol: str, scales: Sequence[int] | None = None,
               single_scale: bool = False) -> list[int]:
    """A localisation net's test scales: ``scales`` if given; the centre protocol's one Q = S (Smin +
    Smax) / 2 when jittered); dense: the paper's {S - d, S, S + d} (:func:`default_scales`)."""
    if scales:
        return check_scales(scales, model.crop_size, model.arch)
    return default_scales(model.crop_size, train_scale(model), single=single_scale or protocol == "centre")


@dataclass
class Localized:
    """Per image: the ranked guesses (``labels`` (k,), ``boxes`` (k, 4), ``scores`` (k,), original
    pixels), the true class's box (``gt_box``, NaN without labels), the classifiers' image posterior
    (``probs`` (C,), the mean over every view and window), and which images were met at every scale."""

    labels: list[Tensor]
    boxes: list[Tensor]
    scores: list[Tensor]
    gt_box: Tensor
    probs: Tensor | None
    met: Tensor
    seconds: float


def _box_map(model: VGG, x: Tensor) -> Tensor:
    """(N, K, 4, h, w): the net's box parameters at every window (K = classes for PCR, 1 for SCR)."""
    out = model.score_map(model.normalization(match_channels(x, model.in_channels))).float()
    return out.view(out.shape[0], -1, 4, *out.shape[-2:])


def _score_map(models: Sequence[VGG], x: Tensor) -> Tensor:
    """(N, C, h, w): the fused soft-max maps of the classifiers (posteriors averaged, Sec. 4.4)."""
    maps = [F.softmax(m.score_map(m.normalization(match_channels(x, m.in_channels))).float(), dim=1)
            for m in models]
    return sum(maps) / len(maps)


def _to_image(boxes: Tensor, offset: tuple[int, int], flipped: bool, width: int, factor) -> Tensor:
    """Boxes found in a view (a crop at ``offset`` of the rescaled, maybe mirrored image ``width``
    pixels wide) in the original image's pixels."""
    b = boxes + torch.tensor([offset[0], offset[1], offset[0], offset[1]], dtype=boxes.dtype)
    if flipped:
        b = hflip_boxes(b, width)
    return to_original(b, factor)


@torch.inference_mode()
def localize(loc_nets: Sequence[VGG], classifiers: Sequence[VGG], batches: Callable[[int], Iterator],
             sizes: Tensor, *, protocol: str = "dense", plans: Sequence[Sequence[int]],
             flip: bool = True, labels: Tensor | None = None, k: int = TOP_K,
             threshold: float = MERGE_THRESHOLD, amp: bool = True, ceil_mode: bool = True,
             progress: Callable[[int], None] | None = None) -> Localized:
    """Run the protocol over ``len(sizes)`` images: ``batches(Q)`` yields (uint8 images rescaled to
    shorter side Q, labels, indices), ``sizes`` (N, 2) are the original (height, width), ``plans[j]``
    loc net j's test scales. ``labels`` (N,): the true classes, for the true-class box."""
    if protocol not in LOC_PROTOCOLS:
        raise ValueError(f"unknown localisation protocol {protocol!r}; valid: {', '.join(LOC_PROTOCOLS)}")
    crop = loc_nets[0].crop_size
    n = len(sizes)
    device = next(loc_nets[0].parameters()).device
    autocast = torch.autocast("cuda", dtype=torch.bfloat16, enabled=amp and device.type == "cuda")
    detections: list[list[Detections]] = [[] for _ in range(n)]
    gt_dets: list[list[Tensor]] = [[] for _ in range(n)]
    num_classes = classifiers[0].num_classes if classifiers else None
    probs = torch.zeros(n, num_classes) if classifiers else None
    views = torch.zeros(n)
    met = torch.zeros(n, dtype=torch.long)
    scales = sorted({q for plan in plans for q in plan})
    start = time.perf_counter()
    pools = [caffe_pooling(m) for m in [*loc_nets, *classifiers]] if ceil_mode else []
    for p in pools:
        p.__enter__()
    try:
        for q in scales:
            nets = [j for j, plan in enumerate(plans) if q in plan]
            for images, _, index in batches(q):
                images, idx = images.to(device), index.cpu()
                for flipped in ((False, True) if flip else (False,)):
                    x = images.flip(-1) if flipped else images
                    h, w = x.shape[-2:]
                    offset = (0, 0)
                    if protocol == "centre":
                        offset = (centre_offset(w, crop), centre_offset(h, crop))
                        x = center_crop(x, crop)
                    with autocast:
                        maps = [_box_map(loc_nets[j], x).cpu() for j in nets]
                        scores = _score_map(classifiers, x).cpu() if classifiers else None
                    if scores is not None and scores.shape[-2:] != maps[0].shape[-2:]:
                        raise ValueError(f"the classifier's score map {tuple(scores.shape[-2:])} and the "
                                         f"localisation net's box map {tuple(maps[0].shape[-2:])} differ: "
                                         "they must share the crop size")
                    _collect(maps, scores, idx, sizes, offset, flipped, w, h, crop, k, labels, detections,
                             gt_dets)
                    if probs is not None:
                        probs[idx] += scores.mean(dim=(2, 3))
                    views[idx] += 1
                met[idx] += 1
                if progress:
                    progress(len(idx))
    finally:
        for p in reversed(pools):
            p.__exit__(None, None, None)
    out_labels, out_boxes, out_scores = [], [], []
    gt_box = torch.full((n, 4), float("nan"))
    for i in range(n):
        if classifiers and detections[i]:
            dets = Detections(*(torch.cat(t) for t in zip(*detections[i])))
            merged = merge_per_class(dets.boxes, dets.scores, dets.labels, threshold=threshold)
            best_boxes, best_scores = best_per_class(merged, num_classes)
            lab, box, sc = top_k_predictions(best_scores, best_boxes, k)
        else:
            lab, box, sc = torch.zeros(0, dtype=torch.long), torch.zeros(0, 4), torch.zeros(0)
        out_labels.append(lab)
        out_boxes.append(box)
        out_scores.append(sc)
        if gt_dets[i]:
            b = torch.cat(gt_dets[i])
            merged, _, _ = greedy_merge(b, torch.ones(len(b)), threshold=threshold)
            gt_box[i] = merged[0]
    if probs is not None:
        probs = probs / views.clamp(min=1)[:, None]
    return Localized(out_labels, out_boxes, out_scores, gt_box, probs, met == len(scales),
                     time.perf_counter() - start)


def _collect(maps, scores, idx, sizes, offset, flipped, width, height, crop, k, labels, detections,
             gt_dets) -> None:
    """One view's boxes of a batch, per image: the top-k classes' (for the merge) and the true class's."""
    mh, mw = maps[0].shape[-2:]
    windows = dense_windows(mh, mw, crop).reshape(-1, 4)
    for b, i in enumerate(idx.tolist()):
        factor = (width / float(sizes[i, 1]), height / float(sizes[i, 0]))
        for m in maps:
            params = m[b]  # (K, 4, h, w)
            if scores is not None:
                d = dense_boxes(params if params.shape[0] > 1 else params[0], scores[b], crop_size=crop, k=k)
                detections[i].append(d._replace(boxes=_to_image(d.boxes, offset, flipped, width, factor)))
            if labels is not None:
                c = int(labels[i]) if params.shape[0] > 1 else 0
                box = decode(params[c].reshape(4, -1).T, windows)
                gt_dets[i].append(_to_image(box, offset, flipped, width, factor))


# -- over a data set -----------------------------------------------------------------------------------

@dataclass
class LocResult:
    """One localisation evaluation; ``summary()`` is the JSON of ``vgg evaluate --json``."""

    protocol: str
    nets: list[dict]
    classifiers: list[dict]
    scales: list[int]
    flip: bool
    images: int
    errors: dict
    seconds: float
    split: str = ""
    skipped: list = field(default_factory=list)

    @property
    def images_per_second(self) -> float:
        return self.images / self.seconds if self.seconds > 0 else float("inf")

    def summary(self) -> dict:
        out = {"protocol": self.protocol, "scales": self.scales, "flip": self.flip, "images": self.images,
               "split": self.split, "nets": self.nets, "classifiers": self.classifiers}
        out.update({f"localization_error_{k}": v for k, v in self.errors.items()})
        out.update({"seconds": self.seconds, "images_per_second": self.images_per_second,
                    "skipped": [[str(p), str(r)] for p, r in self.skipped]})
        return out


def _net_record(model: VGG, name: str, scales: list[int]) -> dict:
    info = _info(model)
    finetune = (model.info.get("train_config") or {}).get("finetune")
    return {"checkpoint": name, "arch": model.arch, "crop_size": model.crop_size, "head": info.get("head"),
            "finetune": finetune, "train_scale": list(train_scale(model)), "scales": scales}


def evaluate_localization(loc_nets: Sequence[VGG], dataset, *, classifiers: Sequence[VGG] = (),
                          names: Sequence[str] | None = None, classifier_names: Sequence[str] | None = None,
                          protocol: str = "centre", gt_class: bool = False,
                          scales: Sequence[int] | None = None, single_scale: bool = False,
                          flip: bool | None = None, batch_size: int = 64, workers: int = 0, amp: bool = True,
                          ceil_mode: bool = True, threshold: float = MERGE_THRESHOLD,
                          progress: bool = False) -> LocResult:
    """A.2's protocols on a data set with boxes (:class:`vgg.data.BoxData`); see the module. Needs
    ``gt_class`` (the true class's box) or ``classifiers`` (top-1/top-5 localisation errors)."""
    if not loc_nets:
        raise ValueError("no localisation net to evaluate")
    if not hasattr(dataset, "own_boxes"):
        raise ValueError(f"{dataset.name} {dataset.split} has no boxes: open it with "
                         "vgg.data.open_box_dataset (fashion-mnist-loc, or a folder with box annotations)")
    if not gt_class and not classifiers:
        raise ValueError("give --gt-class (the true class's box: Table 8) or --classifier CLS_RUN (the "
                         "top-1/top-5 localisation error: Table 9)")
    names = list(names or [m.arch for m in loc_nets])
    classifier_names = list(classifier_names or [m.arch for m in classifiers])
    _check_nets(loc_nets, names, classifiers, classifier_names, dataset)
    flip = (protocol == "dense") if flip is None else flip
    plans = [loc_scales(m, protocol, scales, single_scale) for m in loc_nets]
    device = next(loc_nets[0].parameters()).device
    skipped: list = []

    def batches(q: int) -> Iterator:
        it = eval_batches(dataset, scale=q, batch_size=batch_size, workers=workers, device=device)
        yield from it
        skipped.extend(s for s in it.skipped if s not in skipped)

    bar = None
    if progress:
        from tqdm.auto import tqdm

        bar = tqdm(total=len(dataset) * len({q for p in plans for q in p}), unit="img", desc=protocol)
    found = localize(loc_nets, classifiers, batches, dataset.image_sizes(), protocol=protocol, plans=plans,
                     flip=flip, labels=dataset.labels if gt_class else None, amp=amp, ceil_mode=ceil_mode,
                     threshold=threshold, progress=bar.update if bar is not None else None)
    if bar is not None:
        bar.close()
    ok = found.met.nonzero().flatten().tolist()
    errors = {}
    if gt_class:
        iou = box_iou_own(found.gt_box[ok], dataset.own_boxes(ok))
        errors["gt_class"] = 100.0 * (1 - (iou > 0.5).float().mean().item()) if ok else float("nan")
    if classifiers:
        for k in (1, TOP_K):
            hits = [localization_correct(found.labels[i][:k], found.boxes[i][:k], *_truth(dataset, i))
                    for i in ok]
            errors[f"top{k}"] = 100.0 * (1 - sum(hits) / max(len(hits), 1))
    return LocResult(protocol, [_net_record(m, n, p) for m, n, p in zip(loc_nets, names, plans)],
                     [{"checkpoint": n, "arch": m.arch} for m, n in zip(classifiers, classifier_names)],
                     sorted({q for p in plans for q in p}), flip, len(ok), errors, found.seconds,
                     dataset.split, skipped)


def _truth(dataset, i: int) -> tuple[Tensor, Tensor]:
    """Image i's true objects: labels (G,) and boxes (G, 4), padding left out."""
    keep = dataset.gt_labels[i] >= 0
    return dataset.gt_labels[i][keep], dataset.gt_boxes[i][keep]


def box_iou_own(pred: Tensor, own: Tensor) -> Tensor:
    """(N,): the best IoU of each predicted box (N, 4) with its image's true boxes (N, G, 4; NaN pads
    and a NaN prediction give IoU 0)."""
    return elementwise_iou(pred[:, None], own).nan_to_num(0.0).amax(1) if len(pred) else torch.zeros(0)


def _check_nets(loc_nets, names, classifiers, classifier_names, dataset) -> None:
    for m, n in zip(loc_nets, names):
        info = _info(m)
        if not info:
            raise ValueError(f"{n} is a classification net, not a localisation net (give it with "
                             "--classifier)")
        if list(info.get("classes") or m.classes or []) != list(dataset.classes):
            raise ValueError(f"the classes of {n} and {dataset.name} differ")
        if m.crop_size != loc_nets[0].crop_size:
            raise ValueError(f"{n} takes {m.crop_size}-pixel crops, {names[0]} {loc_nets[0].crop_size}: "
                             "localisation nets evaluated together must share the crop size")
    for m, n in zip(classifiers, classifier_names):
        if _info(m):
            raise ValueError(f"{n} is a localisation net; --classifier takes a classification net")
        if m.num_classes != len(dataset.classes) or (m.classes is not None and list(m.classes) !=
                                                     list(dataset.classes)):
            raise ValueError(f"the classes of the classifier {n} and {dataset.name} differ")
        if m.crop_size != loc_nets[0].crop_size:
            raise ValueError(f"the classifier {n} takes {m.crop_size}-pixel crops, the localisation net "
                             f"{loc_nets[0].crop_size}: their windows must be the same (A.1)")


def localization_table(results: Sequence[LocResult]) -> str:
    """The paper's form (Tables 8 and 9): net(s), regression type, fine-tuned layers, train S, test Q,
    protocol, then the errors (%): with the true class, top-1 and top-5 localisation."""
    rows = []
    for r in results:
        nets = " + ".join(n["checkpoint"].rstrip("/").split("/")[-1] for n in r.nets)
        heads = " / ".join(str(n["head"]).upper() for n in r.nets)
        layers = " / ".join({"fc": "1st and 2nd FC", "all": "all"}.get(n["finetune"], "?") for n in r.nets)
        train = " / ".join(format_scale(n["train_scale"], sep=";") for n in r.nets)
        test = " / ".join(",".join(map(str, n["scales"])) for n in r.nets)
        method = r.protocol + (" + flip" if r.flip else "")
        err = {k: ("-" if k not in r.errors else f"{r.errors[k]:.2f}") for k in ("gt_class", "top1", "top5")}
        rows.append([nets, heads, layers, train, test, method, err["gt_class"], err["top1"], err["top5"],
                     f"{r.images_per_second:.1f}"])
    return table(rows, ["net", "regression", "fine-tuned layers", "train S", "test Q", "protocol",
                        "GT-class loc err %", "top-1 loc err %", "top-5 loc err %", "images/s"])
