"""Posteriors (Sec. 3.2, 4.3, 4.4): every view's soft-max posterior, averaged with weights.

Within one method every view counts the same; dense+multi-crop averages the dense and the
multi-crop posteriors (Sec. 4.3, "averaging their soft-max outputs"), so each half weighs 1/2
whatever its number of views; a fusion of nets averages the nets' posteriors (Sec. 4.4). When the
halves or nets have equally many views this is the plain mean over all views.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable, Sequence
from contextlib import contextmanager, nullcontext
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from .. import distributed
from ..models import VGG
from .views import View, match_channels, view_box, view_images


@contextmanager
def caffe_pooling(model: nn.Module):
    """Max-pooling that rounds its output size up, as Caffe's (which ran the paper's dense
    evaluation, Sec. 3.2) does, instead of PyTorch's rounding down: the default of every dense
    view. A side that is not a multiple of 32 is then seen whole, its last pixels in their own
    pooling window, rather than cut to its top-left multiple of 32: the long side of nearly every
    image (341 for a 4:3 image at Q = 256, 667 for 500x375 ImageNet images at Q = 512), and both
    sides at crop 32's scales (34, 37, 55 ...). On multiples of 32 (every crop) both agree."""
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
            w = torch.tensor([weight for _, weight in chunk]).to(p.device, non_blocking=True).view(-1, 1, 1)
            total += (p * w).sum(0)
    return total


Batches = Iterable[tuple[Tensor, Tensor, Tensor]]


class _ComputeClock:
    """Seconds of work per key. On CUDA a pair of events around each piece of work, read once at the
    end: the loop never waits for the GPU, so the next batch is decoded while it computes; elsewhere
    the wall clock (the CPU computes as it is called)."""

    def __init__(self, device: torch.device):
        self.device, self.seconds = device, {}
        self.events: list | None = [] if device.type == "cuda" else None

    def start(self):
        if self.events is None:
            return time.perf_counter()
        event = torch.cuda.Event(enable_timing=True)
        event.record(torch.cuda.current_stream(self.device))
        return event

    def stop(self, key, start) -> None:
        if self.events is None:
            self.seconds[key] = self.seconds.get(key, 0.0) + time.perf_counter() - start
            return
        end = torch.cuda.Event(enable_timing=True)
        end.record(torch.cuda.current_stream(self.device))
        self.events.append((key, start, end))

    def totals(self) -> dict:
        """Every key's seconds (on CUDA: waits once for the last piece of work)."""
        if self.events:
            self.events[-1][2].synchronize()
            for key, start, end in self.events:
                self.seconds[key] = self.seconds.get(key, 0.0) + start.elapsed_time(end) / 1000
            self.events = []
        return self.seconds


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
                        amp: bool = True, ceil_mode: bool = True,
                        progress: Callable[[int], None] | None = None) -> ScalePosteriors:
    """Run every net's views over a data set: ``batches(Q)`` yields (uint8 images rescaled to Q,
    labels, dataset indices), and each scale's pass over the data serves every net and view at Q.
    ``amp``: on a GPU the nets run under bfloat16 autocast (soft-max and averages stay float32;
    :func:`vgg.distributed.autocast`). ``ceil_mode``: dense views pool as Caffe did
    (:func:`caffe_pooling`; False: PyTorch's floor)."""
    if len(models) != len(plans):
        raise ValueError("one view plan per net is needed")
    k = models[0].num_classes
    device = next(models[0].parameters()).device
    autocast = distributed.autocast(device, amp)
    clock = _ComputeClock(device)
    probs, weight, data_seconds = {}, {}, {}
    for i, plan in enumerate(plans):
        for v in plan:
            weight[(i, v.scale)] = weight.get((i, v.scale), 0.0) + v.weight
    for key in weight:
        probs[key] = torch.zeros(num_images, k, dtype=torch.float32, device=device)
        clock.seconds[key] = 0.0
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
            images, index = images.to(device, non_blocking=True), index.to(device, non_blocking=True)
            data_seconds[q] += time.perf_counter() - start
            for i, (model, plan) in enumerate(zip(models, plans)):
                views = [v for v in plan if v.scale == q]
                if views:
                    start = clock.start()
                    with autocast, (caffe_pooling(model) if ceil_mode else nullcontext()):
                        p = view_posteriors(model, images, views, max_batch) / weight[(i, q)]
                    probs[(i, q)].index_add_(0, index, p.float())
                    clock.stop((i, q), start)
            met.index_add_(0, index, torch.ones_like(index))
            if progress:
                progress(len(index))
    return ScalePosteriors(probs, weight, met == len(scales), clock.totals(), data_seconds)


def fused_posteriors(models: Sequence[VGG], plans: Sequence[Sequence[View]],
                     batches: Callable[[int], Batches], num_images: int, *, max_batch: int = 256,
                     amp: bool = True, ceil_mode: bool = True,
                     progress: Callable[[int], None] | None = None) -> tuple[Tensor, Tensor]:
    """The (num_images, K) mean posterior of every net's views over a data set (nets averaged),
    and the mask of images met at every scale; see :func:`posteriors_by_scale`."""
    sp = posteriors_by_scale(models, plans, batches, num_images, max_batch=max_batch, amp=amp,
                             ceil_mode=ceil_mode, progress=progress)
    return sp.combine(range(len(models))), sp.met
