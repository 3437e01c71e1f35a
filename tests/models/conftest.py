"""Shared by the tests of the paper's nets."""

import pytest
import torch

from vgg.models import VGG, parse_arch


def build_on_meta(arch, **kw):
    """A net with no memory behind its weights: for sizes, shapes and state-dict keys."""
    config, bn = parse_arch(arch)
    kw["batch_norm"] = kw.get("batch_norm", False) or bn
    with torch.device("meta"):
        return VGG(config, **kw)


@pytest.fixture
def meta_model():
    return build_on_meta
