"""The loop: run folders, accumulation, non-finite loss, exact resume after SIGKILL, 2 processes == 1."""

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

import vgg
from support import TINY, VGG_BIN, epochs_of, records, run_cli, tensorboard_scalars, tiny_config, weights_of
from vgg import cli, data
from vgg import training as T


def test_run_folder_contents_and_load_model(tmp_path):
    r = T.train(tiny_config(tmp_path, epochs=2, batch_norm=True))
    out = Path(r.output)
    for name in ("config.toml", "log.jsonl", "last.safetensors", "best.safetensors", "state.safetensors",
                 "curves.png"):
        assert (out / name).is_file(), name
    model = vgg.load_model(out)
    assert model.classes == data.FASHION_MNIST_CLASSES and model.in_channels == 1
    assert model.info["train_scale"] == [32, 36] and len(model.info["pca"]["eigval"]) == 1
    assert model.info["train_config"]["epochs"] == 2
    assert model.normalization.std == (1.0,)  # Sec. 2: only the mean is subtracted
    assert abs(model.normalization.mean[0] - 72.9) < 5  # Fashion-MNIST's mean pixel
    recs = epochs_of(out)
    assert [r["epoch"] for r in recs] == [1, 2] and all(0 <= r["val_accuracy"] <= 100 for r in recs)
    assert (out / "curves.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    with pytest.raises(ValueError, match="already holds a run"):
        T.train(tiny_config(tmp_path))


def test_accumulation_equals_one_big_batch(tmp_path):
    # Without BN and dropout, 8 images in one step and 4 + 4 accumulated give the same gradient.
    kw = dict(dropout=0.0, limit=64, batch_size=8, epochs=1, lr=0.05)
    a = T.train(tiny_config(tmp_path, "a", **kw))
    b = T.train(tiny_config(tmp_path, "b", micro_batch=4, **kw))
    wa, wb = weights_of(a.output), weights_of(b.output)
    for k in wa:
        torch.testing.assert_close(wa[k], wb[k], rtol=1e-5, atol=1e-6)
    # Control: two real steps of 4 are not one step of 8.
    c = T.train(tiny_config(tmp_path, "c", **{**kw, "batch_size": 4}))
    assert not torch.allclose(weights_of(c.output)["features.0.weight"], wa["features.0.weight"], atol=1e-6)


def test_non_finite_loss_stops_and_keeps_the_last_good_checkpoint(tmp_path, monkeypatch, capsys):
    calls = {"n": 0}
    real = T.Classification.loss

    def faulty(self, logits, labels):
        calls["n"] += 1
        loss = real(self, logits, labels)
        return loss * float("nan") if calls["n"] > 13 else loss

    monkeypatch.setattr(T.Classification, "loss", faulty)
    out = tmp_path / "nan"
    argv = ["train", *TINY, "--limit", "64", "--batch-size", "8", "--epochs", "3", "--save-every", "3",
            "--output", str(out)]
    with pytest.raises(SystemExit) as e:
        cli.main(argv)
    assert e.value.code == 3
    err = capsys.readouterr().err
    assert "vgg train: error: the training loss became NaN or infinite" in err and "last good" in err
    # Epoch 1: 8 steps (+1 loss call for val); steps 3, 6, 8, 9, 12 were saved; NaN came at step 13.
    state = T.read_state(out / "state.safetensors", tensors=False)
    assert (state["epoch"], state["step"], state["global_step"]) == (1, 4, 12)
    model = vgg.load_model(out / "last.safetensors")
    assert all(torch.isfinite(v).all() for v in model.state_dict().values() if v.is_floating_point())
    assert records(out)[-1]["event"] == "diverged"


def test_real_divergence_is_caught(tmp_path):
    r = run_cli("train", *TINY, "--limit", "32", "--batch-size", "8", "--epochs", "1", "--lr", "1e6",
                "--dropout", "0", "--output", str(tmp_path / "big"))
    assert r.returncode == 3, r.stderr
    assert "NaN or infinite" in r.stderr and "no checkpoint had been written yet" in r.stderr


def test_sigkill_mid_epoch_then_resume_is_bitwise_equal(tmp_path):
    args = [*TINY, "--batch-norm", "--limit", "512", "--batch-size", "16", "--epochs", "3", "--deterministic",
            "--save-every", "5", "--lr", "0.02"]
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
    assert at_kill["global_step"] < 3 * 32
    r = run_cli("train", "--resume", "--output", str(killed))
    assert r.returncode == 0, r.stderr
    r = run_cli("train", *args, "--output", str(ref))
    assert r.returncode == 0, r.stderr
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
    args = [*TINY, "--dropout", "0", "--limit", "128", "--batch-size", "16", "--epochs", "2", "--lr", "0.05"]
    torchrun = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2",
                "-m", "vgg", "train"]
    r = subprocess.run([*torchrun, *args, "--output", str(tmp_path / "ddp")], capture_output=True, text=True,
                       timeout=300, env={**os.environ, "OMP_NUM_THREADS": "1"})
    assert r.returncode == 0, r.stderr[-3000:]
    assert "2 process(es)" in r.stdout
    r = run_cli("train", *args, "--output", str(tmp_path / "one"))
    assert r.returncode == 0, r.stderr
    a, b = weights_of(tmp_path / "ddp"), weights_of(tmp_path / "one")
    for k in a:
        torch.testing.assert_close(a[k], b[k], rtol=1e-4, atol=1e-5)
    da, db = epochs_of(tmp_path / "ddp"), epochs_of(tmp_path / "one")
    assert [e["val_accuracy"] for e in da] == [e["val_accuracy"] for e in db]
    state = T.read_state(tmp_path / "ddp" / "state.safetensors", tensors=False)
    assert state["world_size"] == 2


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
