"""The training loop: set-up, then epochs of steps, a validation pass and a checkpoint after each.

It takes a task (:mod:`.tasks`) for everything that depends on what is learned; it runs on one
process or many (synchronous data parallelism, Sec. 3.3) and resumes exactly: every random choice of
the data is a function of (seed, epoch, position), and the state file holds everything else.
"""

from __future__ import annotations

import gc
import math
import time

import torch

from .. import distributed
from ..report import plot_curves
from ..weights import BEST, LAST, save_model
from . import guard
from .config import TrainConfig
from .runlog import LOG_FILE, EpochEstimate, diverged_message, progress_bar, summary_line
from .schedule import conv_frozen, group_lrs
from .start import CURVES, NonFiniteLoss, Run, TrainResult, set_up
from .state import STATE, rng_state, save_state
from .step import forward_backward, wrap
from .stopping import StopRequests, stop_agreed, stopped
from .tasks import Task, task_for
from .validation import validate


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
        distributed.cleanup(ctx)
        raise
    # The DDP wrapper (its reducer holds the process group and gloo's pending work) sits in reference
    # cycles: free it now, while the interpreter is whole; freed at exit instead, gloo's threads can
    # abort the process. Then every process finishes together before the group goes: a gloo group
    # torn down while another process still talks to it can abort that process too ("terminate called
    # without an active exception").
    del run
    gc.collect()
    distributed.barrier()
    distributed.cleanup(ctx)
    return result


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
                   batch_size=max(config.batch_size // ctx.world_size, 64), ctx=ctx, amp=config.amp,
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
        result.test = run.task.test(run.config, out, run.ctx, log, run.global_step)
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
