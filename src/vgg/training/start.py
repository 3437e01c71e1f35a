"""A run ready for its first (or next) step: the state the loop carries (:class:`Run`), and its
set-up from a config, a state file to resume, or both: data, net, optimizer, schedule, log."""

from __future__ import annotations

import dataclasses
import os
import time
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import nn

from .. import data, distributed
from ..engine import attach_cpu_inference
from ..files import atomic_write
from ..models import VGG
from ..report import format_scale
from ..weights import load_state, model_from_metadata
from . import guard
from .config import TrainConfig
from .recipes import to_toml
from .runlog import EpochEstimate, RunLog
from .schedule import Plateau, param_groups
from .state import STATE, read_state, restore_optimizer, set_rng_state
from .stopping import StopRequests, remove_stale_temporaries
from .tasks import Task

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
    amp: bool  # the steps run under bf16 autocast (distributed.training_amp)
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
              distributed.training_amp(ctx.device, config.amp),
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
