"""Helpers shared by the test modules: nets whose outputs are of order 1, a tiny net that learns,
tiny training runs and their files.

Why these exist (issue 17): a default-initialised tiny VGG (N(0, 0.01), no BN) outputs logits of
1e-12 and never learns, so "equal within 1e-5" holds for any architecture and "1 process equals 2"
for any gradient. Equivalence tests use :func:`order_one` nets and tolerances relative to the
outputs (:func:`assert_close_relative`); training tests use :data:`LEARNS` and check
:func:`assert_learned` before they compare anything.
"""

import json
import math
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file
from torch import nn

import vgg
from vgg import training as T

VGG_BIN = [sys.executable, "-m", "vgg"]


# A tiny net and tiny data: every run below takes a second or two.
TINY = ["--arch", "A", "--width", "0.125", "--crop-size", "32", "--scale", "32", "36", "--device", "cpu",
        "--no-progress"]


def tiny_config(tmp_path, name="run", **kw):
    values = dict(arch="A", width=0.125, crop_size=32, scale=(32, 36), limit=64, batch_size=8, epochs=1,
                  device="cpu", progress=False, output=str(tmp_path / name))
    values.update(kw)
    return T.TrainConfig(**values)


# -- nets with outputs of order 1 --------------------------------------------------------------------

@torch.no_grad()
def order_one(model, seed=0):
    """Give ``model`` weights whose activations and logits are of order 1 on inputs of order 1, and
    put it in eval mode: He-scaled weights (ReLUs keep the activations' size), biases in
    [-0.5, 0.5], BatchNorm with non-trivial running statistics and affine parameters (so that a
    wrong fold or a forgotten eps shows)."""
    g = torch.Generator().manual_seed(seed)
    for m in model.modules():
        if isinstance(m, (nn.Conv2d, nn.Linear)):
            fan_in = m.weight[0].numel()
            m.weight.copy_(torch.randn(m.weight.shape, generator=g) * math.sqrt(2.0 / fan_in))
            m.bias.copy_(torch.rand(m.bias.shape, generator=g) - 0.5)
        elif isinstance(m, nn.BatchNorm2d):
            c = m.num_features
            m.running_mean.copy_(torch.randn(c, generator=g) * 0.5)
            m.running_var.copy_(torch.rand(c, generator=g) * 1.5 + 0.5)
            m.weight.copy_(torch.rand(c, generator=g) + 0.5)
            m.bias.copy_(torch.randn(c, generator=g) * 0.5)
    return model.eval()


@torch.no_grad()
def spread_predictions(model, inputs):
    """Rescale the last layer so that on ``inputs`` (normalised, as the net takes them) every class's
    logit has mean 0 and spread 2 over the images: a random deep net otherwise gives most images the
    same class (its logits' common part dwarfs what depends on the image), and a test of top-1
    numbers then cannot see much."""
    fc8 = model.classifier[6]
    logits = model(inputs)
    mean, std = logits.mean(0), logits.std(0).clamp_min(1e-12)
    fc8.weight.mul_((2.0 / std).view(-1, 1))
    fc8.bias.copy_((fc8.bias - mean) * 2.0 / std)
    return model


def lively(arch="A", seed=0, **kw):
    """A tiny net of Table 1 (width 0.125, crop 32, 7 classes unless told) with order-1 outputs."""
    kw = {"num_classes": 7, "crop_size": 32, "width": 0.125, **kw}
    return order_one(vgg.create_model(arch, **kw), seed)


def assert_order_one(t, what="outputs"):
    """The values compared are not near zero (so that a tolerance means something) nor exploding."""
    spread = t.detach().float().std().item()
    assert 0.05 < spread < 1e3, f"{what} have spread {spread:.3g}: not of order 1"


def assert_close_relative(actual, expected, rtol=1e-4):
    """Equal up to ``rtol`` of the expected values' size (element-wise and as an absolute floor)."""
    assert_order_one(expected, "expected values")
    scale = expected.detach().abs().max().item()
    torch.testing.assert_close(actual, expected, rtol=rtol, atol=rtol * scale)


# -- a tiny net that learns --------------------------------------------------------------------------

# Three well-separated Fashion-MNIST classes (Trouser, Sneaker, Bag; ~150 images of each split out
# of the first 512), Glorot init, no dropout, a small rate: without BN (so that runs can be compared
# exactly) it still learns in two epochs, train loss ~0.4 against ln 3 = 1.10, val accuracy ~80%.
LEARNS = dict(classes=[1, 7, 8], limit=512, init="glorot", dropout=0.0, batch_size=8, lr=0.005, epochs=2)
LEARNS_CLI = ["--classes", "1", "7", "8", "--limit", "512", "--init", "glorot", "--dropout", "0",
              "--batch-size", "8", "--lr", "0.005", "--epochs", "2"]  # later flags override these
# With BN the same net learns at a higher rate on batches of 16 (batches of 8 make BN's statistics
# too noisy for a stable val accuracy).
LEARNS_BN = dict(batch_norm=True, batch_size=16, lr=0.01)
LEARNS_BN_CLI = ["--batch-norm", "--batch-size", "16", "--lr", "0.01"]
LEARNED_CLASSES = ["Trouser", "Sneaker", "Bag"]


def learning_config(tmp_path, name="run", **kw):
    """:func:`tiny_config` of a run that learns (:data:`LEARNS`), ``kw`` overriding it."""
    return tiny_config(tmp_path, name, **{**LEARNS, **kw})


def assert_learned(folder, classes=3, loss_ratio=0.75):
    """The run in ``folder`` learned: its last epoch's train loss is well below ln(classes) (chance)
    and its best val accuracy well above chance."""
    recs = epochs_of(folder)
    assert recs, f"no epoch was logged in {folder}"
    chance, loss = 100 / classes, recs[-1]["train_loss"]
    best = max(r["val_accuracy"] for r in recs)
    assert loss < loss_ratio * math.log(classes), \
        f"train loss {loss:.3f} is not well below ln({classes}) = {math.log(classes):.3f}: it did not learn"
    assert best > min(1.5 * chance, (100 + chance) / 2), \
        f"best val accuracy {best:.1f}% is not well above chance ({chance:.1f}%)"
    return recs


# For runs compared with each other. Raw pixels (spread ~90: the paper subtracts only the mean) make
# the training of LEARNS chaotic: two runs that differ in float rounding alone part by half of their
# weights' movement within two epochs, so no tolerance separates a bug from rounding. A start net
# with inputs of unit spread and He-scaled weights learns as fast at START_LR and stays stable: such
# runs agree to ~1e-5 of their movement.
START_LR = 0.003


def start_net(path, seed=0):
    """Save a fresh net for :data:`LEARNS` runs to start from (``init_from`` at :data:`START_LR`;
    preprocessing travels with the weights) so that a test knows every weight before training;
    returns its state dict."""
    torch.manual_seed(seed)
    model = vgg.create_model("A", num_classes=3, width=0.125, crop_size=32, in_channels=1, dropout=0.0)
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, (nn.Conv2d, nn.Linear)):
                nn.init.kaiming_normal_(m.weight)
                nn.init.zeros_(m.bias)
    model.classes = list(LEARNED_CLASSES)
    model.normalization = vgg.Normalization((73.0,), (90.0,))  # Fashion-MNIST's mean and spread
    vgg.save_model(model, path)
    return {k: v.clone() for k, v in model.state_dict().items()}


def assert_moved_alike(actual, expected, start, rtol=1e-3, keys=None):
    """Every tensor of ``expected`` moved away from ``start`` in training, and ``actual`` is equal
    to it up to ``rtol`` of that movement: "equal" then says something about the gradients, which
    a comparison of barely-moved weights does not."""
    for k in keys or [k for k, v in expected.items() if v.is_floating_point()]:
        moved = (expected[k] - start[k]).abs().max().item()
        assert moved > 1e-4 * start[k].abs().max().item(), f"{k} did not move in training"
        diff = (actual[k] - expected[k]).abs().max().item()
        assert diff <= rtol * moved, \
            f"{k} differs by {diff:.3g}, {diff / moved:.2g} of its movement {moved:.3g}"


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


# -- localisation (App. A): a folder of cluttered garments with boxes, and nets trained on it ----------

LOC_CLASSES = (1, 7, 8, 9)  # Trouser, Sneaker, Bag, Ankle boot: folder names without a "/"


def box_folder(root, n_train=384, n_val=128, canvas=64, clutter=0, seed=0, classes=LOC_CLASSES):
    """``root/{train,val}/<class>/<i>.png`` cut from real Fashion-MNIST garments placed at random on a
    ``canvas`` (vgg.localization.make_cluttered), with ``root/<split>/boxes.csv`` (plain CSV, pixels)."""
    import csv

    import numpy as np
    from PIL import Image

    from vgg.data import FASHION_MNIST_CLASSES, load_fashion_mnist
    from vgg.localization import make_cluttered

    root = Path(root)
    x, y, _, _ = load_fashion_mnist()
    pick = np.flatnonzero(np.isin(y[:10000], classes))[: n_train + n_val]
    images, boxes, labels = make_cluttered(x[pick], y[pick], seed=seed, canvas=canvas,
                                           sizes=(canvas * 3 // 8, canvas * 13 // 16), clutter=clutter,
                                           patch=4)
    for split, idx in (("train", range(n_train)), ("val", range(n_train, n_train + n_val))):
        rows = [["file", "xmin", "ymin", "xmax", "ymax"]]
        for i in idx:
            name = FASHION_MNIST_CLASSES[labels[i]]
            (root / split / name).mkdir(parents=True, exist_ok=True)
            Image.fromarray(images[i]).save(root / split / name / f"{i}.png")
            rows.append([f"{name}/{i}.png", *(f"{v:g}" for v in boxes[i].tolist())])
        with open(root / split / "boxes.csv", "w", newline="") as f:
            csv.writer(f).writerows(rows)
    return root


def loc_training(root):
    """A classifier, then a PCR localisation net fine-tuned from it (App. A.1), on :func:`box_folder`
    data: {"data", "cls", "loc", "cls_result", "loc_result"}. Both learn (BN, the rates that suit
    them: 1e-2 for the classifier, the paper's 1e-3 regime for the boxes)."""
    root = Path(root)
    folder = box_folder(root / "data")
    common = dict(data=str(folder), crop_size=64, scale=(64, 64), device="cpu", progress=False,
                  lighting_std=0.0, batch_size=16)
    cls = T.train(T.TrainConfig(arch="A", width=0.125, batch_norm=True, init="glorot", epochs=3, lr=0.01,
                                output=str(root / "cls"), **common))
    loc = T.train(T.TrainConfig(task="localization", head="pcr", init_from=str(root / "cls"), epochs=4,
                                lr=0.002, dropout=0.0, output=str(root / "loc"), **common))
    return {"data": folder, "cls": root / "cls", "loc": root / "loc", "cls_result": cls, "loc_result": loc}
