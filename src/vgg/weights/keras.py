"""Keras applications' VGG16/VGG19 (HDF5) -> ours, by one explicit, checked mapping.

Keras stores conv kernels (height, width, in, out), its first Dense layer reads a feature map
flattened height-width-channel (not torchvision's channel-height-width), and its input is BGR 0-255
minus the mean (``preprocess_input`` in 'caffe' mode), which is stored with the converted weights.
"""

from __future__ import annotations

import math
import re
import warnings
from pathlib import Path

import numpy as np
import torch

from ..models import CONFIGS, FC_WIDTH, VGG, create_model, parse_arch
from .ours import load_state

KERAS_CONV = re.compile(r"block(\d+)_conv(\d+)")
KERAS_DENSE = {"fc1": 0, "fc2": 3, "predictions": 6}


def _h5_strings(group, name: str) -> list[str] | None:
    """A list-of-strings attribute; Keras splits long ones into ``name0``, ``name1``, ..."""
    if name in group.attrs:
        values = list(group.attrs[name])
    elif f"{name}0" in group.attrs:
        values, i = [], 0
        while f"{name}{i}" in group.attrs:
            values += list(group.attrs[f"{name}{i}"])
            i += 1
    else:
        return None
    return [v.decode("utf8") if isinstance(v, bytes) else str(v) for v in values]


def read_keras(path: str | Path) -> dict[str, list[np.ndarray]]:
    """Layer name -> its weight arrays, from a Keras HDF5 weight file.

    Three layouts: Keras 1/2 ``save_weights`` (the published ``vgg16_weights_tf_dim_ordering_tf_
    kernels*.h5``): a root attribute ``layer_names`` and per layer a ``weight_names`` attribute
    naming its datasets (``block1_conv1_W_1:0`` flat, or ``block1_conv1/kernel:0`` nested); the same
    under ``model_weights/`` in a whole-model ``.h5``; Keras 3 ``.weights.h5``:
    ``layers/<name>/vars/0, 1, ...``.
    """
    try:
        import h5py
    except ImportError as e:  # pragma: no cover - h5py is a dependency of the keras extra
        raise ValueError("reading Keras HDF5 weights needs h5py: pip install 'vgg[keras]'") from e
    layers: dict[str, list[np.ndarray]] = {}
    try:
        with h5py.File(path, "r") as f:
            root = f["model_weights"] if "model_weights" in f else f
            names = _h5_strings(root, "layer_names")
            if names is not None:
                for name in names:
                    group = root[name]
                    layers[name] = [np.asarray(group[w]) for w in _h5_strings(group, "weight_names") or []]
            elif isinstance(root.get("layers"), h5py.Group):
                for name, group in root["layers"].items():
                    var = group.get("vars")
                    layers[name] = [np.asarray(var[str(i)]) for i in range(len(var))] if var else []
            else:
                raise ValueError(f"{path} is an HDF5 file but not Keras weights (no layer_names "
                                 "attribute, no layers/ group)")
    except (OSError, KeyError) as e:
        raise ValueError(f"{path} is not a readable Keras HDF5 file: {e}") from e
    return layers


def _kernel_bias(arrays: list[np.ndarray], name: str, source: str) -> tuple[np.ndarray, np.ndarray]:
    ranks = sorted(a.ndim for a in arrays)
    if len(arrays) != 2 or ranks[0] != 1 or ranks[1] < 2:
        raise ValueError(f"{source}: layer {name} has weights of shapes "
                         f"{[a.shape for a in arrays]}, expected a kernel and a bias")
    kernel, bias = sorted(arrays, key=lambda a: -a.ndim)
    return kernel, bias


def keras_layers(layers: dict[str, list[np.ndarray]], source: str):
    """Split Keras' layers into convs {(block, index): (kernel, bias)} and dense {name: (kernel,
    bias)}; check TensorFlow's kernel order (height, width, in, out) along the chain."""
    convs, dense = {}, {}
    for name, arrays in layers.items():
        if not arrays:
            continue  # input, pooling, flatten: no weights
        m = KERAS_CONV.fullmatch(name)
        if m:
            convs[int(m.group(1)), int(m.group(2))] = _kernel_bias(arrays, name, source)
        elif name in KERAS_DENSE:
            dense[name] = _kernel_bias(arrays, name, source)
        else:
            raise ValueError(f"{source}: unexpected layer {name!r} with weights; Keras' VGG has "
                             "block<b>_conv<i>, fc1, fc2, predictions")
    if not convs:
        raise ValueError(f"{source}: no block<b>_conv<i> layers: not Keras' VGG16/VGG19")
    if dense and set(dense) != set(KERAS_DENSE):
        raise ValueError(f"{source}: the top has {sorted(dense)}, expected fc1, fc2, predictions")
    previous = None
    for (b, i), (kernel, bias) in sorted(convs.items()):
        if (kernel.ndim != 4 or kernel.shape[0] != kernel.shape[1] or kernel.shape[3] != bias.shape[0]
                or (previous is not None and kernel.shape[2] != previous)):
            raise ValueError(f"{source}: block{b}_conv{i} kernel has shape {kernel.shape}; expected "
                             "(k, k, in, out) as TensorFlow stores it (Theano-ordered 'th' weight "
                             "files are not supported)")
        previous = kernel.shape[3]
    return convs, dense


def keras_architecture(convs: dict, dense: dict, source: str, arch: str | None = None) -> dict:
    """The :func:`create_model` arguments of Keras weights: which config has exactly these conv
    layers (by name, kernel size and channels); the top gives classes and crop size (224 without)."""
    first, last = convs[min(convs)][0], convs[max(convs)][0]
    hparams = {"num_classes": 1000, "crop_size": 224, "width": first.shape[3] / 64,
               "in_channels": int(first.shape[2])}
    if dense:
        fc1 = dense["fc1"][0]
        cells, rest = divmod(fc1.shape[0], last.shape[3])
        k = math.isqrt(cells)
        if rest or k * k != cells:
            raise ValueError(f"{source}: fc1 reads {fc1.shape[0]} inputs, not a k x k map of the "
                             f"last conv's {last.shape[3]} channels")
        hparams.update(num_classes=int(dense["predictions"][0].shape[1]), crop_size=32 * k,
                       width=fc1.shape[1] / FC_WIDTH)
    found = sorted((f"conv{b}_{i}", kernel.shape) for (b, i), (kernel, _) in convs.items())
    configs = [parse_arch(arch)] if arch else [(c, False) for c in CONFIGS]
    for config, bn in configs:
        if bn:
            raise ValueError(f"{source}: Keras' VGG has no batch norm; --arch {arch} does not fit")
        with torch.device("meta"):
            candidate = VGG(config, **hparams)
        wanted = sorted((name, (m.kernel_size[0], m.kernel_size[1], m.in_channels, m.out_channels))
                        for name, m in zip(candidate.feature_names, candidate.features)
                        if name.startswith("conv"))
        if wanted == found:
            return {"arch": candidate.arch, **hparams}
    raise ValueError(f"{source}: conv layers {[(n, tuple(s)) for n, s in found]} fit "
                     f"{'--arch ' + arch if arch else 'no network of Table 1'}")


def keras_state(convs: dict, dense: dict, model: VGG) -> dict[str, torch.Tensor]:
    """Keras -> ours. Conv kernels (kh, kw, in, out) -> (out, in, kh, kw). Dense kernels are
    (in, out) and are transposed. The one reshape: Keras flattens fc1's (k, k, C) input map in
    height-width-channel order, torchvision's Linear weight reads channel-height-width."""
    def tensor(a: np.ndarray) -> torch.Tensor:
        return torch.from_numpy(np.ascontiguousarray(a, dtype=np.float32))

    state = {}
    for (b, i), (kernel, bias) in convs.items():
        index = model.feature_names.index(f"conv{b}_{i}")
        state[f"features.{index}.weight"] = tensor(kernel.transpose(3, 2, 0, 1))
        state[f"features.{index}.bias"] = tensor(bias)
    if dense:
        kernel, bias = dense["fc1"]
        fc6 = model.classifier[0]
        c, k, out = fc6.in_channels, fc6.kernel_size, kernel.shape[1]
        if kernel.shape != (k * k * c, fc6.out_features):
            raise ValueError(f"fc1 kernel {kernel.shape} does not read a {k}x{k}x{c} map")
        state["classifier.0.weight"] = tensor(kernel.T.reshape(out, k, k, c).transpose(0, 3, 1, 2)
                                              .reshape(out, c * k * k))
        state["classifier.0.bias"] = tensor(bias)
        for name in ("fc2", "predictions"):
            kernel, bias = dense[name]
            state[f"classifier.{KERAS_DENSE[name]}.weight"] = tensor(kernel.T)
            state[f"classifier.{KERAS_DENSE[name]}.bias"] = tensor(bias)
    return state


def keras_model(layers: dict[str, list[np.ndarray]], source: str, arch: str | None = None) -> VGG:
    """A model from Keras weights. Without the top (``include_top=False`` files) the FC layers keep
    a fresh initialisation and the model has no class names: it is for features or fine-tuning."""
    convs, dense = keras_layers(layers, source)
    hparams = keras_architecture(convs, dense, source, arch)
    if dense:
        with torch.device("meta"):
            model = create_model(**hparams)
        load_state(model, keras_state(convs, dense, model), source, assign=True)
        return model
    model = create_model(**hparams)
    state = keras_state(convs, dense, model)
    features = {k for k in model.state_dict() if k.startswith("features.")}
    if set(state) != features:
        raise ValueError(f"{source}: conv weights do not cover {sorted(features - set(state))[:4]}")
    warnings.warn(f"{source} has no top (fc1, fc2, predictions): the FC layers are freshly "
                  "initialised", stacklevel=2)
    load_state(model, {**model.state_dict(), **state}, source)
    return model

