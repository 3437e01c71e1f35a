"""Our checkpoint format: a safetensors file, written atomically, read without unpickling.

The tensors are the model's state dict in torchvision's layout (``features.<i>``,
``classifier.0/3/6``); the metadata key ``vgg`` holds the JSON of :meth:`VGG.metadata`
(architecture, classes, normalisation, info). A run folder stands for its ``best.safetensors``.
Nothing is ever unpickled except through ``torch.load(weights_only=True)``.
"""

from __future__ import annotations

import json
import pickle
from pathlib import Path

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, safe_open, save_file

from ..files import atomic_write
from ..models import VGG, Normalization, create_model

METADATA_KEY = "vgg"
BEST, LAST = "best.safetensors", "last.safetensors"


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
