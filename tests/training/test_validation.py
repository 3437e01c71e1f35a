"""The validation pass of a run."""

import copy
import math

import pytest
import torch
import torch.nn.functional as F

import vgg
from support import lively
from vgg import data, distributed
from vgg import training as T
from vgg.engine import attach_cpu_inference


def test_validation_takes_the_fused_path_and_agrees_with_the_modules():
    torch.manual_seed(0)
    images = torch.randint(0, 256, (40, 1, 32, 32), dtype=torch.uint8)
    dataset = data.TensorDataset(images, torch.arange(40) % 10, [str(i) for i in range(10)], "toy", "val")
    # Order-1 logits and BN statistics that matter: a wrong fold or a broken fused path shows in the loss.
    model = lively("vgg11_bn", num_classes=10, in_channels=1)
    model.normalization = vgg.Normalization((120.0,), (60.0,))
    fast = attach_cpu_inference(copy.deepcopy(model))
    seen = []
    fast.features._pack = lambda x, pack=fast.features._pack: seen.append(x.shape) or pack(x)
    args = dict(scale=32, batch_size=16, ctx=distributed.Context(), amp=False, channels_last=True)
    slow, quick = T.validate(model, dataset, **args), T.validate(fast, dataset, **args)
    assert seen and quick["images"] == slow["images"] == 40
    assert abs(slow["loss"] - math.log(10)) > 0.5  # not the loss of near-zero logits
    assert quick["loss"] == pytest.approx(slow["loss"], rel=1e-4)
    assert quick["accuracy"] == slow["accuracy"]
    # The val loss is the mean loss of the net applied to the normalised images.
    with torch.no_grad():
        logits = model(model.normalization(images))
    assert slow["loss"] == pytest.approx(F.cross_entropy(logits, dataset.labels).item(), rel=1e-4)


def test_validation_pools_as_caffe_unless_floor_pooling():
    # The demo validates at Q = 34, not a multiple of 32: the pooling decides what is seen.
    from vgg.evaluation import caffe_pooling

    torch.manual_seed(0)
    images = torch.randint(0, 256, (24, 1, 34, 34), dtype=torch.uint8)
    dataset = data.TensorDataset(images, torch.arange(24) % 10, [str(i) for i in range(10)], "toy", "val")
    model = vgg.create_model("vgg11_bn", width=0.125, crop_size=32, num_classes=10, in_channels=1,
                             init="glorot").eval()
    for m in model.modules():
        if isinstance(m, torch.nn.BatchNorm2d):
            m.running_mean.normal_(), m.running_var.uniform_(0.5, 2.0)
    model.normalization = vgg.models.Normalization((120.0,), (60.0,))
    args = dict(scale=34, batch_size=8, ctx=distributed.Context(), amp=False, channels_last=False)
    default, floor = T.validate(model, dataset, **args), T.validate(model, dataset, **args, ceil_mode=False)
    with caffe_pooling(model):
        ceil = T.validate(model, dataset, **args, ceil_mode=False)
    assert default["loss"] == ceil["loss"] and abs(default["loss"] - floor["loss"]) > 1e-3
    assert all(not m.ceil_mode for m in model.modules() if isinstance(m, torch.nn.MaxPool2d))
