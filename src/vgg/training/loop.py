"""The training loop: set-up, then epochs of steps, a validation pass and a checkpoint after each.

It takes a task (:mod:`.tasks`) for everything that depends on what is learned; it runs on one
process or many (synchronous data parallelism, Sec. 3.3) and resumes exactly: every random choice of
the data is a function of (seed, epoch, position), and the state file holds everything else.
"""

from __future__ import annotations

import dataclasses
import gc
import math
import os
import time
import warnings
from contextlib import nullcontext
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import nn

from .. import data, distributed
from ..engine import attach_cpu_inference
from ..files import atomic_write
from ..models import VGG
from ..report import format_scale, plot_curves
from ..weights import BEST, LAST, load_state, model_from_metadata, save_model
from . import guard
from .config import TrainConfig, to_toml
from .runlog import LOG_FILE, EpochEstimate, RunLog, diverged_message, progress_bar, summary_line
from .schedule import Plateau, conv_frozen, group_lrs, param_groups
from .state import STATE, read_state, restore_optimizer, rng_state, save_state, set_rng_state
from .stopping import StopRequests, remove_stale_temporaries, stop_agreed, stopped
from .tasks import Task, sums, task_for
from .validation import run_test, validate

CONFIG_FILE = "config.toml"
CURVES = "curves.png"
# Channels-last on the CPU too: oneDNN's convolutions are faster in it (BENCHMARKS.md, Training).
CPU_CHANNELS_LAST = True
# Every process draws its own dropout masks from seed x DROPOUT_SEED_STRIDE + rank + 1.
DROPOUT_SEED_STRIDE = 1_000_003


class NonFiniteLoss(RuntimeError):
    """The loss became NaN or infinite; the run stopped before saving anything from that point."""


@dataclass
class TrainResult:
    output: Path
    best_val_accuracy: float
    best_epoch: int
    epochs: int
    seconds: float
    history: list[dict] = field(default_factory=list)
    test: dict | None = None


@dataclass
class Run:
    """Everything the loop carries from one step to the next; what a checkpoint saves."""

    config: TrainConfig
    ctx: distributed.Context
    task: Task
    out: Path
    model: VGG
    optimizer: torch.optim.Optimizer
    plateau: Plateau
    augment: data.Augment
    train_set: Any
    val_set: Any
    channels_last: bool
    amp: bool
    micro: int
    epoch: int = 0
    step: int = 0
    global_step: int = 0
    history: list = field(default_factory=list)
    best: dict = field(default_factory=lambda: {"accuracy": -1.0, "epoch": -1})
    sums: list = field(default_factory=lambda: [0.0, 0.0, 0])  # this epoch's loss sum, correct, images
    seconds: float = 0.0
    skipped: dict = field(default_factory=dict)  # undecodable files met by this process: path -> reason
    log: RunLog | None = None
    net: nn.Module | None = None
    no_sync: Any = None
    sync_every: int = 1  # steps between host syncs (guard.sync_every)
    step_guard: guard.StepGuard | None = None  # on CUDA: no non-finite update between syncs
    frozen: bool | None = None
    last_save: float = 0.0
    start_time: float = 0.0
    stop: StopRequests | None = None
    estimate: EpochEstimate | None = None

    @property
    def device(self) -> torch.device:
        return self.ctx.device


def seed_everything(seed: int, deterministic: bool) -> None:
    torch.manual_seed(seed)
    if deterministic:
        os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")
        torch.use_deterministic_algorithms(True)
        torch.backends.cudnn.benchmark = False
        torch.backends.cudnn.deterministic = True
    # cuDNN's autotuner runs during the training steps only (guard.cudnn_autotuning).


def train(config: TrainConfig, *, resume: bool = False, datasets=None, task: Task | None = None
          ) -> TrainResult:
    """Run (or resume) training as ``config`` says; returns the best val accuracy and where the run
    lives. Under torchrun every process calls this; only rank 0 writes. ``datasets`` = (train, val)
    replaces ``config.data`` (e.g. a subset built in Python); ``task`` defaults to ``config.task``'s.
    Ctrl-C or SIGTERM during training writes a checkpoint at the next step boundary and raises
    :class:`~vgg.training.stopping.Stopped` (see :mod:`.stopping`)."""
    task = task if task is not None else task_for(config)
    ctx = distributed.setup(config.device)
    try:
        # Ctrl-C and SIGTERM stop the run at a step boundary, with a checkpoint (see .stopping).
        with StopRequests() as stop:
            run = set_up(config, ctx, resume, datasets, task)
            run.stop = stop
            while run.epoch < run.config.epochs:
                train_epoch(run)
                if stop_agreed(stop, run.device):
                    raise stopped(run)
        result = finish(run)
    except BaseException:
        gc.collect()
        distributed.cleanup()
        raise
    # The DDP wrapper (its reducer holds the process group and gloo's pending work) sits in reference
    # cycles: free it now, while the interpreter is whole; freed at exit instead, gloo's threads can
    # abort the process. Then every process finishes together before the group goes: a gloo group
    # torn down while another process still talks to it can abort that process too ("terminate called
    # without an active exception").
    del run
    gc.collect()
    distributed.barrier()
    distributed.cleanup()
    return result


# -- set-up ------------------------------------------------------------------------------------------

def set_up(config: TrainConfig, ctx: distributed.Context, resume: bool, datasets, task: Task) -> Run:
    """The run ready for its first (or next) step: data, net, optimizer, schedule, log."""
    out = Path(config.output)
    if config.batch_size % ctx.world_size:
        raise ValueError(f"batch_size {config.batch_size} is not divisible by the {ctx.world_size} "
                         "processes; the global batch is split evenly across them")
    per_rank = config.batch_size // ctx.world_size
    # Every process checks (not only rank 0), so that no process is left waiting for one that failed.
    if not resume and (out / STATE).is_file():
        raise ValueError(f"{out} already holds a run; pass --resume to continue it or choose another "
                         "--output")
    seed_everything(config.seed, config.deterministic)
    train_set, val_set = datasets if datasets is not None else task.open_data(config)
    saved = read_state(out / STATE) if resume else None
    model = saved_model(saved, out) if saved is not None else new_model(config, task, train_set)
    config = resolved_config(config, model, train_set)
    cuda = ctx.device.type == "cuda"
    channels_last = config.channels_last if config.channels_last is not None else (cuda or CPU_CHANNELS_LAST)
    model.to(ctx.device)
    if channels_last:
        model.to(memory_format=torch.channels_last)
    if ctx.device.type == "cpu" and not config.compile:
        # Validation takes the fused inference path; training steps still run the modules.
        attach_cpu_inference(model)
    optimizer = torch.optim.SGD(param_groups(model, config.decay_bias_norm), lr=config.lr,
                                momentum=config.momentum, weight_decay=config.weight_decay)
    pca = model.info.get("pca") if config.lighting_std > 0 else None
    augment = data.Augment(crop_size=model.crop_size, scale=config.scale, flip=config.flip, pca=pca,
                           lighting_std=config.lighting_std)
    run = Run(config, ctx, task, out, model, optimizer,
              Plateau(config.lr_patience, config.lr_threshold, config.lr_factor, config.lr_drops),
              augment, train_set, val_set, channels_last,
              config.amp and ctx.device.type in distributed.AMP_DEVICES,
              min(config.micro_batch or per_rank, per_rank))
    torch.manual_seed(config.seed * DROPOUT_SEED_STRIDE + ctx.rank + 1)
    if saved is not None:
        restore(run, saved)
    run.sync_every = guard.sync_every(ctx.device)
    if run.sync_every > 1:
        run.step_guard = guard.StepGuard(optimizer, ctx.device)
    if ctx.main:
        open_log(run, resume)
    run.last_save = run.start_time = time.monotonic()
    return run


def saved_model(saved: dict, out: Path) -> VGG:
    model = model_from_metadata(saved["model"])
    load_state(model, {k[6:]: v for k, v in saved["tensors"].items() if k.startswith("model.")},
               source=str(out / STATE))
    return model


def new_model(config: TrainConfig, task: Task, train_set) -> VGG:
    stats = data.channel_statistics(train_set, seed=config.seed)
    model = task.build_model(config, train_set.classes, train_set.channels, stats)
    model.info = {**model.info, "pca": {"eigval": stats["eigval"], "eigvec": stats["eigvec"]},
                  "data": getattr(train_set, "name", config.data)}
    return model


def resolved_config(config: TrainConfig, model: VGG, train_set) -> TrainConfig:
    """The config of what is trained: a pretrained net fixes the architecture; the scale resolved."""
    config = dataclasses.replace(config, arch=model.arch, batch_norm=model.batch_norm, width=model.width,
                                 crop_size=model.crop_size)
    config = dataclasses.replace(config, scale=config.resolved_scale())
    if list(model.classes or []) != list(train_set.classes):
        raise ValueError(f"the checkpoint's classes {model.classes} differ from the data's "
                         f"{train_set.classes}")
    smin, smax = config.scale
    if smin < model.crop_size:
        raise ValueError(f"scale {list(config.scale)}: S must be at least the net's crop size "
                         f"{model.crop_size}")
    model.info["train_scale"] = [smin, smax]
    model.info["train_config"] = config.to_dict()
    return config


def restore(run: Run, saved: dict) -> None:
    """Continue where the state file left off: optimizer, schedule, position, every RNG."""
    restore_optimizer(run.optimizer, saved["optimizer"], saved["tensors"])
    run.plateau.load_state_dict(saved["plateau"])
    run.epoch, run.step, run.global_step = saved["epoch"], saved["step"], saved["global_step"]
    run.history, run.best, run.sums, run.seconds = (saved["history"], saved["best"], saved["sums"],
                                                    saved["seconds"])
    rngs = [{name.split(".", 2)[2]: v for name, v in saved["tensors"].items()
             if name.startswith(f"rng.{r}.")} for r in range(saved["world_size"])]
    if saved["world_size"] == run.ctx.world_size:
        set_rng_state(rngs[run.ctx.rank], run.device)
    else:
        warnings.warn(f"resuming a {saved['world_size']}-process run on {run.ctx.world_size} processes: "
                      "dropout masks will differ from the original run", stacklevel=3)
    del saved["tensors"]


def open_log(run: Run, resume: bool) -> None:
    config, out, model = run.config, run.out, run.model
    out.mkdir(parents=True, exist_ok=True)
    stale = remove_stale_temporaries(out)
    if stale:
        print(f"removed {len(stale)} temporary file(s) that an interrupted write left in {out}: "
              f"{', '.join(p.name for p in stale[:3])}{' ...' if len(stale) > 3 else ''}", flush=True)
    atomic_write(out / CONFIG_FILE, lambda tmp: tmp.write_text(to_toml(config.to_dict())))
    run.log = RunLog(out, run.global_step if resume else None)
    if resume and run.epoch >= config.epochs:
        epochs = f"{config.epochs} epoch{'s' if config.epochs > 1 else ''}"
        print(f"nothing to resume: {out} has finished its {epochs} (best val {run.task.label} "
              f"{run.best['accuracy']:.2f}% at epoch {run.best['epoch']}); give --epochs N with N > "
              f"{config.epochs} to train it longer", flush=True)
        return
    run.log.write({"event": "resume" if resume else "start", "step": run.global_step, "epoch": run.epoch,
                   "world_size": run.ctx.world_size, "device": str(run.device), "time": time.time()})
    # The paper's name of the net, then the usual one: "B (vgg13_bn)".
    print(f"{'resuming' if resume else 'training'} {model.config} ({model.arch}, width {model.width:g}, "
          f"crop {model.crop_size}, S={format_scale(config.scale)}) on {len(run.train_set)} "
          f"{run.train_set.name} images, {len(run.train_set.classes)} classes; {run.ctx.world_size} "
          f"process(es) on {run.device}; output {out}", flush=True)


# -- an epoch ----------------------------------------------------------------------------------------

def train_epoch(run: Run) -> None:
    """One epoch's steps (from the step a resumed run stopped at), then validation and a checkpoint."""
    config, model = run.config, run.model
    lrs = set_stage(run)
    batches = run.task.train_batches(
        run.train_set, augment=run.augment, normalization=model.normalization,
        batch_size=config.batch_size, seed=config.seed, epoch=run.epoch, start_batch=run.step,
        rank=run.ctx.rank, world_size=run.ctx.world_size, workers=config.workers, device=run.device,
        channels_last=run.channels_last)
    n_batches = run.step + len(batches)
    model.train()
    if run.frozen:
        model.features.eval()  # frozen conv layers keep their BN statistics too
    bar = progress_bar(run.ctx.main and config.progress, run.epoch, config.epochs, run.step, n_batches)
    t0, seen = time.monotonic(), 0
    pending = torch.zeros(3, dtype=torch.float64, device=run.device)
    with guard.cudnn_autotuning(not config.deterministic):
        for images, targets in batches:
            seen += len(images)
            train_step(run, images, targets, pending, n_batches, bar, t0, seen)
            if run.estimate is None:
                run.estimate = EpochEstimate(run.ctx.main and run.device.type == "cpu", model.crop_size,
                                             n_batches)
            note = run.estimate.step()
            if note:
                (bar.write if bar is not None else print)(note)
    if bar is not None:
        bar.close()
    run.skipped.update(batches.skipped)
    end_epoch(run, lrs, seen, time.monotonic() - t0)


def set_stage(run: Run) -> dict[str, float]:
    """Fine-tuning's stage: which parameters train, and every group's rate for this epoch."""
    frozen = conv_frozen(run.config, run.epoch)
    lrs = group_lrs(run.config, run.epoch, run.plateau.factor)
    for group in run.optimizer.param_groups:
        group["lr"] = lrs[group["name"]]
    if run.frozen != frozen:
        for p in run.model.features.parameters():
            p.requires_grad_(not frozen)
        run.net, run.no_sync = wrap(run.model, run.ctx, run.config.compile)
        run.frozen = frozen
    return lrs


def train_step(run: Run, images, targets, pending: torch.Tensor, n_batches: int, bar, t0: float,
               seen: int) -> None:
    """One SGD step; at sync points the sums are reduced and the loss checked before the step."""
    config = run.config
    run.optimizer.zero_grad(set_to_none=True)
    pending += forward_backward(run.net, run.task, images, targets, run.micro, run.amp, run.no_sync)
    if run.step_guard is not None:
        run.step_guard.check(run.optimizer)  # on the device: a non-finite step is not applied
    run.step, run.global_step = run.step + 1, run.global_step + 1
    save_due = bool(config.save_every) and run.global_step % config.save_every == 0
    stopping = False
    if run.step % run.sync_every == 0 or run.step == n_batches or save_due:
        want = float(run.ctx.main and time.monotonic() - run.last_save > 60 * config.save_minutes > 0)
        asked = float(run.stop is not None and run.stop.requested)  # a signal reached this process
        flags = [] if run.step_guard is None else [run.step_guard.flag.to(pending.dtype)]
        reduced = distributed.all_reduce_sum(torch.cat([pending, pending.new_tensor([want, asked]), *flags]))
        if not math.isfinite(reduced[0].item()) or (flags and reduced[-1].item() > 0):
            if run.log is not None:
                run.log.write({"event": "diverged", "step": run.global_step, "epoch": run.epoch + 1})
            bad = run.step if run.step_guard is None else run.step_guard.first_bad_step(run.step)
            raise NonFiniteLoss(diverged_message(run.epoch, bad, run.optimizer, run.out / LAST))
        totals = reduced.tolist()
        run.sums = [run.sums[0] + totals[0], run.sums[1] + totals[1], run.sums[2] + int(totals[2])]
        pending.zero_()
        save_due, stopping = save_due or totals[3] > 0, totals[4] > 0
        if bar is not None:
            n = max(run.sums[2], 1)
            metric = {run.task.label: f"{100 * run.sums[1] / n:.2f}%"}
            bar.set_postfix(loss=f"{run.sums[0] / n:.4f}", **metric,
                            img_s=f"{seen * run.ctx.world_size / max(time.monotonic() - t0, 1e-9):.0f}",
                            refresh=False)
    run.optimizer.step()
    if bar is not None:
        bar.update(1)
    # The last step of an epoch is followed by its validation and checkpoint (and a stop after them).
    if (save_due or stopping) and run.step < n_batches:
        run.seconds += time.monotonic() - run.start_time
        run.start_time = time.monotonic()
        checkpoint(run, epoch_done=False)
        run.last_save = time.monotonic()
        if stopping:
            raise stopped(run)


def end_epoch(run: Run, lrs: dict, seen: int, train_seconds: float) -> None:
    """Validate, step the schedule, keep the best net, checkpoint, log and print the epoch."""
    config, ctx, model, metric = run.config, run.ctx, run.model, run.task.metric
    val = validate(model, run.val_set, task=run.task, scale=config.resolved_val_scale(),
                   batch_size=max(config.batch_size // ctx.world_size, 64), ctx=ctx, amp=run.amp,
                   channels_last=run.channels_last, workers=config.workers,
                   ceil_mode=not config.floor_pooling)
    run.skipped.update(val.pop("skipped"))
    dropped = run.plateau.step(val[metric])
    run.seconds += time.monotonic() - run.start_time
    run.start_time = time.monotonic()
    n = max(run.sums[2], 1)
    record = {"epoch": run.epoch + 1, "step": run.global_step, "train_loss": run.sums[0] / n,
              f"train_{metric}": 100 * run.sums[1] / n, "val_loss": val["loss"],
              f"val_{metric}": val[metric], "lr": lrs["fc"], "lr_drops": run.plateau.drops,
              "images_per_second": seen * ctx.world_size / max(train_seconds, 1e-9),
              "epoch_seconds": train_seconds, "seconds": run.seconds}
    run.history.append(record)
    improved = val[metric] > run.best["accuracy"]
    if improved:
        run.best = {"accuracy": val[metric], "epoch": run.epoch + 1}
        model.info[f"val_{metric}"] = val[metric]
        model.info["epoch"] = run.epoch + 1
        if ctx.main:
            save_model(model, run.out / BEST)
    checkpoint(run, epoch_done=True)
    run.last_save = time.monotonic()
    if ctx.main:
        run.log.write(record)
        # After the last epoch there is no epoch to run at the lower rate: no drop to announce (the
        # schedule still counts it, so that a run resumed with more --epochs goes on as a longer one).
        announced = dropped and run.epoch + 1 < config.epochs
        if announced:
            run.log.write({"event": "lr_drop", "step": run.global_step, "epoch": run.epoch + 1,
                           "drops": run.plateau.drops, "factor": run.plateau.factor})
        print(summary_line(record, config.epochs, improved, announced, run.plateau, run.task.label, metric),
              flush=True)
        plot_curves(run.history, run.out / CURVES, metric)
    run.epoch, run.step, run.sums = run.epoch + 1, 0, [0.0, 0.0, 0]


def checkpoint(run: Run, epoch_done: bool) -> None:
    """Write the training state (then ``last``) atomically; every process sends its RNG state."""
    rngs = distributed.all_gather_objects({k: v.cpu() for k, v in rng_state(run.device).items()})
    if not run.ctx.main:
        return
    run.model.info["epoch"] = run.epoch + (1 if epoch_done else 0)
    meta = {"epoch": run.epoch + 1 if epoch_done else run.epoch, "step": 0 if epoch_done else run.step,
            "global_step": run.global_step, "history": run.history, "best": run.best,
            "plateau": run.plateau.state_dict(), "sums": [0.0, 0.0, 0] if epoch_done else run.sums,
            "seconds": run.seconds, "config": run.config.to_dict(), "world_size": run.ctx.world_size}
    save_state(run.out / STATE, run.model, run.optimizer, meta, rngs)
    save_model(run.model, run.out / LAST)


def finish(run: Run) -> TrainResult:
    """The result; the test of the best net if asked; the files that could not be read."""
    out, log = run.out, run.log
    result = TrainResult(out, run.best["accuracy"], run.best["epoch"], run.epoch, run.seconds, run.history)
    if run.config.test:
        result.test = run_test(run.config, out, run.ctx, log, run.global_step)
    if log is not None and run.skipped:
        skipped = sorted(run.skipped.items())
        log.write({"event": "skipped_files", "count": len(skipped),
                   "files": [{"path": p, "reason": r} for p, r in skipped]})
        shown = "; ".join(f"{p} ({r})" for p, r in skipped[:5])
        print(f"skipped {len(skipped)} unreadable file(s) (this process): {shown}"
              f"{' ...' if len(skipped) > 5 else ''}", flush=True)
    if log is not None:
        log.close()
        if run.history:
            metric = run.task.metric.replace("_", " ")
            print(f"best val {metric} {run.best['accuracy']:.2f}% (epoch {run.best['epoch']}); checkpoints "
                  f"{out / BEST}, {out / LAST}; curves {out / CURVES}; log {out / LOG_FILE}", flush=True)
    return result


# -- a step ------------------------------------------------------------------------------------------

def wrap(model: VGG, ctx: distributed.Context, compile_: bool):
    """The module the loop calls: DistributedDataParallel over the trainable parameters when several
    processes run (gradients averaged, Sec. 3.3), optionally compiled; and DDP's ``no_sync``."""
    net: nn.Module = model
    no_sync = None
    if ctx.distributed:
        from torch.nn.parallel import DistributedDataParallel

        net = DistributedDataParallel(model, device_ids=[ctx.device] if ctx.device.type == "cuda" else None)
        no_sync = net.no_sync
    if compile_:
        net = torch.compile(net)
    return net, no_sync


def forward_backward(net: nn.Module, task: Task, images, targets, micro: int, amp: bool, no_sync
                     ) -> torch.Tensor:
    """Gradients of the mean loss over this process's share of the batch, in chunks of ``micro``
    images (gradient accumulation); returns (loss sum, correct, images) as float64."""
    n = len(images)
    autocast = distributed.autocast(images.device, amp)
    out = torch.zeros(3, dtype=torch.float64, device=images.device)
    starts = list(range(0, n, micro))
    for i, s in enumerate(starts):
        x, y = images[s:s + micro], chunk(targets, s, micro)
        # DDP all-reduces gradients once, after the last chunk.
        sync = no_sync() if no_sync is not None and i < len(starts) - 1 else nullcontext()
        with sync:
            with autocast:
                outputs = net(x)
            loss = task.loss(outputs, y)
            (loss / n).backward()
        out += sums(task, outputs, y, loss, len(x))
    return out


def chunk(targets, start: int, size: int):
    """Rows start:start+size of a batch's targets: a tensor, or a tuple/dict of tensors."""
    if isinstance(targets, torch.Tensor):
        return targets[start:start + size]
    if isinstance(targets, dict):
        return {k: v[start:start + size] for k, v in targets.items()}
    return type(targets)(t[start:start + size] for t in targets)
