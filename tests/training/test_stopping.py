"""Stopping a run: SIGTERM and Ctrl-C checkpoint at a step boundary, exit 143 / 130, resume exactly."""

import os
import signal
import subprocess
import time

import pytest
import torch

from support import (
    LEARNS,
    LEARNS_CLI,
    TINY,
    VGG_BIN,
    assert_learned,
    epochs_of,
    records,
    run_cli,
    tiny_config,
    weights_of,
)
from vgg import training as T

# The tiny net that learns in two epochs (support.LEARNS_CLI: three classes, Glorot, no dropout).
ARGS = [*TINY, *LEARNS_CLI, "--epochs", "2", "--deterministic"]


def test_sigterm_mid_epoch_checkpoints_exits_143_and_resumes_bitwise(tmp_path):
    stopped, ref = tmp_path / "stopped", tmp_path / "ref"
    proc = subprocess.Popen([*VGG_BIN, "train", *ARGS, "--save-every", "4", "--output", str(stopped)],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            env={**os.environ, "OMP_NUM_THREADS": "1"})
    deadline, sent = time.monotonic() + 240, False
    while time.monotonic() < deadline and proc.poll() is None:
        try:
            seen = T.read_state(stopped / "state.safetensors", tensors=False)
        except (ValueError, FileNotFoundError):
            seen = None
        if seen and seen["epoch"] == 1 and seen["step"] > 0:  # mid-way through the second epoch
            proc.send_signal(signal.SIGTERM)
            sent = True
            break
        time.sleep(0.01)
    out, err = proc.communicate(timeout=240)
    assert sent, f"the run ended before the signal: {err}"
    assert proc.returncode == 143 == T.exit_code(signal.SIGTERM), err
    assert "SIGTERM: stopping after this step" in err and "vgg train: stopped by SIGTERM at epoch 2" in err
    assert f"vgg train --resume {stopped}" in err
    state = T.read_state(stopped / "state.safetensors", tensors=False)
    steps = state["global_step"] - state["step"]  # those of the first epoch
    assert state["epoch"] == 1 and 0 < state["step"] < steps  # a step boundary inside the second epoch
    assert records(stopped)[-1]["event"] == "stopped"
    assert not list(stopped.glob(".*.tmp"))  # a clean stop leaves no temporary file
    # What a SIGKILL during a checkpoint write leaves behind is removed when the run resumes.
    (stopped / ".state.safetensors.x1y2z3.tmp").write_bytes(b"\0" * 1024)
    r = run_cli("train", *ARGS, "--resume", "--output", str(stopped))  # the original flags, repeated
    assert r.returncode == 0, r.stderr
    assert "removed 1 temporary file(s)" in r.stdout and not list(stopped.glob(".*.tmp"))
    r = run_cli("train", *ARGS, "--output", str(ref))
    assert r.returncode == 0, r.stderr
    history = assert_learned(ref)
    a, b = weights_of(ref), weights_of(stopped)
    assert a.keys() == b.keys()
    for k in a:
        assert torch.equal(a[k], b[k]), k
    keys = ("epoch", "step", "train_loss", "train_accuracy", "val_loss", "val_accuracy", "lr")
    assert [[e[k] for k in keys] for e in history] == [[e[k] for k in keys] for e in epochs_of(stopped)]


def test_ctrl_c_stops_at_the_step_it_came_in_and_resumes_exactly(tmp_path, monkeypatch):
    before = signal.getsignal(signal.SIGINT), signal.getsignal(signal.SIGTERM)
    kw = {**LEARNS, "limit": 256}
    T.train(tiny_config(tmp_path, "ref", **kw))
    per_epoch = epochs_of(tmp_path / "ref")[0]["step"]
    calls = {"n": 0}
    real = T.loop.forward_backward

    def interrupted(*args, **kw):  # Ctrl-C arrives during the third step of the second epoch
        calls["n"] += 1
        if calls["n"] == per_epoch + 3:
            os.kill(os.getpid(), signal.SIGINT)
        return real(*args, **kw)

    with monkeypatch.context() as m:
        m.setattr(T.loop, "forward_backward", interrupted)
        with pytest.raises(T.Stopped) as e:
            T.train(tiny_config(tmp_path, "stopped", **kw))
    assert e.value.code == 130 and "stopped by SIGINT at epoch 2, step 3" in str(e.value)
    assert (signal.getsignal(signal.SIGINT), signal.getsignal(signal.SIGTERM)) == before  # put back
    state = T.read_state(tmp_path / "stopped" / "state.safetensors", tensors=False)
    assert (state["epoch"], state["step"], state["global_step"]) == (1, 3, per_epoch + 3)
    T.train(T.resume_config(tmp_path / "stopped"), resume=True)
    a, b = weights_of(tmp_path / "ref"), weights_of(tmp_path / "stopped")
    for k in a:
        assert torch.equal(a[k], b[k]), k


def test_a_second_signal_acts_at_once():
    before = signal.getsignal(signal.SIGTERM)
    with T.StopRequests() as stop:
        os.kill(os.getpid(), signal.SIGINT)
        assert stop.requested and stop.signum == signal.SIGINT
        with pytest.raises(KeyboardInterrupt):
            os.kill(os.getpid(), signal.SIGINT)
            time.sleep(1)
    assert signal.getsignal(signal.SIGTERM) == before
