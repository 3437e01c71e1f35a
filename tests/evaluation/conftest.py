"""Fixtures of the evaluation tests: three tiny Fashion-MNIST checkpoints."""

import pytest

import vgg
from evaluation.support import FMNIST, tiny


@pytest.fixture(scope="module")
def checkpoints(tmp_path_factory):
    folder = tmp_path_factory.mktemp("ckpt")
    fixed = tiny(0, classes=FMNIST, in_channels=1, train_scale=(37, 37))
    jitter = tiny(1, classes=FMNIST, in_channels=1, train_scale=(37, 73))
    other = tiny(2, classes=FMNIST[:9] + ["Boot"], in_channels=1)
    return {name: vgg.save_model(m, folder / f"{name}.safetensors")
            for name, m in (("fixed", fixed), ("jitter", jitter), ("other", other))}
