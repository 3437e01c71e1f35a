"""``vgg reproduce --plan``'s time per step, from a few timed batches: one SGD step and one forward
pass of each net (configuration, width, crop) on random images, on this machine, scaled by the
images, epochs and views each step will see."""

from __future__ import annotations

import copy
import statistics
import time
from pathlib import Path

import torch

from ..distributed import resolve_device, training_amp
from ..engine import prepare_for_inference
from ..models import create_model, parse_arch
from .pipeline import format_duration
from .plan import Options, Step

ROUNDS, WARM = 5, 2
# The greedy merge of App. A.2's dense protocol runs per image in Python: seconds per image and
# scale assumed by the estimate (BENCHMARKS.md, "Figures that left the code comments").
MERGE_SECONDS = 0.003
# What a real step costs beyond the timed forward and backward passes (data, augmentation, the
# loop's bookkeeping), as a factor (BENCHMARKS.md, "Figures that left the code comments").
OVERHEAD = 1.15


class Timer:
    """Seconds per image of a training step and of a forward pass of each net. The nets are timed in
    turns, ``ROUNDS`` times each, and each keeps its median: on a shared machine a burst of other
    work then slows one turn of every net rather than every turn of one net."""

    def __init__(self, device: str = "auto", batch: int = 32, channels: int = 1, classes: int = 10):
        self.device = resolve_device(device)
        self.batch, self.channels, self.classes = batch, channels, classes
        self.cache: dict = {}

    def key(self, arch: str, batch_norm: bool, width: float, crop: int) -> tuple:
        return parse_arch(arch)[0], bool(batch_norm), float(width), int(crop)

    def measure(self, keys) -> None:
        """Time every net of ``keys`` not timed yet."""
        keys = [k for k in dict.fromkeys(keys) if k not in self.cache]
        benches = {k: self.bench(*k) for k in keys}
        times: dict = {k: ([], []) for k in keys}
        for _ in range(ROUNDS):
            for k, (train, forward) in benches.items():
                times[k][0].append(self.seconds(train) / self.batch)
                times[k][1].append(self.seconds(forward) / self.batch)
        self.cache.update({k: {"train": statistics.median(t), "forward": statistics.median(f), "crop": k[3]}
                           for k, (t, f) in times.items()})

    def net(self, arch: str, batch_norm: bool, width: float, crop: int) -> dict:
        key = self.key(arch, batch_norm, width, crop)
        self.measure([key])
        return self.cache[key]

    def bench(self, config: str, batch_norm: bool, width: float, crop: int):
        """(one training step, one forward pass) of the net on a random batch, warmed up: the step
        as `vgg train` takes it (:func:`vgg.training.forward_backward`, bf16 autocast where the run
        takes it), the forward pass as `vgg evaluate` does (:func:`prepare_for_inference`)."""
        from ..training import CLASSIFICATION, forward_backward

        torch.manual_seed(0)
        model = create_model(config, num_classes=self.classes, batch_norm=batch_norm, width=width,
                             crop_size=crop, in_channels=self.channels).to(self.device)
        model = model.to(memory_format=torch.channels_last)
        opt = torch.optim.SGD(model.parameters(), lr=1e-3, momentum=0.9)
        x = torch.randn(self.batch, self.channels, crop, crop, device=self.device)
        x = x.contiguous(memory_format=torch.channels_last)
        y = torch.randint(0, self.classes, (self.batch,), device=self.device)
        amp = training_amp(self.device, True)  # as the runs train: bf16 autocast where it is native
        fast = prepare_for_inference(copy.deepcopy(model), self.device)

        def train():
            model.train()
            opt.zero_grad(set_to_none=True)
            forward_backward(model, CLASSIFICATION, x, y, len(y), amp, None)
            opt.step()

        def forward():
            with torch.inference_mode():
                fast(x)

        for _ in range(WARM):  # the first calls build oneDNN's primitives
            train()
            forward()
        return train, forward

    def seconds(self, fn) -> float:
        if self.device.type == "cuda":
            torch.cuda.synchronize()
        t0 = time.perf_counter()
        fn()
        if self.device.type == "cuda":
            torch.cuda.synchronize()
        return time.perf_counter() - t0


def dense_cost(timing: dict, q: int) -> float:
    """A forward pass over a whole image at shorter side Q (square images: Fashion-MNIST's, ours):
    the convolutions' work grows with the pixels, Q^2 against the crop's."""
    return timing["forward"] * max(1.0, (q / timing["crop"]) ** 2)


def split_sizes(data: str, limit: int | None, val_size: int = 5000) -> dict[str, int]:
    """Images in each split (the first ``limit``), without decoding any."""
    from ..data import open_dataset

    sizes = {}
    for split in ("train", "val", "test"):
        try:
            n = len(open_dataset(data, split, val_size=val_size))
        except (FileNotFoundError, NotADirectoryError, ValueError):
            n = 0
        sizes[split] = min(n, limit) if limit else n
    return sizes


def step_seconds(step: Step, options: Options, timer: Timer, sizes) -> float:
    """The estimated wall-clock seconds of ``step``."""
    if step.kind == "train":
        c = step.config
        arch, bn = c.get("arch") or options_arch(step, options), c.get("batch_norm", options.batch_norm)
        t = timer.net(arch, bn, options.width, options.crop_size)
        n = sizes(c["data"], c.get("limit"))
        per_image = t["forward"] * 1.3 if c.get("finetune") == "fc" else t["train"]
        val_q = (c["scale"][0] + c["scale"][1]) // 2
        per_epoch = n["train"] * per_image + n["val"] * dense_cost(t, val_q)
        return c["epochs"] * per_epoch * OVERHEAD + 5.0
    total = 0.0
    for call in step.calls:
        t = timer.net(options_arch(step, options), options.batch_norm, options.width, options.crop_size)
        images = sizes(call["data"], None)[call["split"]]
        images = min(images, call["limit"]) if call.get("limit") else images
        nets = len(call["checkpoints"]) + len(call.get("classifiers", ()))
        s = [options.paper_scale(v) for v in (256, 384, 512)]
        scales = 1 if call.get("single_scale") or call["protocols"] == ["centre"] else 3
        for p in call["protocols"]:
            if p == "centre":
                total += images * nets * t["forward"]
            elif p in ("dense", "dense+multi-crop"):
                total += images * nets * 2 * sum(dense_cost(t, q) for q in s[:scales])
                if call["task"] == "localization":
                    total += images * scales * MERGE_SECONDS * len(call["checkpoints"])
            if p in ("multi-crop", "dense+multi-crop"):
                total += images * nets * 50 * scales * t["forward"]
    return total + 3.0


def options_arch(step: Step, options: Options) -> str:
    return step.net or "D"


def estimate(plan: list[Step], options: Options) -> dict[str, float]:
    """{step: estimated seconds}."""
    # At the runs' batch size: a small net's step costs less per image in a big batch.
    timer = Timer(options.device, batch=options.batch_size)
    timer.measure([timer.key(s.config.get("arch") or options_arch(s, options),
                             s.config.get("batch_norm", options.batch_norm), options.width, options.crop_size)
                   for s in plan])
    known: dict = {}

    def sizes(data: str, limit: int | None) -> dict[str, int]:
        if data not in known:
            known[data] = split_sizes(data, None)
        return {k: min(v, limit) if limit else v for k, v in known[data].items()}

    return {s.name: step_seconds(s, options, timer, sizes) for s in plan}


def plan_text(plan: list[Step], out: Path, seconds: dict[str, float] | None = None,
              device: str = "auto") -> str:
    """The plan as lines: number, step, what it is, what it starts from, the estimate."""

    lines, width = [], max(len(s.name) for s in plan)
    for i, s in enumerate(plan, 1):
        done = (Path(out) / s.name / "step.json").is_file()
        est = "" if seconds is None else f"  ~{format_duration(seconds[s.name])}"
        src = f"  <- {', '.join(s.sources)}" if s.sources else ""
        src = src or ("  <- random weights" if s.kind == "train" else "")
        tables = f" [Table {', '.join(s.tables)}]" if s.tables else ""
        lines.append(f"{i:2d}. {s.name:<{width}}  {s.kind:<8}  {s.label}{tables}{src}{est}"
                     f"{'  (finished)' if done else ''}")
    if seconds is not None:
        todo = sum(v for k, v in seconds.items() if not (Path(out) / k / "step.json").is_file())
        lines.append(f"estimated total: {format_duration(sum(seconds.values()))} "
                     f"({format_duration(todo)} still to run), timed on {resolve_device(device)}")
    return "\n".join(lines)
