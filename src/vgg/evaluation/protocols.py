"""The paper's test protocols over a data set (Sec. 3.2, 4): every net's views at every test scale,
their posteriors combined per protocol, the rows of Tables 3-6 from the same forward passes."""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field

import torch
from torch import Tensor

from ..data import eval_batches, rescale_shorter
from ..models import VGG
from .metrics import metrics
from .posteriors import posteriors_by_scale
from .views import PROTOCOLS, default_scales, plan_views, train_scale

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
    ceil_mode: bool = True
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


def evaluate_protocols(models: Sequence[VGG], dataset, *, names: Sequence[str] | None = None,
                       protocols: Sequence[str] = ("dense",), scales: Sequence[int] | None = None,
                       flip: bool | None = None, single_scale: bool = False, breakdown: bool = False,
                       batch_size: int = 64, workers: int = 0, amp: bool = True, ceil_mode: bool = True,
                       progress: bool = False) -> list[EvalResult]:
    """Evaluate one net, or the fusion of several, on a data set (from ``data.open_dataset``) under
    each of ``protocols``; see :func:`method_views` for the views and :func:`default_scales` for the
    test scales. Each scale's pass over the data is batched by image size (``data.eval_batches``).

    ``breakdown``: also every net alone, at its single test scale and at all its scales (Tables 3-5),
    before the fusion (Table 6); all rows come from the same forward passes.
    """
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
        it = eval_batches(dataset, scale=q, batch_size=batch_size, workers=workers, device=device)
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

    def batches(q: int) -> Iterator:
        rescaled = [rescale_shorter(x, q) for x in images]
        by_size: dict[tuple[int, int], list[int]] = {}
        for i, x in enumerate(rescaled):
            by_size.setdefault(tuple(x.shape[-2:]), []).append(i)
        for idx in by_size.values():
            labels = torch.zeros(len(idx), dtype=torch.long)
            batch = torch.stack([rescaled[i] for i in idx]).to(device, non_blocking=True)
            yield batch, labels, torch.tensor(idx)

    return batches
