"""What a run starts from: net-A transfer, checkpoints, pretrained weights, greyscale data, class
subsets, fine-tuning."""


import pytest
import torch

import vgg
from support import (
    LEARNS_BN,
    LEARNS_BN_CLI,
    LEARNS_CLI,
    TINY,
    assert_close_relative,
    assert_learned,
    epochs_of,
    learning_config,
    order_one,
    tiny_config,
)
from vgg import cli, data
from vgg import training as T
from vgg.weights import save_model


def stats():
    return {"mean": [72.0], "eigval": [1.0], "eigvec": [[1.0]]}


def test_init_from_shallow_copies_net_a(tmp_path, capsys):
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
    # From the command line: D (with BN) starts from a trained net A and learns.
    a_run = T.train(learning_config(tmp_path, "a"))
    assert_learned(a_run.output)
    argv = ["train", *TINY, *LEARNS_CLI, *LEARNS_BN_CLI, "--arch", "D", "--init-from-shallow",
            str(a_run.output)]
    assert cli.main([*argv, "--output", str(tmp_path / "d")]) == 0
    assert_learned(tmp_path / "d")
    assert vgg.load_model(tmp_path / "d").arch == "vgg16_bn"
    capsys.readouterr()
    assert cli.main([*argv, "--width", "0.25", "--output", str(tmp_path / "bad")]) == 2
    assert "shape" in capsys.readouterr().err


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
    rgb = order_one(vgg.create_model("A", num_classes=4, width=0.125, crop_size=32), seed=3)
    rgb.normalization = vgg.Normalization((100.0, 100.0, 100.0), (50.0, 60.0, 70.0))
    grey = vgg.create_model("A", num_classes=4, width=0.125, crop_size=32)
    grey.load_state_dict(rgb.state_dict())
    grey.normalization = rgb.normalization
    T.adapt_input_channels(grey, 1)
    x = torch.randint(0, 256, (2, 1, 32, 32), dtype=torch.uint8)
    with torch.no_grad():
        want = rgb.eval()(rgb.normalization(x.expand(-1, 3, -1, -1)))
        got = grey.eval()(grey.normalization(x))
    assert_close_relative(got, want, rtol=1e-4)


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


def test_finetune_from_a_class_subset(tmp_path):
    keep = [1, 7, 8]
    pre = T.train(learning_config(tmp_path, "pre", classes=keep, **LEARNS_BN))
    assert_learned(pre.output)
    source = vgg.load_model(pre.output)
    assert source.classes == [data.FASHION_MNIST_CLASSES[k] for k in keep]
    out = tmp_path / "ft"
    # Without weight decay only the gradients move the weights (decay alone would "train" them).
    common = ["--data", "fashion-mnist", "--limit", "512", "--batch-size", "16", "--lr", "0.01",
              "--dropout", "0", "--weight-decay", "0", "--device", "cpu", "--no-progress", "--output",
              str(out)]
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
    assert lrs == {"features": 0.0, "fc": 1e-2, "head": pytest.approx(1e-1)}  # head x10
    # Stage 2, as a resumed run: everything trains, at a tenth of the rates, and the net learns.
    assert cli.main(["finetune", "--pretrained", str(pre.output), "--resume", "--epochs", "3", *common]) == 0
    tuned = vgg.load_model(out / "last.safetensors")
    for k in ("0.weight", "1.running_mean"):  # conv1_1 and its BN
        moved = (tuned.features.state_dict()[k] - source.features.state_dict()[k]).abs().max()
        assert moved > 1e-3 * source.features.state_dict()[k].abs().max(), k
    groups = T.read_state(out / "state.safetensors", tensors=False)["optimizer"]["param_groups"]
    lrs = {g["name"]: g["lr"] for g in groups}
    assert lrs == {"features": pytest.approx(1e-3), "fc": pytest.approx(1e-3), "head": pytest.approx(1e-2)}
    assert [e["epoch"] for e in epochs_of(out)] == [1, 2, 3]
    assert_learned(out, classes=10)
