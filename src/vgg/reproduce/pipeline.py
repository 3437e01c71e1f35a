"""Running a plan: each step an ordinary run in ``DIR/<step>/``, in order; a step that finished (its
``step.json``) is kept, a training step that was interrupted resumes exactly from its last checkpoint
(:func:`vgg.training.resume_config`), an evaluation step redoes only the evaluations without their
JSON. With ``processes`` > 1 every training step is its own ``torchrun --nproc-per-node N -m vgg
train`` (a process group lives for one run: ``vgg.training.train`` tears it down at the end, and a
second run in the same torchrun processes cannot set up another); the evaluations run in this process.
"""

from __future__ import annotations

import json
import subprocess
import sys
import time
from collections.abc import Callable
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


def run_plan(plan: list[Step], out: str | Path, *, command: str = "", report: Callable | None = None,
             processes: int = 1, say=print) -> dict[str, dict]:
    """Run every step not finished yet; returns {step: its record}. ``report(out, plan, records)`` is
    called at the end. ``processes``: training processes per step (torchrun, Sec. 3.3)."""
    out = Path(out)
    if distributed.launched_by_torchrun():
        raise ValueError("run vgg reproduce itself as one process and give --nproc-per-node N: each "
                         "training step is then launched with torchrun (a torchrun process runs one "
                         "training run)")
    check_unchanged(out, plan)
    out.mkdir(parents=True, exist_ok=True)
    write_json({"command": command, "steps": [s.to_dict() for s in plan]}, out / PLAN_FILE)
    records = {s.name: r for s in plan if (r := finished(out, s)) is not None}
    n = len(plan)
    for i, step in enumerate(plan, 1):
        head = f"[{i}/{n}] {step.name}"
        if step.name in records:
            say(f"{head}: finished ({format_duration(records[step.name]['seconds'])}), kept")
            continue
        missing = [s for s in step.sources if step.kind == "evaluate" and not (out / s / STEP_FILE).is_file()]
        if missing:
            raise FileNotFoundError(f"{step.name} needs {', '.join(missing)}, which has not finished")
        resuming = step.kind == "train" and (step_folder(out, step) / STATE).is_file()
        sources = f" from {', '.join(step.sources)}" if step.sources else ""
        say(f"{head}: {'resuming ' if resuming else ''}{step.label}{sources}")
        t0 = time.monotonic()
        if step.kind != "train":
            result = run_evaluate_step(out, step, say)
        elif processes > 1:
            result = launch_train_step(out, step, processes)
        else:
            result = run_train_step(out, step)
        seconds = time.monotonic() - t0
        record = {"step": step.name, "kind": step.kind, "settings": settings(step), "seconds": seconds,
                  "finished": time.time(), "command": command, **result}
        write_json(record, step_folder(out, step) / STEP_FILE)
        records[step.name] = record
        say(f"{head}: done in {format_duration(seconds)}")
    if report is not None:
        path = report(out, plan, records)
        say(f"wrote {path}")
    return records


def run_train_step(out: Path, step: Step) -> dict:
    """``vgg train`` with the step's config; resumed exactly when its folder holds a checkpoint
    (the saved config must then be the plan's: :func:`resume_config` refuses a change)."""
    folder = step_folder(out, step)
    if (folder / STATE).is_file():
        config = resume_config(folder, step.config)
        result = train(config, resume=True)
    else:
        result = train(TrainConfig(**step.config))
    return {"best_val": result.best_val_accuracy, "best_epoch": result.best_epoch, "epochs": result.epochs,
            "train_seconds": result.seconds}


def launch_train_step(out: Path, step: Step, processes: int) -> dict:
    """The training step as ``torchrun --standalone --nproc-per-node N -m vgg train``, its config a
    TOML recipe in the step's folder; resumed when the folder holds a checkpoint."""
    folder = step_folder(out, step)
    folder.mkdir(parents=True, exist_ok=True)
    recipe = folder / "reproduce.toml"
    recipe.write_text(to_toml(step.config))
    resume = (folder / STATE).is_file()
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


