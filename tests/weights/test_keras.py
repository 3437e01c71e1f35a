"""Keras applications' HDF5 files, in every layout, against Keras' forward pass written in numpy."""

import h5py
import numpy as np
import pytest
import torch

from vgg.models import CAFFE_NORMALIZATION
from vgg.weights import load_any, read_weight_file

from .references import images, keras_forward, keras_weights, write_keras


@pytest.mark.parametrize("layout", ["flat", "nested", "model", "keras3"])
def test_keras_file_converts_exactly(tmp_path, layout):
    layers = keras_weights("vgg16", classes=7, k=2)
    write_keras(tmp_path / "k.h5", layers, layout)
    assert read_weight_file(tmp_path / "k.h5")[0] == "keras"
    model = load_any(tmp_path / "k.h5")
    assert (model.arch, model.crop_size, model.num_classes) == ("vgg16", 64, 7)
    assert model.normalization == CAFFE_NORMALIZATION and model.info["source"] == "keras"
    rgb = images(size=64)
    _, reference = keras_forward(layers, rgb, "hwc")
    with torch.no_grad():
        ours = model(model.normalization(rgb)).double().numpy()
    scale = np.abs(reference).max()
    np.testing.assert_allclose(ours, reference, atol=1e-4 * scale, rtol=0)
    # Negative control: reading Keras' fc1 as if it flattened (c, h, w) gives other logits, so the
    # comparison above can tell the two orders apart.
    _, wrong = keras_forward(layers, rgb, "chw")
    assert np.abs(ours - wrong).max() > 0.05 * scale


def test_keras_vgg19_and_imagenet_names(tmp_path):
    layers = keras_weights("vgg19", div=16, classes=1000, k=1)
    write_keras(tmp_path / "k19.h5", layers, "flat")
    assert load_any(tmp_path / "k19.h5").classes is None  # a 1000-way head alone names nothing
    model = load_any(tmp_path / "k19.h5", classes="imagenet-1k")
    assert model.arch == "vgg19" and model.classes[281] == "tabby"
    rgb = images(size=32)
    _, reference = keras_forward(layers, rgb)
    with torch.no_grad():
        ours = model(model.normalization(rgb)).double().numpy()
    np.testing.assert_allclose(ours, reference, atol=1e-4 * np.abs(reference).max(), rtol=0)


def test_keras_file_without_top(tmp_path):
    layers = keras_weights("vgg16", top=False)
    write_keras(tmp_path / "notop.h5", layers, "flat")
    with pytest.warns(UserWarning, match="has no top"):
        model = load_any(tmp_path / "notop.h5")
    assert model.arch == "vgg16" and model.classes is None and model.crop_size == 224
    with pytest.warns(UserWarning, match="has no top"), pytest.raises(ValueError, match="class names cannot"):
        load_any(tmp_path / "notop.h5", classes="imagenet-1k")
    rgb = images(size=64)
    reference, _ = keras_forward(layers, rgb)
    with torch.no_grad():
        ours = model.features(model.normalization(rgb)).double().numpy().transpose(0, 2, 3, 1)
    np.testing.assert_allclose(ours, reference, atol=1e-4 * np.abs(reference).max(), rtol=0)


def test_keras_theano_kernels_and_foreign_hdf5_are_clear_errors(tmp_path):
    layers = keras_weights("vgg11")
    th = [(n, [a[0].transpose(3, 2, 0, 1), a[1]] if "_conv" in n else a) for n, a in layers]
    write_keras(tmp_path / "th.h5", th, "flat")
    with pytest.raises(ValueError, match=r"block1_conv1 kernel has shape .*\(k, k, in, out\)"):
        load_any(tmp_path / "th.h5")
    with h5py.File(tmp_path / "other.h5", "w") as f:
        f.create_dataset("x", data=np.zeros(3))
    with pytest.raises(ValueError, match="not Keras weights"):
        load_any(tmp_path / "other.h5")
    with pytest.raises(ValueError, match="Keras' VGG has no batch norm"):
        write_keras(tmp_path / "k.h5", layers, "flat")
        load_any(tmp_path / "k.h5", arch="vgg11_bn")
