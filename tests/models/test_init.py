"""Sec. 3.1's initialisation and the transfer from net A."""

import pytest
import torch
from torch import nn

import vgg


def test_normal_init():
    model = vgg.create_model("A", width=0.5, crop_size=32, init="normal", init_std=0.01)
    w = model.features[0].weight.detach()
    fc = model.classifier[3].weight.detach()
    assert abs(fc.std().item() - 0.01) < 5e-4 and abs(fc.mean().item()) < 1e-3
    assert w.abs().max() < 0.1
    assert all((m.bias == 0).all() for m in model.modules() if isinstance(m, (nn.Conv2d, nn.Linear)))
    literal = vgg.create_model("A", width=0.5, crop_size=32, init_std=0.1)
    assert abs(literal.classifier[3].weight.std().item() - 0.1) < 5e-3


def test_glorot_init():
    model = vgg.create_model("A", width=0.5, crop_size=32, init="glorot")
    fc = model.classifier[3].weight.detach()
    bound = (6 / (fc.shape[0] + fc.shape[1])) ** 0.5
    assert fc.abs().max() <= bound and fc.abs().max() > 0.95 * bound
    conv = model.features[0].weight.detach()
    bound = (6 / (3 * 9 + conv.shape[0] * 9)) ** 0.5
    assert conv.abs().max() <= bound
    with pytest.raises(ValueError, match="unknown init 'he'"):
        vgg.create_model("A", init="he")


@pytest.mark.parametrize("target", ["B", "C", "D", "E"])
def test_init_from_shallow_copies_exactly_the_named_layers(target):
    torch.manual_seed(1)
    a = vgg.create_model("A", width=0.125, crop_size=32, num_classes=7)
    deep = vgg.create_model(target, width=0.125, crop_size=32, num_classes=7)
    before = {k: v.clone() for k, v in deep.state_dict().items()}
    copied = vgg.init_from_shallow(deep, a)
    # A's first four convs are conv1_1, conv2_1, conv3_1, conv3_2: the same layers in the deep net.
    names = ["conv1_1", "conv2_1", "conv3_1", "conv3_2"]
    expected = {}
    for name in names:
        s, d = a.feature_names.index(name), deep.feature_names.index(name)
        expected |= {f"features.{d}.weight": f"features.{s}.weight",
                     f"features.{d}.bias": f"features.{s}.bias"}
    expected |= {f"classifier.{i}.{p}": f"classifier.{i}.{p}" for i in (0, 3, 6)
                 for p in ("weight", "bias")}
    assert sorted(copied) == sorted(expected)
    after, src = deep.state_dict(), a.state_dict()
    for key in after:
        if key in expected:
            assert torch.equal(after[key], src[expected[key]]), key
        else:
            assert torch.equal(after[key], before[key]), key


def test_init_from_shallow_copies_bn_with_its_conv():
    a = vgg.create_model("A_bn", width=0.125, crop_size=32, num_classes=7)
    a.features[1].running_mean.fill_(3.0)
    deep = vgg.create_model("D_bn", width=0.125, crop_size=32, num_classes=7)
    copied = vgg.init_from_shallow(deep, a)
    assert "features.1.running_mean" in copied and (deep.features[1].running_mean == 3).all()


def test_init_from_shallow_shape_mismatch_names_the_layer():
    a = vgg.create_model("A", width=0.125, crop_size=32, num_classes=7)
    deep = vgg.create_model("D", width=0.125, crop_size=32, num_classes=9)
    with pytest.raises(ValueError, match=r"classifier\.6\.weight has shape \(9, 512\).*\(7, 512\)"):
        vgg.init_from_shallow(deep, a)


def test_init_from_shallow_layer_indices_for_vgg16():
    # Written out by hand: A's convs sit at features.{0,3,6,8}; D's conv1_1, conv2_1, conv3_1,
    # conv3_2 at features.{0,5,10,12}.
    a = vgg.create_model("A", width=0.125, crop_size=32)
    d = vgg.create_model("D", width=0.125, crop_size=32)
    copied = {k.rsplit(".", 1)[0] for k in vgg.init_from_shallow(d, a)}
    assert copied == {"features.0", "features.5", "features.10", "features.12", "classifier.0",
                      "classifier.3", "classifier.6"}
