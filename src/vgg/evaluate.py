"""Every test protocol of the paper (Sec. 3.2, 4) as one rule: a method is a set of *views*
(net x scale x dense-or-crop x flip) and its prediction is the mean soft-max posterior over them.

A view is a small pure function of a uint8 batch already rescaled to its test scale Q:

- ``dense``: the whole image through the fully-convolutional net, whose class score map is spatially
  averaged (``model(x)`` does that, Sec. 3.2);
- ``centre``: one centre crop of the crop size (what the libraries report, at Q = 256/224 x crop);
- ``grid``: one of the 5x5 crops of the crop size on a regular grid whose outer crops touch the
  image's corners (Sec. 3.2: "50 crops per scale (5 x 5 regular grid with 2 flips)");
- each of them optionally horizontally flipped.

Posteriors are averaged with weights: within one method every view counts the same; dense+multi-crop
averages the dense and the multi-crop posteriors (Sec. 4.3, "averaging their soft-max outputs"), so
each half weighs 1/2 whatever its number of views; a fusion of nets averages the nets' posteriors
(Sec. 4.4). When the halves or nets have equally many views this is the plain mean over all views.
"""

from __future__ import annotations

import json
import math
import time
from collections.abc import Callable, Iterable, Iterator, Sequence
from contextlib import contextmanager, nullcontext
from dataclasses import dataclass, field
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from .models import VGG

PROTOCOLS = ("centre", "dense", "multi-crop", "dense+multi-crop")
GRID = 5  # Sec. 3.2: a 5 x 5 regular grid of crops per scale, each with its flip
LIBRARY_RATIO = 256 / 224  # torchvision & co: resize to 256, centre crop 224
SCALE_STEP = 32 / 224  # Sec. 4.2: Q in {S - 32, S, S + 32} at crop 224, proportionate elsewhere


# -- scales ------------------------------------------------------------------------------------------

def library_scale(crop_size: int) -> int:
    """The test scale of the libraries' centre-crop protocol: 256 at crop 224, 37 at crop 32."""
    return int(math.floor(crop_size * LIBRARY_RATIO + 0.5))


def scale_step(crop_size: int) -> int:
    """The step between the paper's three test scales: 32 at crop 224, crop/7 rounded elsewhere."""
    return max(1, int(math.floor(crop_size * SCALE_STEP + 0.5)))


def train_scale(model: VGG) -> tuple[int, int]:
    """The (Smin, Smax) the net was trained at, from ``model.info["train_scale"]``; (S, S) for fixed
    S. A net without it (foreign weights) is taken as trained at the libraries' S = 256/224 x crop."""
    value = model.info.get("train_scale")
    if value is None:
        s = library_scale(model.crop_size)
        return s, s
    if isinstance(value, (int, float)):
        value = [value, value]
    smin, smax = (int(v) for v in value)
    return min(smin, smax), max(smin, smax)


def default_scales(crop_size: int, scale: tuple[int, int], single: bool = False) -> list[int]:
    """The paper's test scales for a net trained at ``scale`` = (Smin, Smax) (Sec. 4.1, 4.2).

    Fixed S: {S - d, S, S + d} with d = round(32 x crop / 224) (d = 32 at crop 224, 5 at crop 32);
    a scale below the crop size is raised to the crop size and duplicates dropped, so the smallest
    test scale is never smaller than the net's input. Jittered: {Smin, (Smin + Smax) / 2, Smax}.
    ``single``: the paper's one test scale, Q = S, or (Smin + Smax) / 2 for jittered S (Table 3).
    """
    smin, smax = scale
    if smin == smax:
        d = scale_step(crop_size)
        scales = [smin] if single else [smin - d, smin, smin + d]
    else:
        mid = int(math.floor((smin + smax) / 2 + 0.5))
        scales = [mid] if single else [smin, mid, smax]
    return sorted({max(crop_size, q) for q in scales})


def check_scales(scales: Sequence[int], crop_size: int, name: str = "net") -> list[int]:
    scales = [int(q) for q in scales]
    if not scales:
        raise ValueError("no test scales given")
    small = [q for q in scales if q < crop_size]
    if small:
        raise ValueError(f"test scales {small} are smaller than the crop size {crop_size} of {name}; "
                         f"every scale Q must be >= {crop_size}")
    return sorted(set(scales))


# -- views: small pure functions over uint8 batches ----------------------------------------------------

@dataclass(frozen=True)
class View:
    """One way of showing a rescaled image to a net: ``kind`` is dense, centre or grid (``cell`` =
    (row, col) of the 5x5 grid), at test scale ``scale``, optionally flipped; ``weight`` is its share
    of the method's posterior."""

    scale: int
    kind: str
    cell: tuple[int, int] | None = None
    flip: bool = False
    weight: float = 1.0


def hflip(images: Tensor) -> Tensor:
    """Horizontal flip of a (N, C, H, W) batch."""
    return images.flip(-1)


def crop(images: Tensor, top: int, left: int, size: int) -> Tensor:
    """The ``size`` x ``size`` crop at (top, left)."""
    h, w = images.shape[-2:]
    if not (0 <= top <= h - size and 0 <= left <= w - size):
        raise ValueError(f"crop {size}x{size} at ({top}, {left}) does not fit a {h}x{w} image")
    return images[..., top:top + size, left:left + size]


def centre_offset(side: int, size: int) -> int:
    # torchvision's CenterCrop rounds the same way, so our centre protocol matches its numbers.
    return int(round((side - size) / 2.0))


def centre_crop(images: Tensor, size: int) -> Tensor:
    """The centre ``size`` x ``size`` crop."""
    h, w = images.shape[-2:]
    return crop(images, centre_offset(h, size), centre_offset(w, size), size)


def grid_offsets(side: int, size: int, n: int = GRID) -> list[int]:
    """Offsets of ``n`` crops of ``size`` evenly spread over ``side``: linspace(0, side - size, n)
    rounded (ties to even, as numpy): the first crop touches one border, the last the other, the
    grid is symmetric and its middle crop is the centre crop."""
    if side < size:
        raise ValueError(f"a {size}-pixel crop does not fit a side of {side}")
    if n == 1:
        return [centre_offset(side, size)]
    return [int(round(i * (side - size) / (n - 1))) for i in range(n)]


def grid_crop(images: Tensor, size: int, cell: tuple[int, int], n: int = GRID) -> Tensor:
    """Crop ``cell`` = (row, col) of the n x n regular grid of ``size`` crops."""
    h, w = images.shape[-2:]
    return crop(images, grid_offsets(h, size, n)[cell[0]], grid_offsets(w, size, n)[cell[1]], size)


def view_images(images: Tensor, view: View, crop_size: int) -> Tensor:
    """What the net sees of a batch rescaled to ``view.scale`` under ``view``."""
    if view.kind == "dense":
        out = images
    elif view.kind == "centre":
        out = centre_crop(images, crop_size)
    elif view.kind == "grid":
        out = grid_crop(images, crop_size, view.cell)
    else:
        raise ValueError(f"unknown view kind {view.kind!r}; valid: dense, centre, grid")
    return hflip(out) if view.flip else out


def _views(scales: Sequence[int], kinds: Sequence[tuple[str, tuple[int, int] | None]],
           flip: bool, total: float) -> list[View]:
    flips = (False, True) if flip else (False,)
    plain = [(q, k, c, f) for q in scales for k, c in kinds for f in flips]
    return [View(q, k, c, f, total / len(plain)) for q, k, c, f in plain]


def method_views(protocol: str, scales: Sequence[int], flip: bool = True) -> list[View]:
    """The views of one net under a protocol at the given test scales, weights summing to 1.

    centre: one centre crop per scale; dense: the whole image per scale; multi-crop: the 5x5 grid per
    scale; each with its flip when ``flip``. dense+multi-crop: both sets, each half weighing 1/2.
    """
    if protocol not in PROTOCOLS:
        raise ValueError(f"unknown protocol {protocol!r}; valid: {', '.join(PROTOCOLS)}")
    grid = [("grid", (r, c)) for r in range(GRID) for c in range(GRID)]
    if protocol == "centre":
        return _views(scales, [("centre", None)], flip, 1.0)
    if protocol == "dense":
        return _views(scales, [("dense", None)], flip, 1.0)
    if protocol == "multi-crop":
        return _views(scales, grid, flip, 1.0)
    return _views(scales, [("dense", None)], flip, 0.5) + _views(scales, grid, flip, 0.5)


def default_flip(protocol: str) -> bool:
    """The libraries' centre crop is a single unflipped crop; the paper's protocols add flips."""
    return protocol != "centre"


def plan_views(models: Sequence[VGG], protocol: str, scales: Sequence[int] | None = None,
               flip: bool | None = None, single_scale: bool = False) -> list[list[View]]:
    """Each net's views: its own default scales (from its training scale; the libraries' 256/224
    scale for the centre protocol) unless ``scales`` overrides them."""
    flip = default_flip(protocol) if flip is None else flip
    plans = []
    for model in models:
        if scales:
            qs = check_scales(scales, model.crop_size, model.arch)
        elif protocol == "centre":
            qs = [library_scale(model.crop_size)]
        else:
            qs = default_scales(model.crop_size, train_scale(model), single=single_scale)
        plans.append(method_views(protocol, qs, flip))
    return plans


# -- posteriors ----------------------------------------------------------------------------------------

def match_channels(images: Tensor, channels: int) -> Tensor:
    """A grey batch for a colour net is repeated over three channels; a colour batch for a grey net
    (a Fashion-MNIST net on an image folder) becomes its luma, rounded as Pillow's ``convert("L")``
    (ITU-R 601-2); anything else must match."""
    c = images.shape[1]
    if c == channels:
        return images
    if c == 1:
        return images.expand(-1, channels, -1, -1)
    if c == 3 and channels == 1:
        if images.dtype == torch.uint8:
            rgb = images.to(torch.int32)
            luma = (rgb[:, 0:1] * 19595 + rgb[:, 1:2] * 38470 + rgb[:, 2:3] * 7471 + 0x8000) >> 16
            return luma.to(torch.uint8)
        return images[:, 0:1] * 0.299 + images[:, 1:2] * 0.587 + images[:, 2:3] * 0.114
    raise ValueError(f"the net expects {channels}-channel images, got {c} channels")


@contextmanager
def caffe_pooling(model: nn.Module):
    """Max-pooling that rounds its output size up, as Caffe's (which ran the paper's dense
    evaluation, Sec. 3.2) does, instead of PyTorch's rounding down. A side that is not a multiple of
    32 (37, 55, 73 at crop 32) is then seen whole, its last pixels in their own pooling window,
    rather than cut to its top-left multiple of 32. On multiples of 32 (every crop, and each of the
    paper's ImageNet test scales 224 ... 512) both give the same output."""
    pools = [m for m in model.modules() if isinstance(m, nn.MaxPool2d)]
    before = [p.ceil_mode for p in pools]
    for p in pools:
        p.ceil_mode = True
    try:
        yield model
    finally:
        for p, mode in zip(pools, before):
            p.ceil_mode = mode


def posterior(model: VGG, images: Tensor) -> Tensor:
    """Soft-max posterior (N, K) of a uint8 batch: normalise with the net's own preprocessing, take
    the spatially averaged score map (a crop's map is 1x1), soft-max in float32."""
    x = model.normalization(match_channels(images, model.in_channels))
    return F.softmax(model(x).float(), dim=1)


@torch.inference_mode()
def view_box(view: View, height: int, width: int, crop_size: int) -> tuple[int, int, int, int, bool]:
    """(top, left, height, width, flipped) of the pixels a view shows of a height x width image."""
    if view.kind == "dense":
        return 0, 0, height, width, view.flip
    if view.kind == "centre":
        top, left = centre_offset(height, crop_size), centre_offset(width, crop_size)
    elif view.kind == "grid":
        top = grid_offsets(height, crop_size)[view.cell[0]]
        left = grid_offsets(width, crop_size)[view.cell[1]]
    else:
        raise ValueError(f"unknown view kind {view.kind!r}; valid: dense, centre, grid")
    return top, left, crop_size, crop_size, view.flip


@torch.inference_mode()
def view_posteriors(model: VGG, images: Tensor, views: Sequence[View],
                    max_batch: int = 256) -> Tensor:
    """The weighted sum of the posteriors of ``views`` of a batch at one scale, (N, K).

    Views that show the same pixels (the 25 grid crops of an image no larger than the crop, the
    middle grid crop and the centre crop) run once with their weights added. Views of the same shape
    are stacked into one forward pass of at most ``max_batch`` images.
    """
    n, h, w = images.shape[0], images.shape[-2], images.shape[-1]
    total = torch.zeros(n, model.num_classes, device=images.device)
    unique: dict[tuple, tuple[View, float]] = {}
    for v in views:
        box = view_box(v, h, w, model.crop_size)
        first, weight = unique.get(box, (v, 0.0))
        unique[box] = (first, weight + v.weight)
    groups: dict[tuple[int, int], list[tuple[View, float]]] = {}
    for box, item in unique.items():
        groups.setdefault(box[2:4], []).append(item)
    per_pass = max(1, max_batch // max(1, n))
    for group in groups.values():
        for i in range(0, len(group), per_pass):
            chunk = group[i:i + per_pass]
            x = torch.cat([view_images(images, v, model.crop_size) for v, _ in chunk])
            p = posterior(model, x).view(len(chunk), n, -1)
            w = torch.tensor([weight for _, weight in chunk], device=p.device).view(-1, 1, 1)
            total += (p * w).sum(0)
    return total


Batches = Iterable[tuple[Tensor, Tensor, Tensor]]


@dataclass
class ScalePosteriors:
    """Each net's posteriors at each test scale over a data set, from one pass per scale.

    ``probs[(i, Q)]``: the weighted mean posterior of net i's views at scale Q, (N, K) float32
    (200 MB per net and scale on ImageNet val); ``weight[(i, Q)]``: those views' share of net i's
    plan; ``met``: the images seen at every scale (undecodable files are skipped by the loader);
    ``seconds[(i, Q)]``: net i's compute time at Q; ``data_seconds[Q]``: the time spent waiting for
    the rescaled images.
    """

    probs: dict[tuple[int, int], Tensor]
    weight: dict[tuple[int, int], float]
    met: Tensor
    seconds: dict[tuple[int, int], float]
    data_seconds: dict[int, float]

    def combine(self, nets: Sequence[int], scales: dict[int, Sequence[int]] | None = None) -> Tensor:
        """The fusion of ``nets`` (their posteriors averaged, Sec. 4.4), each over its ``scales[i]``
        (default: all of its scales) with the plan's weights renormalised: (N, K) float32."""
        total = None
        for i in nets:
            keys = [key for key in self.probs if key[0] == i and (scales is None or key[1] in scales[i])]
            if not keys:
                raise ValueError(f"net {i} has no posteriors at scales {scales[i] if scales else None}")
            w = sum(self.weight[key] for key in keys)
            part = sum(self.probs[key] * (self.weight[key] / w) for key in keys)
            total = part if total is None else total + part
        return (total / len(nets)).float()


def posteriors_by_scale(models: Sequence[VGG], plans: Sequence[Sequence[View]],
                        batches: Callable[[int], Batches], num_images: int, *, max_batch: int = 256,
                        amp: bool = True, ceil_mode: bool = False,
                        progress: Callable[[int], None] | None = None) -> ScalePosteriors:
    """Run every net's views over a data set: ``batches(Q)`` yields (uint8 images rescaled to Q,
    labels, dataset indices), and each scale's pass over the data serves every net and view at Q.
    ``amp``: on a GPU the nets run under bfloat16 autocast (soft-max and averages stay float32).
    ``ceil_mode``: dense views pool as Caffe did (:func:`caffe_pooling`)."""
    if len(models) != len(plans):
        raise ValueError("one view plan per net is needed")
    k = models[0].num_classes
    device = next(models[0].parameters()).device
    sync = torch.cuda.synchronize if device.type == "cuda" else (lambda: None)
    autocast = torch.autocast("cuda", dtype=torch.bfloat16, enabled=amp and device.type == "cuda")
    probs, weight, seconds, data_seconds = {}, {}, {}, {}
    for i, plan in enumerate(plans):
        for v in plan:
            weight[(i, v.scale)] = weight.get((i, v.scale), 0.0) + v.weight
    for key in weight:
        probs[key] = torch.zeros(num_images, k, dtype=torch.float32, device=device)
        seconds[key] = 0.0
    met = torch.zeros(num_images, dtype=torch.int64, device=device)
    scales = sorted({q for _, q in weight})
    for q in scales:
        data_seconds[q] = 0.0
        it = iter(batches(q))
        while True:
            start = time.perf_counter()
            try:
                images, _, index = next(it)
            except StopIteration:
                break
            images, index = images.to(device), index.to(device)
            data_seconds[q] += time.perf_counter() - start
            for i, (model, plan) in enumerate(zip(models, plans)):
                views = [v for v in plan if v.scale == q]
                if views:
                    start = time.perf_counter()
                    with autocast, (caffe_pooling(model) if ceil_mode else nullcontext()):
                        p = view_posteriors(model, images, views, max_batch) / weight[(i, q)]
                    probs[(i, q)].index_add_(0, index, p.float())
                    sync()
                    seconds[(i, q)] += time.perf_counter() - start
            met.index_add_(0, index, torch.ones_like(index))
            if progress:
                progress(len(index))
    return ScalePosteriors(probs, weight, met == len(scales), seconds, data_seconds)


def fused_posteriors(models: Sequence[VGG], plans: Sequence[Sequence[View]],
                     batches: Callable[[int], Batches], num_images: int, *, max_batch: int = 256,
                     amp: bool = True, ceil_mode: bool = False,
                     progress: Callable[[int], None] | None = None) -> tuple[Tensor, Tensor]:
    """The (num_images, K) mean posterior of every net's views over a data set (nets averaged),
    and the mask of images met at every scale; see :func:`posteriors_by_scale`."""
    sp = posteriors_by_scale(models, plans, batches, num_images, max_batch=max_batch, amp=amp,
                             ceil_mode=ceil_mode, progress=progress)
    return sp.combine(range(len(models))), sp.met


# -- metrics -------------------------------------------------------------------------------------------

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


def save_confusion_png(confusion: Sequence[Sequence[int]], classes: Sequence[str], path: str | Path,
                       title: str = "") -> Path:
    """Row-normalised confusion matrix (true class down, predicted across) as a PNG."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    conf = torch.tensor(confusion, dtype=torch.float64)
    rates = conf / conf.sum(1, keepdim=True).clamp(min=1)
    k = len(classes)
    side = min(16.0, max(5.0, 0.45 * k + 2))
    fig = Figure(figsize=(side, side))
    FigureCanvasAgg(fig)
    ax = fig.add_subplot()
    im = ax.imshow(rates.numpy(), cmap="Blues", vmin=0, vmax=1)
    fig.colorbar(im, ax=ax, fraction=0.046, pad=0.04, label="fraction of the true class")
    if k <= 40:  # beyond that the names are unreadable anyway
        ax.set_xticks(range(k), labels=list(classes), rotation=90, fontsize=8)
        ax.set_yticks(range(k), labels=list(classes), fontsize=8)
        if k <= 20:
            for i in range(k):
                for j in range(k):
                    if conf[i, j]:
                        ax.text(j, i, f"{int(conf[i, j])}", ha="center", va="center", fontsize=7,
                                color="white" if rates[i, j] > 0.5 else "black")
    ax.set_xlabel("predicted")
    ax.set_ylabel("true")
    ax.set_title(title, fontsize=9)
    fig.tight_layout()
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=100)
    return path


# -- class lists ---------------------------------------------------------------------------------------

def _describe_difference(a: Sequence[str], b: Sequence[str]) -> str:
    if len(a) != len(b):
        how = f"{len(a)} classes vs {len(b)}"
    else:
        i = next(i for i, (x, y) in enumerate(zip(a, b)) if x != y)
        how = f"class {i} is {a[i]!r} vs {b[i]!r}"
    only_a, only_b = [c for c in a if c not in set(b)], [c for c in b if c not in set(a)]
    if only_a:
        how += f"; only in the first: {', '.join(map(str, only_a[:5]))}" + ("..." if len(only_a) > 5 else "")
    if only_b:
        how += f"; only in the second: {', '.join(map(str, only_b[:5]))}" + ("..." if len(only_b) > 5 else "")
    if not only_a and not only_b and len(a) == len(b):
        how += " (same names, different order)"
    return how


def common_classes(models: Sequence[VGG], names: Sequence[str],
                   data_classes: Sequence[str] | None = None, data_name: str = "the data") -> list[str]:
    """The class list shared by every net (and the data set): nets whose posteriors are averaged must
    agree class by class; the error says how they differ. A net without class names (``classes`` is
    None) agrees with any list of its length."""
    for model, name in zip(models, names):
        if model.classes is not None and len(model.classes) != model.num_classes:
            raise ValueError(f"{name} lists {len(model.classes)} class names for {model.num_classes} "
                             "outputs")
    first, k = names[0], models[0].num_classes
    for model, name in zip(models[1:], names[1:]):
        if model.num_classes != k:
            raise ValueError(f"class lists of {first} and {name} differ: {k} classes vs "
                             f"{model.num_classes}")
    named = [(n, list(m.classes)) for n, m in zip(names, models) if m.classes is not None]
    for name, classes in named[1:]:
        if classes != named[0][1]:
            raise ValueError(f"class lists of {named[0][0]} and {name} differ: "
                             f"{_describe_difference(named[0][1], classes)}")
    if data_classes is not None:
        data_classes = list(data_classes)
        if named and named[0][1] != data_classes:
            raise ValueError(f"the classes of {named[0][0]} and {data_name} differ: "
                             f"{_describe_difference(named[0][1], data_classes)}")
        if len(data_classes) != k:
            raise ValueError(f"{first} has {k} outputs but {data_name} has {len(data_classes)} classes")
        return data_classes
    return named[0][1] if named else [str(i) for i in range(k)]


# -- evaluation of a data set --------------------------------------------------------------------------

# Every protocol is the average of one or two components, each a full set of views of every net; a
# run asked for several protocols computes each component once (dense+multi-crop reuses both halves).
COMPONENTS = {"centre": ("centre",), "dense": ("dense",), "multi-crop": ("multi-crop",),
              "dense+multi-crop": ("dense", "multi-crop")}


@dataclass
class EvalResult:
    """Everything one evaluation measured; ``summary()`` is the JSON written by ``--json``."""

    protocol: str
    nets: list[dict]
    scales: list[int]
    flip: bool
    views: int
    metrics: dict
    seconds: float
    classes: list[str]
    split: str = ""
    skipped: list = field(default_factory=list)
    ceil_mode: bool = False
    probs: Tensor | None = field(default=None, repr=False)  # (images, K) posteriors of the method
    labels: Tensor | None = field(default=None, repr=False)

    @property
    def images_per_second(self) -> float:
        return self.metrics["images"] / self.seconds if self.seconds > 0 else float("inf")

    def summary(self) -> dict:
        m = self.metrics
        return {"protocol": self.protocol, "scales": self.scales, "flip": self.flip,
                "views_per_image": self.views, "ceil_pooling": self.ceil_mode, "nets": self.nets,
                "split": self.split,
                "images": m["images"], "top1_error": m["top1_error"], "top5_error": m["top5_error"],
                "top1_accuracy": m["top1_accuracy"], "top5_accuracy": m["top5_accuracy"],
                "seconds": self.seconds, "images_per_second": self.images_per_second,
                "classes": self.classes, "per_class": m["per_class"], "confusion": m["confusion"],
                "skipped": [[str(p), str(r)] for p, r in self.skipped]}


def describe_scale(scale: Sequence[int]) -> str:
    """S as the paper's tables write it: 256, or [256;512] for jittered S."""
    return str(scale[0]) if scale[0] == scale[1] else f"[{scale[0]};{scale[1]}]"


def evaluate_protocols(models: Sequence[VGG], dataset, *, names: Sequence[str] | None = None,
                       protocols: Sequence[str] = ("dense",), scales: Sequence[int] | None = None,
                       flip: bool | None = None, single_scale: bool = False, breakdown: bool = False,
                       batch_size: int = 64, workers: int = 0, amp: bool = True, ceil_mode: bool = False,
                       progress: bool = False) -> list[EvalResult]:
    """Evaluate one net, or the fusion of several, on a data set (from ``data.open_dataset``) under
    each of ``protocols``; see :func:`method_views` for the views and :func:`default_scales` for the
    test scales. Each scale's pass over the data is batched by image size (``data.eval_batches``).

    ``breakdown``: also every net alone, at its single test scale and at all its scales (Tables 3-5),
    before the fusion (Table 6); all rows come from the same forward passes.
    """
    from . import data

    if not models:
        raise ValueError("no nets to evaluate")
    bad = [p for p in protocols if p not in PROTOCOLS]
    if bad or not protocols:
        raise ValueError(f"unknown protocol {bad[0] if bad else None!r}; valid: {', '.join(PROTOCOLS)}")
    names = list(names or [m.arch for m in models])
    classes = common_classes(models, names, dataset.classes, f"data set {dataset.name}")
    needed = list(dict.fromkeys(c for p in protocols for c in COMPONENTS[p]))
    plans = {c: plan_views(models, c, scales, flip, single_scale) for c in needed}
    device = next(models[0].parameters()).device
    for model in models:
        model.eval()
    skipped: list = []
    bar = None
    if progress:
        from tqdm.auto import tqdm
        passes = sum(len({v.scale for plan in plans[c] for v in plan}) for c in needed)
        bar = tqdm(total=len(dataset) * passes, unit="img", desc="evaluate", dynamic_ncols=True)

    def batches(q: int) -> Iterator:
        it = data.eval_batches(dataset, scale=q, batch_size=batch_size, workers=workers, device=device)
        yield from it
        skipped.extend(s for s in getattr(it, "skipped", []) if s not in skipped)

    sp = {}
    for c in needed:
        if bar is not None:
            bar.set_description(c)
        sp[c] = posteriors_by_scale(models, plans[c], batches, len(dataset), max_batch=batch_size, amp=amp,
                                    ceil_mode=ceil_mode,
                                    progress=bar.update if bar is not None else None)
    if bar is not None:
        bar.close()
    labels = dataset.labels.to(device)
    everything = list(range(len(models)))

    def row(protocol: str, nets: list[int], single: bool) -> EvalResult:
        comps = COMPONENTS[protocol]
        chosen = {}  # (component, net) -> the scales of this row
        for c in comps:
            for i in nets:
                planned = sorted({v.scale for v in plans[c][i]})
                one = default_scales(models[i].crop_size, train_scale(models[i]), single=True)
                chosen[(c, i)] = one if single and set(one) <= set(planned) else planned
        # Sec. 4.3: dense and multi-crop combined by averaging their soft-max outputs
        prob = sum(sp[c].combine(nets, {i: chosen[(c, i)] for i in nets}) for c in comps) / len(comps)
        ok = torch.stack([sp[c].met for c in comps]).all(0)
        info = [{"checkpoint": names[i], "arch": models[i].arch, "crop_size": models[i].crop_size,
                 "train_scale": list(train_scale(models[i])),
                 "scales": sorted({q for c in comps for q in chosen[(c, i)]})} for i in nets]
        views = [v for c in comps for i in nets for v in plans[c][i] if v.scale in chosen[(c, i)]]
        used = sorted({v.scale for v in views})
        seconds = sum(sp[c].seconds[(i, q)] for (c, i), qs in chosen.items() for q in qs)
        seconds += sum(sp[c].data_seconds[q] for c in comps for q in {q for (c2, _), qs in chosen.items()
                                                                       if c2 == c for q in qs})
        return EvalResult(protocol, info, used, any(v.flip for v in views), len(views),
                          metrics(prob[ok], labels[ok], classes), seconds, classes, dataset.split,
                          list(skipped), ceil_mode, prob[ok].cpu(), labels[ok].cpu())

    rows: list[tuple[str, list[int], bool]] = []
    if breakdown:  # per net: its one-scale rows (Tables 3, 5), then its multi-scale rows (Tables 4, 5)
        for i in everything:
            one = set(default_scales(models[i].crop_size, train_scale(models[i]), single=True))
            for single in (True, False):
                for p in protocols:
                    planned = [{v.scale for v in plans[c][i]} for c in COMPONENTS[p]]
                    several = any(len(qs) > 1 for qs in planned)
                    if single and (not several or all(one <= qs for qs in planned)):
                        rows.append((p, [i], True))
                    elif not single and several:
                        rows.append((p, [i], False))
    if not breakdown or len(models) > 1:
        rows += [(p, everything, False) for p in protocols]
    return [row(*r) for r in rows]


def evaluate(models: VGG | Sequence[VGG], dataset, *, protocol: str = "dense", **kwargs) -> EvalResult:
    """Evaluate a net (or fuse several) on a data set under one protocol; keyword arguments as
    :func:`evaluate_protocols`."""
    models = [models] if isinstance(models, VGG) else list(models)
    return evaluate_protocols(models, dataset, protocols=[protocol], **kwargs)[0]


def batches_by_size(images: Sequence[Tensor], device=None) -> Callable[[int], Iterator]:
    """``batches(Q)`` over a list of uint8 (C, H, W) images of any sizes: each rescaled to shorter
    side Q, those of equal rescaled size stacked into one batch (dense evaluation needs one size per
    batch). Yields (images, dummy labels, indices into the list)."""
    from .data import rescale_shorter

    def batches(q: int) -> Iterator:
        rescaled = [rescale_shorter(x, q) for x in images]
        by_size: dict[tuple[int, int], list[int]] = {}
        for i, x in enumerate(rescaled):
            by_size.setdefault(tuple(x.shape[-2:]), []).append(i)
        for idx in by_size.values():
            labels = torch.zeros(len(idx), dtype=torch.long)
            yield torch.stack([rescaled[i] for i in idx]).to(device), labels, torch.tensor(idx)

    return batches


# -- prediction of image files -------------------------------------------------------------------------

IMAGE_SUFFIXES = {".png", ".jpg", ".jpeg", ".bmp", ".gif", ".webp", ".tif", ".tiff", ".ppm", ".pgm"}


def image_files(inputs: Sequence[str | Path]) -> list[Path]:
    """Files named directly, and the images (by suffix) under each named folder, sorted."""
    files: list[Path] = []
    for item in inputs:
        path = Path(item)
        if path.is_dir():
            files += sorted(p for p in path.rglob("*") if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES)
        else:
            files.append(path)
    return files


def read_image(path: str | Path, channels: int) -> Tensor:
    """Decode one image file as uint8 (C, H, W) the way the data pipeline does (upright by EXIF,
    any mode to RGB, decompression bombs refused): grey for a 1-channel net, RGB otherwise. An
    unreadable file raises ValueError with the reason."""
    from .data import BadImage, load_image

    path = Path(path)
    if not path.exists():
        raise ValueError("no such file")
    if path.is_dir():
        raise ValueError("is a folder")
    try:
        im = load_image(path)
    except BadImage as e:
        raise ValueError(str(e)) from None
    if channels == 1:
        im = im.convert("L")
    x = torch.frombuffer(bytearray(im.tobytes()), dtype=torch.uint8)
    return x.view(im.height, im.width, -1).permute(2, 0, 1).contiguous()


def predict(models: Sequence[VGG], inputs: Sequence[str | Path], *, names: Sequence[str] | None = None,
            protocol: str = "dense", scales: Sequence[int] | None = None, flip: bool | None = None,
            single_scale: bool = False, topk: int = 5, chunk: int = 64, amp: bool = True,
            ceil_mode: bool = False) -> tuple[list[dict], list[tuple[str, str]]]:
    """Class posteriors of image files (and the images of folders) under a protocol: returns one
    ``{"file", "top": [{"class", "probability"}]}`` per readable image and the (file, reason) of
    every unreadable one, which is skipped."""
    if topk < 1:
        raise ValueError(f"topk must be >= 1, got {topk}")
    names = list(names or [m.arch for m in models])
    classes = common_classes(models, names)
    plans = plan_views(models, protocol, scales, flip, single_scale)
    channels = max(m.in_channels for m in models)
    device = next(models[0].parameters()).device
    results, skipped = [], []
    files = image_files(inputs)
    if not files:
        raise ValueError(f"no image files in {', '.join(map(str, inputs))}")
    for start in range(0, len(files), chunk):
        loaded = []
        for path in files[start:start + chunk]:
            try:
                loaded.append((path, read_image(path, channels)))
            except ValueError as e:
                skipped.append((str(path), str(e)))
        if not loaded:
            continue
        batches = batches_by_size([x for _, x in loaded], device)
        probs, _ = fused_posteriors(models, plans, batches, len(loaded), amp=amp, ceil_mode=ceil_mode)
        top = probs.topk(min(topk, probs.shape[1]), dim=1)
        for (path, _), p, i in zip(loaded, top.values.tolist(), top.indices.tolist()):
            results.append({"file": str(path),
                            "top": [{"class": classes[j], "probability": v} for v, j in zip(p, i)]})
    return results, skipped


# -- reports -------------------------------------------------------------------------------------------

def result_table(results: Sequence[EvalResult]) -> str:
    """The paper's table form (Tables 3-6): net, train S, test Q, method, top-1/top-5 error, and the
    accuracies the libraries publish."""
    from .cli import table

    rows = []
    for r in results:
        net = " + ".join(Path(n["checkpoint"]).stem or n["checkpoint"] for n in r.nets)
        train = " / ".join(describe_scale(n["train_scale"]) for n in r.nets)
        test = " / ".join(",".join(map(str, n["scales"])) for n in r.nets)
        method = r.protocol + ("" if r.flip or r.protocol == "centre" else " (no flip)")
        m = r.metrics
        rows.append([net, train, test, method, r.views, f"{m['top1_error']:.2f}", f"{m['top5_error']:.2f}",
                     f"{m['top1_accuracy']:.2f}", f"{m['top5_accuracy']:.2f}", f"{r.images_per_second:.1f}"])
    return table(rows, ["net", "train S", "test Q", "method", "views", "top-1 err %", "top-5 err %",
                        "top-1 acc %", "top-5 acc %", "images/s"])


def per_class_table(result: EvalResult) -> str:
    from .cli import table

    rows = [[c, v["images"], "-" if v["accuracy"] is None else f"{v['accuracy']:.2f}"]
            for c, v in result.metrics["per_class"].items()]
    return table(rows, ["class", "images", "accuracy %"])


def write_json(obj, path: str | Path) -> Path:
    """Write JSON atomically (an interrupted run never leaves a torn file)."""
    from .weights import atomic_write

    text = json.dumps(obj, indent=2)
    return atomic_write(path, lambda tmp: tmp.write_text(text + "\n"))


# -- the commands --------------------------------------------------------------------------------------

def resolve_device(device: str | None) -> torch.device:
    """``auto`` (or None): the GPU when there is one, else the CPU."""
    if device in (None, "", "auto"):
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        dev = torch.device(device)
    except RuntimeError as e:
        raise ValueError(f"bad device {device!r}: {e}") from None
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise ValueError(f"device {device!r} asked for but CUDA is not available")
    return dev


def load_nets(specs: Sequence[str], device) -> list[VGG]:
    """Load every checkpoint, ready for inference: our file or run folder (its best checkpoint), a
    foreign weight file (torchvision, timm, Keras), a known name (``vgg16``) or a URL."""
    from .models import prepare_for_inference
    from .weights import load_any

    if not specs:
        raise ValueError("give at least one checkpoint (or --pretrained NAME|PATH|URL)")
    return [prepare_for_inference(load_any(spec), device) for spec in specs]


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
    ceil_mode: bool = False
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
    from . import data

    device = resolve_device(config.device)
    dataset = data.open_dataset(config.data, config.split, limit=config.limit)
    models = load_nets(config.checkpoints, device)
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
                topk: int = 5, device: str | None = None, amp: bool = True, ceil_mode: bool = False,
                as_json: bool = False, out=print,
                err=None) -> list[dict]:
    """The ``vgg predict`` command: the top-k classes of each image; unreadable files are reported
    by name (on ``err``) and skipped."""
    import sys

    err = err or (lambda s: print(s, file=sys.stderr))
    models = load_nets(checkpoints, resolve_device(device))
    results, skipped = predict(models, inputs, names=checkpoints, protocol=protocol, scales=scales,
                               flip=flip, single_scale=single_scale, topk=topk, amp=amp,
                               ceil_mode=ceil_mode)
    for path, reason in skipped:
        err(f"skipped {path}: {reason}")
    if as_json:
        out(json.dumps({"protocol": protocol, "predictions": results,
                        "skipped": [{"file": p, "reason": r} for p, r in skipped]}, indent=2))
    else:
        for r in results:
            out(r["file"])
            for t in r["top"]:
                out(f"  {t['probability']:7.4f}  {t['class']}")
    if not results:
        raise ValueError(f"none of the {len(skipped)} files could be read")
    return results
