"""Training: config, recipe pieces, exact resume after SIGKILL, DDP == one process, accumulation,
non-finite loss, initialisation from A / a checkpoint / pretrained weights, fine-tuning."""

import copy
import importlib.util
import json
import math
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

import vgg
from vgg import cli, data, distributed
from vgg import train as T
from vgg.models import attach_cpu_inference
from vgg.weights import save_model

VGG_BIN = [sys.executable, "-m", "vgg"]
# A tiny net and tiny data: every run below takes a second or two.
TINY = ["--arch", "A", "--width", "0.125", "--crop-size", "32", "--scale", "32", "36", "--device", "cpu",
        "--no-progress"]


@pytest.fixture(autouse=True)
def one_thread():
    """Tiny nets run fastest on one thread, and the suite shares the machine with other work."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def tiny_config(tmp_path, name="run", **kw):
    values = dict(arch="A", width=0.125, crop_size=32, scale=(32, 36), limit=64, batch_size=8, epochs=1,
                  device="cpu", progress=False, output=str(tmp_path / name))
    values.update(kw)
    return T.TrainConfig(**values)


def weights_of(folder, name="last.safetensors"):
    return load_file(str(Path(folder) / name))


def run_cli(*args, env=None, timeout=300):
    return subprocess.run([*VGG_BIN, *args], capture_output=True, text=True, timeout=timeout,
                          env={**os.environ, "OMP_NUM_THREADS": "1", **(env or {})})


def records(folder):
    lines = (Path(folder) / "log.jsonl").read_text().splitlines()
    return [json.loads(line) for line in lines if line.strip()]


def epochs_of(folder):
    return [r for r in records(folder) if "event" not in r]


def tensorboard_scalars(folder):
    """{tag: [(epoch, value)]} as TensorBoard itself reads the run (orphaned points purged)."""
    accumulator = pytest.importorskip("tensorboard.backend.event_processing.event_accumulator")
    events = accumulator.EventAccumulator(str(Path(folder) / "tensorboard"))
    events.Reload()
    return {tag: [(e.step, e.value) for e in events.Scalars(tag)] for tag in events.Tags()["scalars"]}


# -- config ------------------------------------------------------------------------------------------

def test_defaults_are_the_papers():
    c = T.TrainConfig()
    assert (c.batch_size, c.momentum, c.weight_decay, c.lr, c.epochs, c.dropout) == (256, 0.9, 5e-4, 1e-2,
                                                                                     74, 0.5)
    assert (c.lr_factor, c.lr_drops, c.crop_size, c.resolved_scale(), c.init) == (0.1, 3, 224, (256, 256),
                                                                                  "normal")
    assert T.TrainConfig(scale=[256, 512]).resolved_val_scale() == 384  # Sec. 4.1: Q = (Smin+Smax)/2
    assert T.TrainConfig(crop_size=32).resolved_scale() == (37, 37)


def test_config_collects_every_problem():
    with pytest.raises(ValueError) as e:
        T.TrainConfig(epochs=0, lr=-1.0, crop_size=40, arch="vgg99", scale=[300, 256], lr_factor=2.0)
    msg = str(e.value)
    for part in ("epochs must be at least 1", "lr must be >= 0", "unknown architecture 'vgg99'",
                 "crop_size must be a positive multiple of 32", "Smin <= Smax", "lr_factor"):
        assert part in msg
    with pytest.raises(ValueError, match="epochs must be an integer"):
        T.TrainConfig(epochs=2.5)
    with pytest.raises(ValueError, match="at most one of"):
        T.TrainConfig(init_from="a", init_from_shallow="b")
    with pytest.raises(ValueError, match="S must be at least the crop size"):
        T.TrainConfig(crop_size=224, scale=200)


def test_toml_recipe_flags_override_and_unknown_keys(tmp_path):
    recipe = tmp_path / "r.toml"
    recipe.write_text('arch = "vgg16"\nlr = 0.001\nscale = [256, 512]\nepochs = 3\nbatch-norm = true\n')
    c = T.make_config(recipe, {"lr": 0.5, "epochs": 7})
    assert (c.arch, c.lr, c.scale, c.epochs, c.batch_norm) == ("vgg16", 0.5, (256, 512), 7, True)
    bad = tmp_path / "bad.toml"
    bad.write_text("lerning_rate = 0.1\nepochs = 2\n")
    with pytest.raises(ValueError, match="unknown config key 'lerning_rate'"):
        T.make_config(bad)
    table = tmp_path / "table.toml"
    table.write_text("[optim]\nlr = 0.1\n")
    with pytest.raises(ValueError, match="tables are not supported"):
        T.make_config(table)
    # The resolved config a run writes reads back as a recipe.
    out = tmp_path / "config.toml"
    out.write_text(T.to_toml(c.to_dict()))
    assert T.make_config(out) == c


def test_cli_errors_are_one_line(tmp_path, capsys):
    assert cli.main(["train", "--epochs", "0", "--lr", "-1", "--output", str(tmp_path / "x")]) == 2
    err = capsys.readouterr().err
    assert err.startswith("vgg train: error: invalid training config") and "epochs" in err and "lr" in err
    bad = tmp_path / "bad.toml"
    bad.write_text("epoch = 3\n")
    assert cli.main(["train", "--config", str(bad)]) == 2
    assert "unknown config key 'epoch' (did you mean 'epochs'?)" in capsys.readouterr().err
    assert cli.main(["train", "--config", str(tmp_path / "missing.toml")]) == 2
    assert "does not exist" in capsys.readouterr().err
    assert cli.main(["train", "--resume", "--output", str(tmp_path / "none")]) == 2
    assert "cannot resume" in capsys.readouterr().err


def test_plateau_divides_by_ten_at_most_three_times():
    p = T.Plateau(patience=2, threshold=0.0, drop=0.1, max_drops=3)
    accs = [50, 60, 60, 59, 61, 61, 61, 61, 61, 61, 61, 61, 61]
    drops = [p.step(a) for a in accs]
    assert [i for i, d in enumerate(drops) if d] == [3, 6, 8]  # after 2 epochs without a gain
    assert p.drops == 3 and math.isclose(p.factor, 1e-3)
    assert not any(p.step(0) for _ in range(10))  # never a fourth time
    q = T.Plateau(patience=1, threshold=0.5)
    assert [q.step(a) for a in (80, 81, 81.3)] == [False, False, True]  # +0.3 < threshold


# -- the loop ----------------------------------------------------------------------------------------

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


def test_tensorboard_shows_the_log(tmp_path):
    r = T.train(tiny_config(tmp_path, epochs=2))
    scalars = tensorboard_scalars(r.output)
    for key in ("train_loss", "val_accuracy", "lr"):
        assert scalars[key] == [(e["epoch"], pytest.approx(e[key], rel=1e-6)) for e in epochs_of(r.output)]


def test_validation_takes_the_fused_path_and_agrees_with_the_modules():
    torch.manual_seed(0)
    images = torch.randint(0, 256, (40, 1, 32, 32), dtype=torch.uint8)
    dataset = data.TensorDataset(images, torch.arange(40) % 10, [str(i) for i in range(10)], "toy", "val")
    model = vgg.create_model("vgg11_bn", width=0.125, crop_size=32, num_classes=10, in_channels=1).eval()
    for m in model.modules():
        if isinstance(m, torch.nn.BatchNorm2d):
            m.running_mean.normal_(), m.running_var.uniform_(0.5, 2.0)
    fast = attach_cpu_inference(copy.deepcopy(model))
    seen = []
    fast.fused_features._pack = lambda x, pack=fast.fused_features._pack: seen.append(x.shape) or pack(x)
    args = dict(scale=32, batch_size=16, ctx=distributed.Context(), amp=False, channels_last=True)
    slow, quick = T.validate(model, dataset, **args), T.validate(fast, dataset, **args)
    assert seen and quick["images"] == slow["images"] == 40
    assert quick["loss"] == pytest.approx(slow["loss"], rel=1e-4)
    assert quick["accuracy"] == slow["accuracy"]


def test_resumed_log_drops_what_came_after_the_checkpoint(tmp_path):
    log = T.RunLog(tmp_path, keep_until_step=None)
    for epoch in (1, 2, 3):
        log.write({"epoch": epoch, "step": 10 * epoch, "val_accuracy": float(epoch)})
    log.close()
    log = T.RunLog(tmp_path, keep_until_step=15)  # killed during epoch 2, after epoch 3 was logged
    for epoch in (2, 3):
        log.write({"epoch": epoch, "step": 10 * epoch, "val_accuracy": 10.0 * epoch})
    log.close()
    assert [(r["epoch"], r["val_accuracy"]) for r in records(tmp_path)] == [(1, 1.0), (2, 20.0), (3, 30.0)]
    if importlib.util.find_spec("tensorboard"):
        assert tensorboard_scalars(tmp_path)["val_accuracy"] == [(1, 1.0), (2, 20.0), (3, 30.0)]


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
    real = T.cross_entropy

    def faulty(logits, labels):
        calls["n"] += 1
        loss = real(logits, labels)
        return loss * float("nan") if calls["n"] > 13 else loss

    monkeypatch.setattr(T, "cross_entropy", faulty)
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


def test_resume_refuses_to_change_the_recipe(tmp_path):
    out = T.train(tiny_config(tmp_path)).output
    with pytest.raises(ValueError, match="cannot change lr"):
        T.run_config(None, {"lr": 0.5, "output": str(out)}, resume=True)
    c = T.run_config(None, {"epochs": 2, "output": str(out)}, resume=True)
    assert c.epochs == 2 and c.arch == "vgg11"
    r = T.train(c, resume=True)
    assert [e["epoch"] for e in epochs_of(r.output)] == [1, 2]


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


# -- initialisation ----------------------------------------------------------------------------------

def stats():
    return {"mean": [72.0], "eigval": [1.0], "eigvec": [[1.0]]}


def test_init_from_shallow_copies_net_a(tmp_path):
    torch.manual_seed(1)
    a = vgg.create_model("A", num_classes=10, width=0.125, crop_size=32, in_channels=1)
    a.normalization = vgg.Normalization((70.0,), (1.0,))
    save_model(a, tmp_path / "a.safetensors")
    c = tiny_config(tmp_path, arch="D", init_from_shallow=str(tmp_path / "a.safetensors"))
    torch.manual_seed(5)
    d = T.build_model(c, data.FASHION_MNIST_CLASSES, 1, stats())
    torch.manual_seed(5)
    d0 = T.build_model(tiny_config(tmp_path, arch="D"), data.FASHION_MNIST_CLASSES, 1, stats())
    # Sec. 3.1: the first four convs and the three FC layers come from A, the rest stays random.
    for dst, src in (("features.0", "features.0"), ("features.5", "features.3"),
                     ("features.10", "features.6"), ("features.12", "features.8"),
                     ("classifier.0", "classifier.0"), ("classifier.6", "classifier.6")):
        assert torch.equal(d.state_dict()[dst + ".weight"], a.state_dict()[src + ".weight"])
    copied = {"features.0", "features.5", "features.10", "features.12", "classifier.0", "classifier.3",
              "classifier.6"}
    for k, v in d.state_dict().items():
        if k.endswith(".weight"):  # (biases start at zero either way)
            assert torch.equal(v, d0.state_dict()[k]) == (k.rsplit(".", 1)[0] not in copied), k
    assert d.normalization.mean == (70.0,)
    r = run_cli("train", *TINY, "--arch", "D", "--init-from-shallow", str(tmp_path / "a.safetensors"),
                "--limit", "32", "--batch-size", "8", "--epochs", "1", "--output", str(tmp_path / "d"))
    assert r.returncode == 0, r.stderr
    assert vgg.load_model(tmp_path / "d").arch == "vgg16"
    r = run_cli("train", *TINY, "--arch", "D", "--width", "0.25", "--init-from-shallow",
                str(tmp_path / "a.safetensors"), "--limit", "32", "--output", str(tmp_path / "bad"))
    assert r.returncode == 2 and "shape" in r.stderr


def test_init_from_checkpoint_and_pretrained_new_head(tmp_path):
    torch.manual_seed(2)
    src = vgg.create_model("A", num_classes=5, width=0.125, crop_size=32, in_channels=1)
    src.classes = [f"c{i}" for i in range(5)]
    save_model(src, tmp_path / "five.safetensors")
    for key in ("init_from", "pretrained"):
        c = tiny_config(tmp_path, **{key: str(tmp_path / "five.safetensors")})
        m = T.build_model(c, data.FASHION_MNIST_CLASSES, 1, stats())
        assert m.num_classes == 10 and m.classes == data.FASHION_MNIST_CLASSES
        for k, v in src.state_dict().items():
            if not k.startswith("classifier.6"):
                assert torch.equal(m.state_dict()[k], v), (key, k)
    # Same classes: the whole net is taken, head included.
    ten = vgg.create_model("A", num_classes=10, width=0.125, crop_size=32, in_channels=1)
    save_model(ten, tmp_path / "ten.safetensors")
    m = T.build_model(tiny_config(tmp_path, init_from=str(tmp_path / "ten.safetensors")),
                      data.FASHION_MNIST_CLASSES, 1, stats())
    assert torch.equal(m.classifier[6].weight, ten.classifier[6].weight)
    with pytest.raises(ValueError, match="does not fit"):
        T.build_model(tiny_config(tmp_path, arch="B", init_from=str(tmp_path / "ten.safetensors")),
                      data.FASHION_MNIST_CLASSES, 1, stats())


def test_rgb_weights_fit_greyscale_data():
    torch.manual_seed(3)
    rgb = vgg.create_model("A", num_classes=4, width=0.125, crop_size=32)
    rgb.normalization = vgg.Normalization((100.0, 100.0, 100.0), (50.0, 60.0, 70.0))
    grey = vgg.create_model("A", num_classes=4, width=0.125, crop_size=32)
    grey.load_state_dict(rgb.state_dict())
    grey.normalization = rgb.normalization
    T.adapt_input_channels(grey, 1)
    x = torch.randint(0, 256, (2, 1, 32, 32), dtype=torch.uint8)
    with torch.no_grad():
        want = rgb.eval()(rgb.normalization(x.expand(-1, 3, -1, -1)))
        got = grey.eval()(grey.normalization(x))
    torch.testing.assert_close(got, want, rtol=1e-4, atol=1e-4)


# -- fine-tuning -------------------------------------------------------------------------------------

def test_select_classes():
    full = data.open_dataset("fashion-mnist", "val", limit=200)
    sub = T.select_classes(full, ["Sneaker", 0, "3"])
    assert sub.classes == ["Sneaker", "T-shirt/top", "Dress"]
    want = [(i, {7: 0, 0: 1, 3: 2}[int(y)]) for i, y in enumerate(full.labels) if int(y) in (7, 0, 3)]
    assert sub.labels.tolist() == [y for _, y in want]
    assert torch.equal(sub.images, full.images[[i for i, _ in want]])
    with pytest.raises(ValueError, match="'Socks' is not one of"):
        T.select_classes(full, ["Socks"])
    with pytest.raises(ValueError, match="classes must be a non-empty list"):
        T.TrainConfig(classes=[])


def test_recipes_are_valid():
    recipes = sorted(Path(__file__).parent.parent.glob("recipes/*.toml"))
    assert len(recipes) >= 12
    for recipe in recipes:
        T.make_config(recipe)


def test_finetune_from_a_class_subset(tmp_path):
    keep = [0, 1, 2, 3, 4]
    pre = T.train(tiny_config(tmp_path, "pre", batch_norm=True, limit=160, classes=keep, epochs=1))
    source = vgg.load_model(pre.output)
    assert source.classes == [data.FASHION_MNIST_CLASSES[k] for k in keep]
    out = tmp_path / "ft"
    common = ["--data", "fashion-mnist", "--limit", "64", "--batch-size", "8", "--device", "cpu",
              "--no-progress", "--output", str(out)]
    # Stage 1 only: a new 10-class head, the conv layers (and their BN statistics) untouched.
    assert cli.main(["finetune", "--pretrained", str(pre.output), "--epochs", "1", "--freeze-epochs", "1",
                     *common]) == 0
    tuned = vgg.load_model(out / "last.safetensors")
    assert tuned.classes == data.FASHION_MNIST_CLASSES and tuned.num_classes == 10
    for k, v in source.features.state_dict().items():
        assert torch.equal(tuned.features.state_dict()[k], v), k
    assert not torch.equal(tuned.classifier[3].weight, source.classifier[3].weight)
    groups = T.read_state(out / "state.safetensors", tensors=False)["optimizer"]["param_groups"]
    lrs = {g["name"]: g["lr"] for g in groups}
    assert lrs == {"features": 0.0, "fc": 1e-3, "head": pytest.approx(1e-2)}  # head x10
    # Stage 2, as a resumed run: everything trains, at a tenth of the rates.
    assert cli.main(["finetune", "--pretrained", str(pre.output), "--resume", "--epochs", "2", *common]) == 0
    tuned = vgg.load_model(out / "last.safetensors")
    assert not torch.equal(tuned.features[0].weight, source.features[0].weight)
    groups = T.read_state(out / "state.safetensors", tensors=False)["optimizer"]["param_groups"]
    lrs = {g["name"]: g["lr"] for g in groups}
    assert lrs == {"features": pytest.approx(1e-4), "fc": pytest.approx(1e-4), "head": pytest.approx(1e-3)}
    assert [e["epoch"] for e in epochs_of(out)] == [1, 2]


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
