"""Fixtures of the evaluation tests: three tiny Fashion-MNIST checkpoints."""

import pytest

import vgg
from evaluation.support import CROP, FMNIST, tiny


@pytest.fixture(scope="module")
def checkpoints(tmp_path_factory):
    from vgg.data import open_dataset, rescale_shorter

    folder = tmp_path_factory.mktemp("ckpt")
    # Their predictions spread over the classes on Fashion-MNIST images (not only on random ones).
    seen = rescale_shorter(open_dataset("fashion-mnist", "train", limit=256).images, CROP)
    fixed = tiny(0, classes=FMNIST, in_channels=1, train_scale=(37, 37), spread_on=seen)
    jitter = tiny(1, classes=FMNIST, in_channels=1, train_scale=(37, 73), spread_on=seen)
    other = tiny(2, classes=FMNIST[:9] + ["Boot"], in_channels=1, spread_on=seen)
    return {name: vgg.save_model(m, folder / f"{name}.safetensors")
            for name, m in (("fixed", fixed), ("jitter", jitter), ("other", other))}
