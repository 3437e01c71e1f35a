"""Running the plan: a step killed in the middle (SIGKILL) resumes from its last checkpoint when the
same command runs again, the finished steps are kept (not re-run), and a finished step is never
mixed with different settings."""

import json
import os
import signal
import subprocess
import sys
import time

import pytest

from support import VGG_BIN, records
from vgg.reproduce import make_plan, preset_options, run_plan

COMMAND = ["reproduce", "--preset", "tiny", "--nets", "A", "B", "--tables", "3", "--epochs", "3",
           "--device", "cpu", "--no-progress"]


def start(out):
    import os

    return subprocess.Popen([*VGG_BIN, *COMMAND, "--output", str(out)], stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True,
                            env={**os.environ, "OMP_NUM_THREADS": "1"})


def test_a_killed_step_resumes_and_finished_steps_are_kept(tmp_path):
    out = tmp_path / "repro"
    proc = start(out)
    state = out / "B-S256" / "state.safetensors"  # B's first checkpoint: A has finished by then
    deadline = time.monotonic() + 240
    while not state.is_file() and proc.poll() is None and time.monotonic() < deadline:
        time.sleep(0.02)
    proc.send_signal(signal.SIGKILL)
    first = proc.communicate(timeout=60)[0]
    assert proc.returncode == -signal.SIGKILL, first
    assert (out / "A-S256" / "step.json").is_file() and not (out / "B-S256" / "step.json").is_file()
    a_record = (out / "A-S256" / "step.json").read_text()
    a_log = records(out / "A-S256")
    b_epochs = [r["epoch"] for r in records(out / "B-S256") if "event" not in r]
    # (killed between B's checkpoint and its log line, the log may hold no epoch yet)
    assert not b_epochs or b_epochs[-1] < 3, "B finished before it was killed: the test saw no interruption"

    again = start(out)
    second = again.communicate(timeout=300)[0]
    assert again.returncode == 0, second
    assert "[1/4] A-S256: finished" in second and "kept" in second
    assert "[2/4] B-S256: resuming" in second
    # A was not trained again: its log and record are as the first command left them
    assert records(out / "A-S256") == a_log and (out / "A-S256" / "step.json").read_text() == a_record
    assert [r["event"] for r in a_log if "event" in r].count("start") == 1
    # B continued from its checkpoint to the end, not from the start
    events = [r for r in records(out / "B-S256") if "event" in r]
    assert [e["event"] for e in events if e["event"] in ("start", "resume")] == ["start", "resume"]
    assert events[-1]["event"] != "start" and max(e.get("epoch", 0) for e in events) >= 1
    b_final = [r["epoch"] for r in records(out / "B-S256") if "event" not in r]
    assert b_final[-1] == 3 and b_final == sorted(b_final)
    assert json.loads((out / "B-S256" / "step.json").read_text())["epochs"] == 3
    assert (out / "REPORT.md").is_file() and (out / "eval-B-S256" / "dense.json").is_file()

    # the same directory with other settings would mix two experiments: refused, naming the step
    plan = make_plan(preset_options("tiny", nets=("A", "B"), tables=("3",), epochs=3, lr=0.5), out)
    with pytest.raises(ValueError, match=r"A-S256 \(differs in lr\)"):
        run_plan(plan, out)


def test_nproc_per_node_runs_each_training_step_under_torchrun(tmp_path, monkeypatch):
    from support import run_cli

    out = tmp_path / "ddp"
    done = run_cli("reproduce", "--preset", "tiny", "--nets", "A", "--tables", "3", "--device", "cpu",
                   "--no-progress", "--nproc-per-node", "2", "--output", str(out))
    assert done.returncode == 0, done.stdout + done.stderr
    start = next(r for r in records(out / "A-S256") if r.get("event") == "start")
    assert start["world_size"] == 2  # Sec. 3.3: the step's batch split over two processes
    assert json.loads((out / "A-S256" / "step.json").read_text())["processes"] == 2
    assert (out / "eval-A-S256" / "dense.json").is_file() and (out / "REPORT.md").is_file()
    # launched by torchrun itself, it does not launch torchrun again for each step
    monkeypatch.setenv("WORLD_SIZE", "2")
    with pytest.raises(ValueError, match="under torchrun already"):
        run_plan(make_plan(preset_options("tiny", nets=("A",), tables=("3",)), out), out, processes=2)


def test_under_torchrun_every_training_step_shares_the_pipelines_process_group(tmp_path):
    # `torchrun -m vgg reproduce`: B-S256 is the second training run in the same two processes, so it
    # fails if the first run (A-S256) tears the process group down.
    out = tmp_path / "torchrun"
    done = subprocess.run(
        [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node", "2", "-m", "vgg",
         "reproduce", "--preset", "tiny", "--nets", "A", "B", "--tables", "3", "--device", "cpu",
         "--no-progress", "--output", str(out)],
        capture_output=True, text=True, timeout=600, env={**os.environ, "OMP_NUM_THREADS": "1"})
    assert done.returncode == 0, done.stdout + done.stderr
    for step in ("A-S256", "B-S256"):
        start = next(r for r in records(out / step) if r.get("event") == "start")
        assert start["world_size"] == 2, step
    # rank 0 alone evaluates, records and reports: each line once
    assert done.stdout.count("[3/4] eval-A-S256: done") == 1, done.stdout
    assert (out / "eval-B-S256" / "dense.json").is_file() and (out / "REPORT.md").is_file()
    assert json.loads((out / "B-S256" / "step.json").read_text())["step"] == "B-S256"
