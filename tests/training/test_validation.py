"""The validation pass of a run."""

import copy

import pytest
import torch

import vgg
from vgg import data, distributed
from vgg import training as T
from vgg.engine import attach_cpu_inference


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
    fast.features._pack = lambda x, pack=fast.features._pack: seen.append(x.shape) or pack(x)
    args = dict(scale=32, batch_size=16, ctx=distributed.Context(), amp=False, channels_last=True)
    slow, quick = T.validate(model, dataset, **args), T.validate(fast, dataset, **args)
    assert seen and quick["images"] == slow["images"] == 40
    assert quick["loss"] == pytest.approx(slow["loss"], rel=1e-4)
    assert quick["accuracy"] == slow["accuracy"]
