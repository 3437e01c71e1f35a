"""Foreign weight files: torchvision and timm state dicts (and Keras, in :mod:`.keras`) -> ours.

Each format is mapped onto our layout by one explicit, checked mapping:

- torchvision: a plain state dict already in our layout (the FC layers as ``nn.Linear``).
- timm: ``features.*`` as torchvision, the FC layers as convolutions ``pre_logits.fc1`` (a k x k
  kernel), ``pre_logits.fc2`` (1 x 1) and a Linear ``head.fc``.
- Keras applications (HDF5): see :mod:`vgg.weights.keras`.

A file's format is told by its contents, never its name. Each source's preprocessing is stored with
the converted weights (Sec. 2 / SPEC section 6). Class names come only from the caller (the record
of published weights, or the user): a 1000-way head is not taken to be ImageNet's.
"""

from __future__ import annotations

import math
import re
import warnings
from collections.abc import Sequence
from pathlib import Path

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, safe_open

from ..models import (
    CAFFE_NORMALIZATION,
    CONFIGS,
    FC_WIDTH,
    NAMES,
    TORCHVISION_NORMALIZATION,
    VGG,
    Normalization,
    parse_arch,
)
from .keras import KERAS_DENSE, keras_model, read_keras
from .ours import METADATA_KEY, load_model, load_state, resolve_checkpoint, torch_load_safe

SOURCES = ("auto", "vgg", "torchvision", "timm", "keras")
HDF5_MAGIC = b"\x89HDF\r\n\x1a\n"
# timm's VGG (timm/models/vgg.py) keeps features.* as torchvision and says the head as convolutions:
# pre_logits.fc1 (k x k conv), pre_logits.fc2 (1 x 1 conv), then a Linear head.fc after pooling.
TIMM_TO_VGG = {"pre_logits.fc1": "classifier.0", "pre_logits.fc2": "classifier.3", "head.fc": "classifier.6"}
TORCHVISION_KEY = re.compile(r"(features|classifier)\.\d+\.(weight|bias|running_mean|running_var|"
                             r"num_batches_tracked)")


def plain_state(obj: object, source: str) -> dict[str, torch.Tensor]:
    """The tensors of a loaded ``.pth``/``.bin``: a state dict, possibly wrapped in
    ``{"state_dict": ...}`` or ``{"model": ...}``, possibly saved from DistributedDataParallel
    (every key prefixed ``module.``)."""
    for wrapper in ("state_dict", "model"):
        if isinstance(obj, dict) and isinstance(obj.get(wrapper), dict):
            obj = obj[wrapper]
    if not (isinstance(obj, dict) and obj and all(isinstance(k, str) and isinstance(v, torch.Tensor)
                                                 for k, v in obj.items())):
        raise ValueError(f"{source} is not a state dict (a mapping of names to tensors)")
    if all(k.startswith("module.") for k in obj):
        obj = {k[len("module."):]: v for k, v in obj.items()}
    return dict(obj)


def state_format(state: dict[str, torch.Tensor], source: str) -> str:
    """``timm`` or ``torchvision``, told apart by the key names."""
    if any(k.startswith(("pre_logits.", "head.")) for k in state):
        return "timm"
    if any(k.startswith(("features.", "classifier.")) for k in state):
        return "torchvision"
    shown = ", ".join(sorted(state)[:4])
    raise ValueError(f"{source}: keys ({shown}, ...) are neither torchvision's (features.<i>, "
                     "classifier.<i>) nor timm's (features.<i>, pre_logits.fc1, head.fc)")


def torchvision_state(state: dict[str, torch.Tensor], source: str) -> dict[str, torch.Tensor]:
    """torchvision -> ours: the same layout, nothing reshaped. BatchNorm's ``num_batches_tracked``,
    absent from checkpoints saved before PyTorch 0.4.1 (as torchvision's ``vgg*_bn`` files are), is
    added as 0, which is what BatchNorm's own loader does for such files."""
    odd = [k for k in state if not TORCHVISION_KEY.fullmatch(k)]
    if odd:
        raise ValueError(f"{source}: unexpected keys for torchvision's VGG layout: {', '.join(odd[:6])}")
    out = dict(state)
    for key in state:
        if key.endswith(".running_mean"):
            out.setdefault(key[: -len("running_mean")] + "num_batches_tracked", torch.tensor(0))
    return out


def timm_state(state: dict[str, torch.Tensor], source: str) -> dict[str, torch.Tensor]:
    """timm -> ours. The one reshape: timm's fc1 conv kernel (out, C, k, k) is torchvision's Linear
    weight (out, C*k*k) read in C, H, W order, so it is a plain reshape; fc2 is (out, in, 1, 1)."""
    out: dict[str, torch.Tensor] = {}
    for key, value in state.items():
        if key.startswith("features."):
            out[key] = value
            continue
        prefix, _, name = key.rpartition(".")
        if prefix not in TIMM_TO_VGG or name not in ("weight", "bias"):
            raise ValueError(f"{source}: unexpected key {key} for timm's VGG (features.<i>, "
                             "pre_logits.fc1, pre_logits.fc2, head.fc)")
        target = f"{TIMM_TO_VGG[prefix]}.{name}"
        if name == "weight":
            shape = tuple(value.shape)
            if prefix == "pre_logits.fc1" and not (value.ndim == 4 and shape[2] == shape[3]):
                raise ValueError(f"{source}: {key} has shape {shape}, expected (out, C, k, k)")
            if prefix != "pre_logits.fc1" and not (value.ndim == 2 or (value.ndim == 4
                                                                      and shape[2:] == (1, 1))):
                raise ValueError(f"{source}: {key} has shape {shape}, expected (out, in) or "
                                 "(out, in, 1, 1)")
            value = value.reshape(shape[0], -1)
        out[target] = value
    missing = [f"{src}.weight" for src, dst in TIMM_TO_VGG.items() if f"{dst}.weight" not in out]
    if missing:
        raise ValueError(f"{source}: timm checkpoint without {', '.join(missing)}")
    return torchvision_state(out, source)


def infer_architecture(state: dict[str, torch.Tensor], source: str, arch: str | None = None) -> dict:
    """The :func:`create_model` arguments of a torchvision-layout state dict: the FC shapes give
    the classes, width and crop size (fc6 reads a (crop/32)^2 map); the positions and shapes of
    the conv layers (and BN, and A-LRN's shift of every index) say which config of Table 1 it is.
    With ``arch`` the file must fit that architecture instead."""
    convs = sorted((int(m.group(1)), k) for k in state
                   if (m := re.fullmatch(r"features\.(\d+)\.weight", k)) and state[k].ndim == 4)
    fc6, fc8 = state.get("classifier.0.weight"), state.get("classifier.6.weight")
    if not convs or fc6 is None or fc8 is None or fc6.ndim != 2:
        raise ValueError(f"{source} has no VGG conv layers (features.<i>.weight) or FC layers "
                         "(classifier.0.weight, classifier.6.weight)")
    channels = state[convs[-1][1]].shape[0]
    cells, rest = divmod(fc6.shape[1], channels)
    k = math.isqrt(cells)
    if rest or k * k != cells:
        raise ValueError(f"{source}: classifier.0.weight reads {fc6.shape[1]} inputs, not a k x k "
                         f"map of the last conv's {channels} channels")
    hparams = {"num_classes": int(fc8.shape[0]), "crop_size": 32 * k,
               "width": fc6.shape[0] / FC_WIDTH, "in_channels": int(state[convs[0][1]].shape[1])}
    batch_norm = any(key.endswith(".running_mean") for key in state)
    if arch is not None:
        config, bn = parse_arch(arch)
        return {"arch": NAMES[config] + ("_bn" if bn else ""), **hparams}
    shapes = {key: tuple(v.shape) for key, v in state.items()}
    for config in CONFIGS:
        with torch.device("meta"):
            candidate = VGG(config, batch_norm=batch_norm, **hparams)
        if {key: tuple(v.shape) for key, v in candidate.state_dict().items()} == shapes:
            return {"arch": candidate.arch, **hparams}
    raise ValueError(f"{source} fits no network of Table 1 (conv layers at features."
                     f"{{{','.join(str(i) for i, _ in convs)}}}, batch norm {batch_norm}, "
                     f"{hparams}); name the architecture with --arch to see what differs")


def model_from_state(state: dict[str, torch.Tensor], hparams: dict, source: str) -> VGG:
    """A model built on the meta device and given the file's tensors (as float32): a full-size
    net is never randomly initialised only to be overwritten."""
    config, bn = parse_arch(hparams["arch"])
    kwargs = {k: v for k, v in hparams.items() if k != "arch"}
    with torch.device("meta"):
        model = VGG(config, batch_norm=bn, **kwargs)
    state = {k: v.float() if v.is_floating_point() else v for k, v in state.items()}
    load_state(model, state, source, assign=True)
    return model

# -- reading any weight file ----------------------------------------------------------------------------

def read_weight_file(path: str | Path, source: str = "auto") -> tuple[str, object]:
    """Say which format a file is by its contents (never its name) and read it: (format, payload)
    with payload the path for our checkpoints, a state dict for torchvision/timm, Keras' layers."""
    if source not in SOURCES:
        raise ValueError(f"unknown weight format {source!r}; valid: {', '.join(SOURCES)}")
    path = resolve_checkpoint(path)
    with open(path, "rb") as f:
        head = f.read(9)
    if head[:8] == HDF5_MAGIC:
        found, payload = "keras", None
    else:
        try:
            with safe_open(str(path), framework="pt") as f:
                is_ours = METADATA_KEY in (f.metadata() or {})
            found, payload = ("vgg", path) if is_ours else (None, load_file(str(path)))
        except (SafetensorError, OSError) as e:
            if head[8:9] == b"{":  # safetensors: 8-byte header length, then the JSON header
                raise ValueError(f"{path} is not a readable safetensors file: {e}") from e
            found, payload = None, plain_state(torch_load_safe(path), str(path))
        if found is None:
            found = state_format(payload, str(path))
    if source not in ("auto", found):
        raise ValueError(f"{path} is in {found} format, not {source}")
    if found == "keras":
        payload = read_keras(path)
    return found, payload


def load_weight_file(path: str | Path, *, source: str = "auto", arch: str | None = None,
                     origin: str | None = None, classes: Sequence[str] | None = None,
                     normalization: Normalization | None = None) -> VGG:
    """Any local weight file (or run folder) as a model with its preprocessing.

    ``classes``: the class names of the file's outputs, when known (from the record of published
    weights, or from the user); a foreign file has none otherwise, whatever its number of outputs.
    Our checkpoints keep their own unless ``classes`` is given. ``normalization``: a foreign file's
    preprocessing, default its format's.
    """
    path = resolve_checkpoint(path)
    found, payload = read_weight_file(path, source)
    name = str(path)
    if found == "vgg":
        model = load_model(path)
        if arch is not None and parse_arch(arch) != (model.config, model.batch_norm):
            raise ValueError(f"{path} holds a {model.arch}, not a {arch}")
    else:
        if found == "keras":
            model = keras_model(payload, name, arch)
            default = CAFFE_NORMALIZATION
        else:
            state = timm_state(payload, name) if found == "timm" else torchvision_state(payload, name)
            model = model_from_state(state, infer_architecture(state, name, arch), name)
            default = TORCHVISION_NORMALIZATION
        # Keras' (and Caffe's) VGG expects BGR 0-255 minus the mean; torchvision's and timm's, RGB mean/std.
        normalization = default if normalization is None else normalization
        if model.in_channels == len(normalization.mean):
            model.normalization = normalization
        else:
            warnings.warn(f"{path}: {model.in_channels}-channel input; {found}'s 3-channel "
                          "preprocessing cannot apply, using none", stacklevel=2)
        model.classes = None
        model.info = {"source": found, "weights": origin or name}
    if classes is not None:
        if found == "keras" and not any(KERAS_DENSE.keys() & set(payload)):
            raise ValueError(f"{path} has no top (fc1, fc2, predictions): class names cannot apply")
        if len(classes) != model.num_classes:
            raise ValueError(f"{len(classes)} class names given for {path}, which has "
                             f"{model.num_classes} outputs")
        model.classes = list(classes)
    return model
