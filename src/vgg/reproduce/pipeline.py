"""Running a plan: each step an ordinary run in ``DIR/<step>/``, in order; a step that finished (its
``step.json``) is kept, a training step that was interrupted resumes exactly from its last checkpoint
(:func:`vgg.training.resume_config`), an evaluation step redoes only the evaluations without their
JSON. Distributed training (Sec. 3.3) either way: with ``processes`` > 1 every training step is its
own ``torchrun --nproc-per-node N -m vgg train`` and the evaluations run in this process; or the whole
pipeline runs under torchrun, every process in one process group that each training step shares
(``vgg.training.train`` leaves a group it did not set up), the evaluations on rank 0.
"""

from __future__ import annotations

import gc
import json
import subprocess
import sys
import time
from collections.abc import Callable
from datetime import timedelta
from pathlib import Path

from .. import distributed
from ..report import write_json
from ..training import STATE, NonFiniteLoss, Stopped, TrainConfig, read_state, resume_config, to_toml, train
from .plan import Step

STEP_FILE = "step.json"  # written when a step has finished: its settings, time and command
PLAN_FILE = "plan.json"

# Settings a finished or interrupted step may be run again with (where and how, not what).
FREE = {"device", "workers", "progress"}


def format_duration(seconds: float) -> str:
    """42 s, 7.5 min, 2 h 05 min."""
    if seconds < 90:
        return f"{seconds:.0f} s"
    if seconds < 3600:
        return f"{seconds / 60:.1f} min"
    minutes = int(round(seconds / 60))
    return f"{minutes // 60} h {minutes % 60:02d} min"


def step_folder(out: Path, step: Step) -> Path:
    return Path(out) / step.name


def finished(out: Path, step: Step) -> dict | None:
    """The record of ``step`` if it finished, else None."""
    path = step_folder(out, step) / STEP_FILE
    if not path.is_file():
        return None
    return json.loads(path.read_text())


def settings(step: Step) -> dict:
    """What a step computes, without where and how it runs."""
    def strip(d: dict) -> dict:
        return {k: v for k, v in d.items() if k not in FREE}

    return {"config": strip(step.config), "calls": [strip(c) for c in step.calls]}


def check_unchanged(out: Path, plan: list[Step]) -> None:
    """A finished step whose settings differ from the plan's would mix two experiments in one
    report: refuse, naming the step and what differs."""
    problems = []
    for step in plan:
        record = finished(out, step)
        if record is None:
            continue
        saved, now = record.get("settings", {}), json.loads(json.dumps(settings(step)))
        if saved != now:
            diff = sorted(k for k in {**saved.get("config", {}), **now["config"]}
                          if saved.get("config", {}).get(k) != now["config"].get(k))
            what = f"{', '.join(diff)}" if diff else "its evaluations"
            problems.append(f"{step.name} (differs in {what})")
    if problems:
        raise ValueError(f"{out} holds steps run with other settings: {'; '.join(problems)}; give another "
                         "--output, the same flags as before, or remove those step folders")


# Under torchrun the pipeline's process group lives for the whole plan: ranks other than 0 wait in a
# barrier while rank 0 evaluates (Table 5's protocols on ILSVRC's 50,000 images take hours), so the
# group's timeout is long. A failed process cannot leave the others waiting: torchrun stops them all.
GROUP_TIMEOUT = timedelta(hours=24)


def run_plan(plan: list[Step], out: str | Path, *, command: str = "", report: Callable | None = None,
             processes: int = 1, say=print) -> dict[str, dict]:
    """Run every step not finished yet; returns {step: its record}. ``report(out, plan, records)`` is
    called at the end. ``processes``: training processes per step, each step its own torchrun
    (Sec. 3.3). Launched by torchrun itself (``torchrun --nproc-per-node N -m vgg reproduce``), every
    process runs the plan: the training steps are distributed over the processes, the evaluations,
    the step records and the report are rank 0's."""
    out = Path(out)
    under_torchrun = distributed.launched_by_torchrun()
    if under_torchrun and processes > 1:
        raise ValueError("vgg reproduce runs under torchrun already: give torchrun's --nproc-per-node, "
                         "not vgg reproduce's --nproc-per-node (which launches torchrun for each step)")
    check_unchanged(out, plan)
    ctx = distributed.setup(plan_device(plan), timeout=GROUP_TIMEOUT) if under_torchrun else None
    try:
        records = run_steps(plan, out, command, report, processes, say, main=ctx is None or ctx.main)
    except BaseException:
        if ctx is not None:
            distributed.cleanup(ctx)
        raise
    if ctx is not None:
        # As at the end of vgg.training.train: what still holds the group's threads (the runs' DDP
        # wrappers sit in reference cycles) is freed now, not at exit, where gloo's threads abort the
        # process ("terminate called without an active exception"); and every process waits for rank
        # 0's report before the group goes.
        gc.collect()
        distributed.barrier()
        distributed.cleanup(ctx)
    return records


def plan_device(plan: list[Step]) -> str:
    return next((s.config.get("device") or "auto" for s in plan if s.kind == "train"), "auto")


def run_steps(plan: list[Step], out: Path, command: str, report: Callable | None, processes: int, say,
              main: bool) -> dict[str, dict]:
    """:func:`run_plan`'s loop; ``main``: this process writes (rank 0, or the only process)."""
    say = say if main else _quiet
    if main:
        out.mkdir(parents=True, exist_ok=True)
        write_json({"command": command, "steps": [s.to_dict() for s in plan]}, out / PLAN_FILE)
    records = distributed.broadcast_object({s.name: r for s in plan if (r := finished(out, s)) is not None})
    n = len(plan)
    for i, step in enumerate(plan, 1):
        head = f"[{i}/{n}] {step.name}"
        if step.name in records:
            say(f"{head}: finished ({format_duration(records[step.name]['seconds'])}), kept")
            continue
        missing = [s for s in step.sources if step.kind == "evaluate" and s not in records]
        if missing:
            raise FileNotFoundError(f"{step.name} needs {', '.join(missing)}, which has not finished")
        resuming = distributed.broadcast_object(
            step.kind == "train" and (step_folder(out, step) / STATE).is_file())
        sources = f" from {', '.join(step.sources)}" if step.sources else ""
        say(f"{head}: {'resuming ' if resuming else ''}{step.label}{sources}")
        t0 = time.monotonic()
        if step.kind != "train":
            result = run_evaluate_step(out, step, say) if main else {}
            distributed.barrier()
        elif processes > 1:
            result = launch_train_step(out, step, processes, resuming)
        else:
            result = run_train_step(out, step, resuming)
        seconds = time.monotonic() - t0
        record = {"step": step.name, "kind": step.kind, "settings": settings(step), "seconds": seconds,
                  "finished": time.time(), "command": command, **result}
        if main:
            write_json(record, step_folder(out, step) / STEP_FILE)
        records[step.name] = record
        say(f"{head}: done in {format_duration(seconds)}")
    if report is not None and main:
        path = report(out, plan, records)
        say(f"wrote {path}")
    return records


def _quiet(*args, **kwargs) -> None:
    """What ranks other than 0 print: nothing (rank 0 speaks for the run, as in ``vgg train``)."""


def run_train_step(out: Path, step: Step, resume: bool) -> dict:
    """``vgg train`` with the step's config; ``resume``: exactly from the checkpoint in its folder
    (the saved config must then be the plan's: :func:`resume_config` refuses a change)."""
    folder = step_folder(out, step)
    if resume:
        config = resume_config(folder, step.config)
        result = train(config, resume=True)
    else:
        result = train(TrainConfig(**step.config))
    return {"best_val": result.best_val_accuracy, "best_epoch": result.best_epoch, "epochs": result.epochs,
            "train_seconds": result.seconds}


def launch_train_step(out: Path, step: Step, processes: int, resume: bool) -> dict:
    """The training step as ``torchrun --standalone --nproc-per-node N -m vgg train``, its config a
    TOML recipe in the step's folder; ``resume``: from the checkpoint in the folder."""
    folder = step_folder(out, step)
    folder.mkdir(parents=True, exist_ok=True)
    recipe = folder / "reproduce.toml"
    recipe.write_text(to_toml(step.config))
    command = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node",
               str(processes), "-m", "vgg", "train", "--config", str(recipe)]
    command += ["--resume"] if resume else []
    code = subprocess.run(command).returncode
    if code == 3:
        raise NonFiniteLoss(f"{step.name}: the loss became NaN or infinite (see {folder / 'log.jsonl'})")
    if code in (130, 143):
        raise Stopped(code - 128, f"{step.name} stopped with a checkpoint")
    if code != 0:
        raise RuntimeError(f"{step.name}: torchrun ended with exit status {code}: {shlex_join(command)}")
    state = read_state(folder / STATE, tensors=False)
    return {"best_val": state["best"]["accuracy"], "best_epoch": state["best"]["epoch"],
            "epochs": state["epoch"], "train_seconds": state["seconds"], "processes": processes}


def shlex_join(words: list[str]) -> str:
    import shlex

    return shlex.join(words)


def run_evaluate_step(out: Path, step: Step, say=print) -> dict:
    """Each evaluation of the step that has no JSON yet, as ``vgg evaluate`` would run it."""
    folder = step_folder(out, step)
    folder.mkdir(parents=True, exist_ok=True)
    files = []
    for call in step.calls:
        path = folder / f"{call['name']}.json"
        files.append(path.name)
        if path.is_file():
            continue
        evaluate_call(call, path, say)
    return {"json": files}


def evaluate_call(call: dict, path: Path, say=print) -> None:
    from ..evaluation import EvalConfig, run_evaluate
    from ..evaluation.localization_commands import run_localization_evaluate

    kw = {k: v for k, v in call.items() if k not in ("name", "task")}
    if call["task"] == "localization":
        run_localization_evaluate(
            kw.pop("checkpoints"), classifiers=kw.pop("classifiers", ()), json_path=str(path),
            out=say, **kw)
        return
    run_evaluate(EvalConfig(checkpoints=kw.pop("checkpoints"), json=str(path),
                            confusion=str(path.with_suffix(".png")), **kw), out=say)


