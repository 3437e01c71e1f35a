"""Weight files: our own checkpoints, and every foreign VGG format, read and written safely.

Our checkpoint is a safetensors file whose tensors are the model's state dict in torchvision's
layout (``features.<i>``, ``classifier.0/3/6``) and whose metadata key ``vgg`` holds the JSON of
:meth:`VGG.metadata` (architecture, classes, normalisation, info). A run folder stands for its
``best.safetensors``. Nothing is ever unpickled except through ``torch.load(weights_only=True)``.

Foreign formats are mapped onto that layout by one explicit, checked mapping each:

- torchvision: a plain state dict already in our layout (the FC layers as ``nn.Linear``).
- timm: ``features.*`` as torchvision, the FC layers as convolutions ``pre_logits.fc1`` (a k x k
  kernel), ``pre_logits.fc2`` (1 x 1) and a Linear ``head.fc``.
- Keras applications (HDF5): kernels stored (height, width, in, out), the first Dense layer reading a
  feature map flattened height-width-channel (not channel-height-width), BGR input.

Each source's preprocessing is stored with the converted weights (Sec. 2 / SPEC section 6), and
1000-class ImageNet weights get ImageNet's class names.
"""

from __future__ import annotations

import hashlib
import http.client
import json
import math
import os
import pickle
import re
import sys
import tempfile
import urllib.error
import urllib.parse
import urllib.request
import warnings
from collections.abc import Callable
from importlib import resources
from pathlib import Path

import numpy as np
import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, safe_open, save_file
from tqdm.auto import tqdm

from .models import (
    CAFFE_NORMALIZATION,
    CONFIGS,
    FC_WIDTH,
    NAMES,
    TORCHVISION_NORMALIZATION,
    VGG,
    Normalization,
    create_model,
    parse_arch,
)

METADATA_KEY = "vgg"
BEST, LAST = "best.safetensors", "last.safetensors"


def _umask() -> int:
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


def atomic_write(path: str | Path, write: Callable[[Path], None]) -> Path:
    """Call ``write(tmp)`` on a temporary file beside ``path``, then rename it over ``path``.

    A crash at any moment leaves either the old file or the new one, never a torn one.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    os.close(fd)
    try:
        write(Path(tmp))
        with open(tmp, "rb") as f:
            os.fsync(f.fileno())
        # mkstemp makes the file private (0600); give it the mode a plain open() would have.
        os.chmod(tmp, path.stat().st_mode & 0o777 if path.exists() else 0o666 & ~_umask())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return path


def save_model(model: VGG, path: str | Path) -> Path:
    """Write ``model`` as our safetensors checkpoint, atomically."""
    tensors = {k: v.detach().cpu().contiguous() for k, v in model.state_dict().items()}
    metadata = {METADATA_KEY: model.metadata_json()}
    return atomic_write(path, lambda tmp: save_file(tensors, str(tmp), metadata=metadata))


def resolve_checkpoint(path: str | Path) -> Path:
    """A checkpoint file, or a run folder's best checkpoint (its last one if it has no best)."""
    path = Path(path)
    if path.is_dir():
        for name in (BEST, LAST):
            if (path / name).is_file():
                return path / name
        raise FileNotFoundError(f"run folder {path} has no {BEST} or {LAST}")
    if not path.is_file():
        raise FileNotFoundError(f"checkpoint {path} does not exist")
    return path


def read_metadata(path: str | Path) -> dict:
    """The ``vgg`` metadata of one of our checkpoints."""
    path = resolve_checkpoint(path)
    try:
        with safe_open(str(path), framework="pt") as f:
            meta = f.metadata() or {}
    except (SafetensorError, OSError) as e:
        raise ValueError(f"{path} is not a readable safetensors file: {e}") from e
    if METADATA_KEY not in meta:
        raise ValueError(f"{path} is a safetensors file without vgg metadata; "
                         "convert foreign weights with `vgg convert`")
    return json.loads(meta[METADATA_KEY])


def model_from_metadata(meta: dict) -> VGG:
    """An (untrained) model with the architecture, classes and normalisation of ``meta``."""
    model = create_model(**meta["model"])
    model.classes = meta.get("classes")
    model.normalization = Normalization.from_dict(meta["normalization"])
    model.info = dict(meta.get("info") or {})
    return model


def load_model(path: str | Path, device: str | torch.device = "cpu") -> VGG:
    """Load one of our checkpoints (a file, or a run folder's best) as a ready model in eval mode,
    which knows its classes and normalisation."""
    path = resolve_checkpoint(path)
    model = model_from_metadata(read_metadata(path))
    state = load_file(str(path))
    load_state(model, state, source=str(path))
    return model.to(device).eval()


def load_state(model: VGG, state: dict[str, torch.Tensor], source: str, assign: bool = False) -> None:
    """Load a torchvision-layout state dict, with an error naming every missing, unexpected or
    mis-shaped tensor. ``assign=True`` adopts the given tensors (for a model built on the meta
    device, so that a full-size net is never initialised only to be overwritten)."""
    own = model.state_dict()
    problems = [f"missing {k}" for k in own if k not in state]
    problems += [f"unexpected {k}" for k in state if k not in own]
    problems += [f"{k}: expected {tuple(own[k].shape)}, got {tuple(state[k].shape)}"
                 for k in own if k in state and own[k].shape != state[k].shape]
    if problems:
        shown = "; ".join(problems[:8]) + (f"; and {len(problems) - 8} more" if len(problems) > 8
                                           else "")
        raise ValueError(f"{source} does not fit {model.arch} (width {model.width}, crop "
                         f"{model.crop_size}, {model.num_classes} classes): {shown}")
    model.load_state_dict(state, assign=assign)


def torch_load_safe(path: str | Path) -> object:
    """``torch.load`` that never runs code: a pickle that needs anything beyond tensors and plain
    containers is refused with a clear error, and nothing it contains runs."""
    try:
        return torch.load(str(path), map_location="cpu", weights_only=True)
    except (pickle.UnpicklingError, RuntimeError, EOFError, OSError, ValueError, SafetensorError) as e:
        # (torch.load hands files that look like safetensors to safetensors, hence its error too.)
        first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        raise ValueError(f"refusing to load {path}: not a plain tensor checkpoint (loading it "
                         f"would run pickled code, or the file is corrupt): {first}") from e


# -- ImageNet class names -----------------------------------------------------------------------------

def imagenet_classes() -> list[str]:
    """The 1000 ImageNet (ILSVRC-2012) class names in the standard index order (281 is "tabby")."""
    text = resources.files("vgg").joinpath("imagenet_classes.txt").read_text(encoding="utf-8")
    names = [line.strip() for line in text.splitlines() if line.strip()]
    if len(names) != 1000:
        raise RuntimeError(f"imagenet_classes.txt holds {len(names)} names, expected 1000")
    return names


# -- foreign state dicts: one explicit mapping per format ---------------------------------------------

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


# -- Keras applications (HDF5) ------------------------------------------------------------------------

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
                     origin: str | None = None) -> VGG:
    """Any local weight file (or run folder) as a model with its classes and preprocessing."""
    path = resolve_checkpoint(path)
    found, payload = read_weight_file(path, source)
    name = str(path)
    if found == "vgg":
        model = load_model(path)
        if arch is not None and parse_arch(arch) != (model.config, model.batch_norm):
            raise ValueError(f"{path} holds a {model.arch}, not a {arch}")
        return model
    if found == "keras":
        model = keras_model(payload, name, arch)
        normalization = CAFFE_NORMALIZATION
    else:
        state = timm_state(payload, name) if found == "timm" else torchvision_state(payload, name)
        model = model_from_state(state, infer_architecture(state, name, arch), name)
        normalization = TORCHVISION_NORMALIZATION
    # Keras' (and Caffe's) VGG expects BGR 0-255 minus the mean; torchvision's and timm's, RGB mean/std.
    if model.in_channels == len(normalization.mean):
        model.normalization = normalization
    else:
        warnings.warn(f"{path}: {model.in_channels}-channel input; {found}'s 3-channel "
                      "preprocessing cannot apply, using none", stacklevel=2)
    has_top = found != "keras" or any(KERAS_DENSE.keys() & set(payload))
    model.classes = imagenet_classes() if model.num_classes == 1000 and has_top else None
    model.info = {"source": found, "weights": origin or name}
    return model


# -- known names, URLs, the download cache --------------------------------------------------------------

TORCHVISION_URL = "https://download.pytorch.org/models/"
# torchvision's published ImageNet weights (IMAGENET1K_V1). The hex digits in each file name are the
# first digits of the file's SHA-256; as torch.hub's check_hash does, a download is accepted only if
# its SHA-256 starts with them.
TORCHVISION_WEIGHTS = {
    "vgg11": "vgg11-8a719046.pth", "vgg11_bn": "vgg11_bn-6002323d.pth",
    "vgg13": "vgg13-19584684.pth", "vgg13_bn": "vgg13_bn-abd245e5.pth",
    "vgg16": "vgg16-397923af.pth", "vgg16_bn": "vgg16_bn-6c64b313.pth",
    "vgg19": "vgg19-dcbb9e9d.pth", "vgg19_bn": "vgg19_bn-c79401a0.pth",
}
HASH_IN_NAME = re.compile(r"-([a-f0-9]{6,64})\.")  # torch.hub's HASH_REGEX, at least 6 digits


def vgg_home() -> Path:
    """The cache root: ``$VGG_HOME``, default ``~/.cache/vgg``."""
    return Path(os.environ.get("VGG_HOME") or "~/.cache/vgg").expanduser()


def sha256_file(path: str | Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        while chunk := f.read(1 << 22):
            digest.update(chunk)
    return digest.hexdigest()


def download(url: str, dest: str | Path, *, hash_prefix: str | None = None, progress: bool = True,
             timeout: float = 60.0) -> Path:
    """Download ``url`` to ``dest`` through a temporary file renamed only once the download is
    complete (its Content-Length) and its SHA-256 starts with ``hash_prefix``; a progress bar on
    stderr. Any failure is a ValueError naming the URL, and leaves no file behind."""
    dest = Path(dest)

    def write(tmp: Path) -> None:
        digest, got, total = hashlib.sha256(), 0, None
        try:
            with urllib.request.urlopen(url, timeout=timeout) as response, open(tmp, "wb") as f:
                length = response.headers.get("Content-Length")
                total = int(length) if length and length.isdigit() else None
                with tqdm(total=total, unit="B", unit_scale=True, unit_divisor=1024, desc=dest.name,
                          disable=not progress, file=sys.stderr) as bar:
                    while chunk := response.read(1 << 20):
                        f.write(chunk)
                        digest.update(chunk)
                        got += len(chunk)
                        bar.update(len(chunk))
        except http.client.IncompleteRead as e:
            raise ValueError(f"download of {url} was truncated after {got + len(e.partial)} of "
                             f"{total} bytes") from e
        except urllib.error.HTTPError as e:
            raise ValueError(f"could not download {url}: HTTP {e.code} {e.reason}") from e
        except (urllib.error.URLError, TimeoutError, ConnectionError) as e:
            reason = getattr(e, "reason", e)
            raise ValueError(f"could not download {url}: {reason} (a local file path works "
                             "offline)") from e
        if total is not None and got != total:
            raise ValueError(f"download of {url} was truncated after {got} of {total} bytes")
        if hash_prefix and not digest.hexdigest().startswith(hash_prefix):
            raise ValueError(f"download of {url} has SHA-256 {digest.hexdigest()}, which does not "
                             f"start with {hash_prefix}: corrupt, or not the published file")

    return atomic_write(dest, write)


def cached_download(url: str, *, progress: bool = True) -> Path:
    """``url`` in the cache ``$VGG_HOME/weights/<host>/<file name>``, downloaded on first use.
    A name with torchvision's ``-<hex>.`` hash is checked against it, also when found cached."""
    parsed = urllib.parse.urlparse(url)
    name = Path(parsed.path).name
    if not name:
        raise ValueError(f"URL {url} names no file")
    dest = vgg_home() / "weights" / (parsed.netloc.replace(":", "_") or "local") / name
    m = HASH_IN_NAME.search(name)
    prefix = m.group(1) if m else None
    if dest.is_file():
        if prefix is None or sha256_file(dest).startswith(prefix):
            return dest
        warnings.warn(f"cached {dest} does not match the hash in its name; downloading it again",
                      stacklevel=2)
    return download(url, dest, hash_prefix=prefix, progress=progress)


def resolve_spec(spec: str, progress: bool = True) -> tuple[Path, str | None]:
    """A local path as is; a known name (``vgg16``, ``vgg16_bn`` ...) or an http(s) URL through
    the download cache. Returns the file and, for known names, its format."""
    path = Path(spec).expanduser()
    if path.exists():
        return path, None
    name = spec.strip().lower()
    if name in TORCHVISION_WEIGHTS:
        return cached_download(TORCHVISION_URL + TORCHVISION_WEIGHTS[name], progress=progress), \
            "torchvision"
    if re.match(r"https?://", spec):
        return cached_download(spec, progress=progress), None
    raise FileNotFoundError(f"{spec} is neither a file or run folder, nor a known name "
                            f"({', '.join(TORCHVISION_WEIGHTS)}), nor an http(s) URL")


def load_any(spec: str | Path, *, device: str | torch.device = "cpu", arch: str | None = None,
             source: str = "auto", progress: bool = True) -> VGG:
    """Any weights as a ready eval-mode model that knows its classes and preprocessing.

    ``spec``: one of our checkpoints or a run folder; a foreign weight file (torchvision ``.pth``,
    timm ``.pth``/``.safetensors``, Keras ``.h5``) converted on the fly, its format told by its
    keys (or forced with ``source``); a known name (``vgg16``, ``vgg19_bn``, ...) resolved to
    torchvision's published file, SHA-256-checked and cached under ``$VGG_HOME``; an http(s) URL.
    ``arch``: the architecture the weights must fit (inferred from the shapes otherwise).
    """
    path, known = resolve_spec(str(spec), progress)
    if known and source not in ("auto", known):
        raise ValueError(f"{spec} names torchvision's weights, not {source} weights")
    if known and arch is not None and parse_arch(arch) != parse_arch(str(spec)):
        raise ValueError(f"{spec} weights do not fit --arch {arch}")
    model = load_weight_file(path, source=known or source, arch=arch or (str(spec) if known else None),
                             origin=str(spec))
    return model.to(device).eval()
