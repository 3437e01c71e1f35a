"""Shared by the engine's tests: tiny nets whose outputs are of order 1."""

import pytest
import torch
from torch import nn

import vgg


def tiny_net(arch: str, crop: int = 32, seed: int = 0) -> vgg.VGG:
    torch.manual_seed(seed)
    model = vgg.create_model(arch, width=0.25, crop_size=crop, num_classes=7, init="glorot")
    for m in model.modules():  # BatchNorm with non-trivial statistics, so folding is exercised
        if isinstance(m, nn.BatchNorm2d):
            m.running_mean.normal_()
            m.running_var.uniform_(0.5, 2.0)
            m.weight.data.normal_()
            m.bias.data.normal_()
    return model.eval()


@pytest.fixture
def tiny():
    return tiny_net
