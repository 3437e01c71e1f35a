"""The loop: run folders, accumulation, non-finite loss, exact resume after SIGKILL, 2 processes == 1."""

import math
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

import vgg
from support import (
    LEARNED_CLASSES,
    LEARNS,
    LEARNS_BN,
    LEARNS_BN_CLI,
    LEARNS_CLI,
    START_LR,
    TINY,
    VGG_BIN,
    assert_learned,
    assert_moved_alike,
    epochs_of,
    learning_config,
    records,
    run_cli,
    start_net,
    tensorboard_scalars,
    tiny_config,
    weights_of,
)
from vgg import cli, data
from vgg import training as T


def test_run_folder_contents_and_load_model(tmp_path):
    r = T.train(learning_config(tmp_path, **LEARNS_BN))
    out = Path(r.output)
    for name in ("config.toml", "log.jsonl", "last.safetensors", "best.safetensors", "state.safetensors",
                 "curves.png"):
        assert (out / name).is_file(), name
    recs = assert_learned(out)  # training learns: loss well below ln 3, accuracy well above chance
    assert [r["epoch"] for r in recs] == [1, 2]
    assert recs[-1]["train_loss"] < recs[0]["train_loss"] and recs[-1]["train_accuracy"] > 50
    model = vgg.load_model(out)
    assert model.classes == LEARNED_CLASSES and model.in_channels == 1
    assert model.info["train_scale"] == [32, 36] and len(model.info["pca"]["eigval"]) == 1
    assert model.info["train_config"]["epochs"] == 2
    # best.safetensors is the best epoch's net, last.safetensors the last one's
    best = max(recs, key=lambda e: e["val_accuracy"])
    assert (model.info["epoch"], model.info["val_accuracy"]) == (best["epoch"], best["val_accuracy"])
    assert vgg.load_model(out / "last.safetensors").info["epoch"] == 2
    assert model.normalization.std == (1.0,)  # Sec. 2: only the mean is subtracted
    train_set = T.open_data(learning_config(tmp_path))[0]
    assert model.normalization.mean[0] == pytest.approx(train_set.images.double().mean().item(), abs=0.5)
    assert (out / "curves.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    with pytest.raises(ValueError, match="already holds a run"):
        T.train(tiny_config(tmp_path))


def test_accumulation_equals_one_big_batch(tmp_path):
    # Without BN and dropout, 8 images in one step and 4 + 4 accumulated give the same gradient.
    # Without weight decay only the gradients move the weights, and the net learns.
    start = start_net(tmp_path / "start.safetensors")
    kw = dict(init_from=str(tmp_path / "start.safetensors"), lr=START_LR, weight_decay=0.0)
    a = T.train(learning_config(tmp_path, "a", **kw))
    assert_learned(a.output)
    b = T.train(learning_config(tmp_path, "b", micro_batch=4, **kw))
    wa, wb = weights_of(a.output), weights_of(b.output)
    assert_moved_alike(wb, wa, start, rtol=1e-3)
    # Control, differing in the accumulation alone: two real steps of 4 are not one step of 8.
    wc = weights_of(T.train(learning_config(tmp_path, "c", batch_size=4, **kw)).output)
    for k in ("features.0.weight", "classifier.6.weight"):
        assert (wc[k] - wa[k]).abs().max() > 0.1 * (wa[k] - start[k]).abs().max(), k


def test_non_finite_loss_stops_and_keeps_the_last_good_checkpoint(tmp_path, monkeypatch, capsys):
    # Two epochs learn, then the loss turns NaN at the 6th step of the third.
    train_set, val_set = T.open_data(learning_config(tmp_path))
    steps, val_calls = len(train_set) // 8, math.ceil(len(val_set) / 64)  # loss calls per epoch
    calls = {"n": 0}
    real = T.Classification.loss

    def faulty(self, logits, labels):
        calls["n"] += 1
        loss = real(self, logits, labels)
        return loss * float("nan") if calls["n"] > 2 * (steps + val_calls) + 5 else loss

    monkeypatch.setattr(T.Classification, "loss", faulty)
    out = tmp_path / "nan"
    argv = ["train", *TINY, *LEARNS_CLI, "--epochs", "4", "--save-every", "4", "--output", str(out)]
    with pytest.raises(SystemExit) as e:
        cli.main(argv)
    assert e.value.code == 3
    err = capsys.readouterr().err
    assert "vgg train: error: the training loss became NaN or infinite" in err and "last good" in err
    assert_learned(out)
    # Saved: every 4th step and each epoch's end; the last before the NaN step 2 x steps + 6.
    last = max(2 * steps, (2 * steps + 5) // 4 * 4)
    state = T.read_state(out / "state.safetensors", tensors=False)
    assert (state["epoch"], state["step"], state["global_step"]) == (2, last - 2 * steps, last)
    model = vgg.load_model(out / "last.safetensors")
    assert all(torch.isfinite(v).all() for v in model.state_dict().values() if v.is_floating_point())
    assert records(out)[-1]["event"] == "diverged" and records(out)[-1]["step"] == 2 * steps + 6


def test_real_divergence_is_caught(tmp_path):
    # The gradient diverges (no weight decay, which alone would blow up the weights at this rate) ...
    r = run_cli("train", *TINY, *LEARNS_CLI, "--lr", "1e6", "--weight-decay", "0", "--epochs", "1",
                "--output", str(tmp_path / "big"))
    assert r.returncode == 3, r.stderr
    assert "NaN or infinite" in r.stderr and "no checkpoint had been written yet" in r.stderr
    # ... where the same run at a sane rate learns.
    assert_learned(T.train(learning_config(tmp_path, "sane", weight_decay=0.0)).output)


def test_sigkill_mid_epoch_then_resume_is_bitwise_equal(tmp_path):
    # BN and dropout: the run's RNG states, BN statistics and momentum must all come back.
    args = [*TINY, *LEARNS_CLI, *LEARNS_BN_CLI, "--dropout", "0.5", "--epochs", "3", "--deterministic",
            "--save-every", "5"]
    ref = tmp_path / "ref"
    killed = tmp_path / "killed"
    proc = subprocess.Popen([*VGG_BIN, "train", *args, "--output", str(killed)], stdout=subprocess.DEVNULL,
                            stderr=subprocess.PIPE, text=True, env={**os.environ, "OMP_NUM_THREADS": "1"})
    state = killed / "state.safetensors"
    deadline = time.monotonic() + 120
    seen = None
    while time.monotonic() < deadline and proc.poll() is None:
        try:
            seen = T.read_state(state, tensors=False)
        except (ValueError, FileNotFoundError):
            seen = None
        if seen and seen["epoch"] == 1 and seen["step"] > 0:  # mid-way through the second epoch
            proc.send_signal(signal.SIGKILL)
            break
        time.sleep(0.01)
    proc.wait()
    assert proc.returncode == -signal.SIGKILL, f"run ended before the kill: {proc.stderr.read()}"
    at_kill = T.read_state(state, tensors=False)
    assert at_kill["epoch"] == 1 and at_kill["step"] > 0
    r = run_cli("train", "--resume", "--output", str(killed))
    assert r.returncode == 0, r.stderr
    r = run_cli("train", *args, "--output", str(ref))
    assert r.returncode == 0, r.stderr
    assert_learned(ref)
    a, b = weights_of(ref), weights_of(killed)
    assert a.keys() == b.keys()
    for k in a:
        assert torch.equal(a[k], b[k]), k
    # The resumed log is the uninterrupted one: same epochs, same numbers.
    keys = ("epoch", "step", "train_loss", "train_accuracy", "val_loss", "val_accuracy", "lr")
    assert [[e[k] for k in keys] for e in epochs_of(ref)] == [[e[k] for k in keys] for e in epochs_of(killed)]
    assert any(e.get("event") == "resume" for e in records(killed))
    # So does TensorBoard's view of it: the points written after the checkpoint are purged.
    if (killed / "tensorboard").is_dir():
        a, b = tensorboard_scalars(ref), tensorboard_scalars(killed)
        assert [a[k] for k in keys[2:]] == [b[k] for k in keys[2:]]


def test_two_processes_equal_one(tmp_path):
    # Equal only without BN (each process normalises its own half of the batch) and without dropout
    # (each process draws its own masks); the data, its order and augmentation are the same by design.
    # From a known start, without weight decay: every weight moves by its averaged gradient alone.
    start = start_net(tmp_path / "start.safetensors")
    args = [*TINY, *LEARNS_CLI, "--init-from", str(tmp_path / "start.safetensors"), "--lr", str(START_LR),
            "--weight-decay", "0", "--epochs", "2"]
    torchrun = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2",
                "-m", "vgg", "train"]
    r = subprocess.run([*torchrun, *args, "--output", str(tmp_path / "ddp")], capture_output=True, text=True,
                       timeout=300, env={**os.environ, "OMP_NUM_THREADS": "1"})
    assert r.returncode == 0, r.stderr[-3000:]
    assert "2 process(es)" in r.stdout
    r = run_cli("train", *args, "--output", str(tmp_path / "one"))
    assert r.returncode == 0, r.stderr
    assert_learned(tmp_path / "one")
    # Sec. 3.3: the gradients of every parameter are averaged over the processes, so every weight
    # moves as in one process, up to float rounding.
    assert_moved_alike(weights_of(tmp_path / "ddp"), weights_of(tmp_path / "one"), start, rtol=1e-3)
    da, db = epochs_of(tmp_path / "ddp"), epochs_of(tmp_path / "one")
    assert [e["val_accuracy"] for e in da] == [e["val_accuracy"] for e in db]
    assert [e["train_loss"] for e in da] == pytest.approx([e["train_loss"] for e in db], rel=1e-4)
    state = T.read_state(tmp_path / "ddp" / "state.safetensors", tensors=False)
    assert state["world_size"] == 2


def test_a_run_leaves_a_process_group_it_did_not_set_up(tmp_path):
    # `torchrun -m vgg reproduce` sets up one group for all its training steps: a run inside it must
    # not tear the group down (the next step would find none, and the pipeline's barriers do nothing).
    import torch.distributed as dist

    dist.init_process_group("gloo", init_method=f"file://{tmp_path / 'rendezvous'}", rank=0, world_size=1)
    try:
        T.train(tiny_config(tmp_path))
        assert dist.is_initialized()
    finally:
        if dist.is_initialized():
            dist.destroy_process_group()


def test_unreadable_files_are_skipped_and_counted_at_the_end(tmp_path, capsys):
    from PIL import Image

    g = torch.Generator().manual_seed(0)
    for split in ("train", "val"):
        for cls in ("a", "b"):
            folder = tmp_path / "data" / split / cls
            folder.mkdir(parents=True)
            for i in range(4):
                pixels = torch.randint(0, 256, (40, 48, 3), generator=g, dtype=torch.uint8).numpy()
                Image.fromarray(pixels).save(folder / f"{i}.png")
    (tmp_path / "data" / "train" / "a" / "broken.jpg").write_bytes(b"\xff\xd8\xff\xe0 not really")
    (tmp_path / "data" / "val" / "b" / "empty.png").write_bytes(b"")
    config = tiny_config(tmp_path, data=str(tmp_path / "data"), limit=None, batch_size=4)
    with pytest.warns(UserWarning) as warned:
        T.train(config)
    messages = " ".join(str(w.message) for w in warned)
    assert "broken.jpg" in messages and "empty.png: empty file" in messages
    out = capsys.readouterr().out
    assert "skipped 2 unreadable file(s)" in out and "broken.jpg" in out and "empty.png" in out
    event = [r for r in records(tmp_path / "run") if r.get("event") == "skipped_files"]
    assert event and event[0]["count"] == 2


def test_val_split_does_not_depend_on_the_training_seed(tmp_path):
    a = T.open_data(tiny_config(tmp_path, data="fashion-mnist", limit=None, seed=1))[1]
    b = T.open_data(tiny_config(tmp_path, data="fashion-mnist", limit=None, seed=2))[1]
    assert torch.equal(a.labels, b.labels) and torch.equal(a.images[:50], b.images[:50])


def test_resuming_a_finished_run_says_so_and_the_last_epoch_announces_no_drop(tmp_path, capsys):
    # lr_threshold 100: no epoch after the first counts as improving, so with patience 1 the
    # plateau divides the rate after epochs 2 and 3; after the last one (3) no epoch follows.
    out = tmp_path / "run"
    argv = ["train", *TINY, "--batch-norm", "--limit", "64", "--batch-size", "16", "--epochs", "3",
            "--lr-patience", "1", "--lr-threshold", "100", "--output", str(out)]
    assert cli.main(argv) == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[0].startswith("training A (vgg11_bn, width 0.125, crop 32")  # the paper's name first
    epochs = [line for line in lines if line.startswith("epoch ")]
    assert "val plateau: lr / 10, drop 1/3" in epochs[1] and "val plateau" not in epochs[2]
    assert [r["epoch"] for r in records(out) if r.get("event") == "lr_drop"] == [2]
    assert cli.main([*argv, "--resume"]) == 0  # the original command line, with --resume
    printed = capsys.readouterr().out
    assert "nothing to resume" in printed and "has finished its 3 epochs" in printed
    assert "resuming A" not in printed and not any(r.get("event") == "resume" for r in records(out))


def test_a_full_size_net_on_the_cpu_tells_its_epoch_time(tmp_path, capsys, monkeypatch):
    monkeypatch.setattr("vgg.training.runlog.SLOW_EPOCH_SECONDS", 0.0)  # as if this epoch took hours
    T.train(tiny_config(tmp_path, limit=48, batch_size=8))
    out = capsys.readouterr().out
    assert "per epoch on the CPU" in out and "6 batches" in out and "--crop-size 32" in out


def test_train_test_evaluates_the_best_net_on_the_test_split(tmp_path, capsys):
    # vgg train --test: at the end the best checkpoint is evaluated on the test split (dense, the
    # three test scales, flips; Sec. 3.2, 4.2), on the run's classes only.
    out = tmp_path / "run"
    assert cli.main(["train", *TINY, *LEARNS_CLI, "--test", "--output", str(out)]) == 0
    assert_learned(out)
    test = [r for r in records(out) if r.get("event") == "test"]
    assert len(test) == 1 and test[0]["protocol"] == "dense" and test[0]["flip"] is True
    assert test[0]["scales"] == [32, 34, 36]  # {Smin, (Smin + Smax) / 2, Smax} for S in [32, 36]
    test_set = T.select_classes(data.open_dataset("fashion-mnist", "test", limit=512), LEARNS["classes"])
    assert test[0]["images"] == len(test_set) and len(test_set) > 100
    assert test[0]["top1_accuracy"] > 50  # chance is 33%
    from vgg import evaluation as ev

    best, last = vgg.load_model(out), vgg.load_model(out / "last.safetensors")
    by_best = ev.evaluate([best], test_set, protocol="dense", batch_size=256).summary()
    assert test[0]["top1_accuracy"] == pytest.approx(by_best["top1_accuracy"])
    assert f"top-1 accuracy {by_best['top1_accuracy']:.2f}%" in capsys.readouterr().out
    if best.info["epoch"] != last.info["epoch"]:  # and it is the best net's number, not the last's
        by_last = ev.evaluate([last], test_set, protocol="dense", batch_size=256).summary()
        assert by_last["top1_accuracy"] != by_best["top1_accuracy"]


def test_a_plateau_divides_the_rates_in_a_run_and_resumes_with_its_state(tmp_path):
    # lr_threshold 100: no epoch after the first counts as improving, so with patience 1 the plateau
    # divides every rate by 10 after epochs 2 and 3 (and 4, the last, after which no epoch runs).
    lr, kw = LEARNS["lr"], dict(lr_patience=1, lr_threshold=100.0)
    full = T.train(learning_config(tmp_path, "full", epochs=4, **kw)).output
    recs = epochs_of(full)
    assert [r["lr"] for r in recs] == pytest.approx([lr, lr, lr / 10, lr / 100])
    assert [r["lr_drops"] for r in recs][:3] == [0, 1, 2]
    drops = [r for r in records(full) if r.get("event") == "lr_drop"]
    assert [(d["epoch"], d["drops"]) for d in drops][:2] == [(2, 1), (3, 2)]
    assert drops[1]["factor"] == pytest.approx(1e-2)
    # The optimizer ran the last epoch at a hundredth of every group's rate.
    groups = T.read_state(full / "state.safetensors", tensors=False)["optimizer"]["param_groups"]
    assert {g["name"]: g["lr"] for g in groups} == pytest.approx({"features": lr / 100, "fc": lr / 100,
                                                                  "head": lr / 100})
    # Stopped after epoch 2 and resumed, the run goes on from the plateau's saved state.
    half = T.train(learning_config(tmp_path, "half", epochs=2, **kw)).output
    T.train(T.run_config(None, {"epochs": 4, "output": str(half)}, resume=True), resume=True)
    keys = ("epoch", "lr", "lr_drops", "train_loss", "val_accuracy")
    assert [[r[k] for k in keys] for r in epochs_of(half)] == [[r[k] for k in keys] for r in recs]
    # (The drop after epoch 2, the first run's last epoch, is not announced there: see issue 13.)
    resumed = [r for r in records(half) if r.get("event") == "lr_drop"]
    assert [d for d in drops if d["epoch"] > 2] == resumed and resumed
    assert T.read_state(half / "state.safetensors", tensors=False)["plateau"] == \
        T.read_state(full / "state.safetensors", tensors=False)["plateau"]
