"""The training state of a run (``state.safetensors``): model and optimizer tensors, every process's
RNG state, and the rest (epoch, step in the epoch, schedule, history, config) as JSON metadata, so
that a killed run resumes exactly. Safetensors only: nothing is unpickled."""

from __future__ import annotations

import json
from pathlib import Path

import torch
from safetensors import safe_open
from safetensors.torch import save_file

from ..files import atomic_write
from ..models import VGG

STATE = "state.safetensors"


def rng_state(device: torch.device) -> dict[str, torch.Tensor]:
    out = {"cpu": torch.get_rng_state()}
    if device.type == "cuda":
        out["cuda"] = torch.cuda.get_rng_state(device)
    return out


def set_rng_state(state: dict[str, torch.Tensor], device: torch.device) -> None:
    torch.set_rng_state(state["cpu"])
    if device.type == "cuda" and "cuda" in state:
        torch.cuda.set_rng_state(state["cuda"], device)


def save_state(path: Path, model: VGG, optimizer: torch.optim.Optimizer, meta: dict,
               rngs: list[dict[str, torch.Tensor]]) -> None:
    """The training state as safetensors: model and optimizer tensors, every process's RNG state,
    and the rest (epoch, step, schedule, history, config, model metadata) as JSON metadata."""
    tensors = {f"model.{k}": v.detach().cpu().contiguous().clone() for k, v in model.state_dict().items()}
    opt = optimizer.state_dict()
    scalars = {}
    for idx, entry in opt["state"].items():
        for key, value in entry.items():
            if isinstance(value, torch.Tensor):
                tensors[f"optim.{idx}.{key}"] = value.detach().cpu().contiguous().clone()
            else:
                scalars[f"{idx}.{key}"] = value
    for rank, states in enumerate(rngs):
        for name, value in states.items():
            tensors[f"rng.{rank}.{name}"] = value.cpu().contiguous()
    meta = {**meta, "optimizer": {"param_groups": opt["param_groups"], "scalars": scalars},
            "model": model.metadata()}
    atomic_write(path, lambda tmp: save_file(tensors, str(tmp), metadata={"state": json.dumps(meta)}))


def read_state(path: Path, tensors: bool = True) -> dict:
    """Read a training state written by :func:`save_state` (safetensors only, nothing unpickled)."""
    try:
        with safe_open(str(path), framework="pt") as f:
            meta = json.loads((f.metadata() or {})["state"])
            if tensors:
                meta["tensors"] = {k: f.get_tensor(k) for k in f.keys()}
    except Exception as e:  # a torn, foreign or corrupt file: say which
        raise ValueError(f"{path} is not a readable training state: {e}") from e
    return meta


def restore_optimizer(optimizer: torch.optim.Optimizer, meta: dict, tensors: dict) -> None:
    state: dict = {}
    for key, value in tensors.items():
        if key.startswith("optim."):
            _, idx, name = key.split(".", 2)
            state.setdefault(int(idx), {})[name] = value
    for key, value in meta["scalars"].items():
        idx, name = key.split(".", 1)
        state.setdefault(int(idx), {})[name] = value
    optimizer.load_state_dict({"state": state, "param_groups": meta["param_groups"]})

