"""Recipes and command lines as configs: TOML files, flags, defaults, aliases of other code bases' names,
and what a resumed run may change (resolved values compared, not spellings)."""

from __future__ import annotations

import difflib
import json
from pathlib import Path

from ..models import NAMES, parse_arch
from .config import ConfigError, TrainConfig, config_keys
from .state import STATE, read_state

# What other code bases call our keys: an unknown key that is one of these is told ours.
ALIASES = {
    "learning_rate": "lr", "base_lr": "lr", "lr0": "lr", "wd": "weight_decay",
    "num_epochs": "epochs", "n_epochs": "epochs", "max_epochs": "epochs",
    "bs": "batch_size", "batch": "batch_size", "train_batch_size": "batch_size",
    "model": "arch", "architecture": "arch", "network": "arch", "net": "arch", "bn": "batch_norm",
    "image_size": "crop_size", "img_size": "crop_size", "input_size": "crop_size", "crop": "crop_size",
    "num_workers": "workers", "dataset": "data", "data_dir": "data", "data_path": "data",
    "output_dir": "output", "out_dir": "output", "out": "output", "save_dir": "output",
    "patience": "lr_patience", "gamma": "lr_factor", "lr_gamma": "lr_factor", "lr_decay": "lr_factor",
    "dropout_rate": "dropout", "drop_rate": "dropout", "mixed_precision": "amp", "fp16": "amp",
    "bf16": "amp", "scales": "scale", "train_scale": "scale", "test_scale": "val_scale",
    "checkpoint": "init_from", "weights": "pretrained", "random_seed": "seed", "hflip": "flip",
}


def key_problems(values: dict, source: str) -> tuple[dict, list[str]]:
    """``values`` with ``a-b`` keys normalised to ``a_b`` and the unknown ones left out, and a problem
    for each unknown key naming ours (another code base's name for it) or the closest valid one."""
    out, problems = {}, []
    valid = config_keys()
    for key, value in values.items():
        k = key.replace("-", "_")
        if k in valid:
            out[k] = value
            continue
        if k == "resume":
            hint = " (resuming is not a recipe setting: pass --resume on the command line)"
        elif k.lower() in ALIASES:
            hint = f" (ours is {ALIASES[k.lower()]!r})"
        else:
            close = difflib.get_close_matches(k, valid, n=1)
            hint = f" (did you mean {close[0]!r}?)" if close else f"; valid keys: {', '.join(valid)}"
        problems.append(f"{source}: unknown config key {key!r}{hint}")
    return out, problems


def check_keys(values: dict, source: str) -> dict:
    """Normalise ``a-b`` keys to ``a_b`` and refuse unknown keys, naming ours or the closest one."""
    out, problems = key_problems(values, source)
    if problems:
        raise ConfigError(problems)
    return out


def build_config(values: dict, problems: list[str] | None = None) -> TrainConfig:
    """``TrainConfig(**values)``; one :class:`ConfigError` says ``problems`` (e.g. unknown keys) and
    every problem of the values together."""
    problems = list(problems or [])
    try:
        config = TrainConfig(**values)
    except ConfigError as e:
        raise ConfigError(problems + e.problems) from None
    if problems:
        raise ConfigError(problems)
    return config


def load_toml(path: str | Path) -> dict:
    """Read a recipe: flat ``key = value`` pairs named like TrainConfig's fields (or the flags)."""
    return check_keys(*toml_values(path))


def toml_values(path: str | Path) -> tuple[dict, str]:
    """A recipe's flat ``key = value`` pairs as written (keys not checked), and its name."""
    try:
        import tomllib
    except ModuleNotFoundError:  # Python 3.10
        import tomli as tomllib
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"config file {path} does not exist")
    try:
        values = tomllib.loads(path.read_text())
    except tomllib.TOMLDecodeError as e:
        raise ValueError(f"{path}: not valid TOML: {e}") from e
    nested = [k for k, v in values.items() if isinstance(v, dict)]
    if nested:
        raise ValueError(f"{path}: tables are not supported ({', '.join(nested)}); use flat keys")
    return values, str(path)


def make_config(file: str | Path | None = None, overrides: dict | None = None,
                defaults: dict | None = None) -> TrainConfig:
    """TrainConfig from the task's defaults (:data:`TASK_DEFAULTS`), ``defaults`` (e.g. fine-tuning's),
    then a TOML file, then ``overrides`` (the flags given on the command line), each overriding the
    one before."""
    from_file, problems = key_problems(*toml_values(file)) if file is not None else ({}, [])
    given = {**from_file, **check_keys(overrides or {}, "flags")}
    task = given.get("task", (defaults or {}).get("task"))
    return build_config({**TASK_DEFAULTS.get(task, {}), **(defaults or {}), **given}, problems)


def to_toml(values: dict) -> str:
    """A flat dict as TOML (None values are left out: they mean the default)."""
    def fmt(v):
        if isinstance(v, bool):
            return "true" if v else "false"
        if isinstance(v, (int, float)):
            return repr(v)
        if isinstance(v, (list, tuple)):
            return "[" + ", ".join(fmt(x) for x in v) + "]"
        return json.dumps(str(v))

    return "".join(f"{k} = {fmt(v)}\n" for k, v in values.items() if v is not None)


def run_config(file: str | Path | None, flags: dict, defaults: dict | None = None,
               resume: bool | str = False) -> TrainConfig:
    """The config of a command line: for a new run, defaults < file < flags; for ``resume`` (True:
    the run in the config's output folder; a string: that folder), the saved config with the file's
    and the flags' values applied where a resumed run may change them."""
    if not resume:
        return make_config(file, flags, defaults)
    given = {**(load_toml(file) if file else {}), **check_keys(flags, "flags")}
    folder = resume if isinstance(resume, str) else make_config(file, flags, defaults).output
    return resume_config(folder, given)


# Tasks, and the defaults a task brings (below the file's and the flags' values): App. A.1, the
# localisation nets are fine-tuned from the classification nets at an initial rate of 1e-3.
TASK_DEFAULTS = {"localization": {"lr": 1e-3, "output": "runs/localization"}}


# Fine-tuning's defaults (Sec. 3.1's lr 1e-3 for nets initialised from a trained one): a new head,
# one epoch of the FC layers alone with the new layer at 10x, then all layers at a tenth of that.
FINETUNE_DEFAULTS = {"lr": 1e-3, "epochs": 10, "freeze_epochs": 1, "head_lr_mult": 10.0,
                     "unfreeze_lr_scale": 0.1, "reset_head": True, "output": "runs/finetune"}


# Settings that may change when a run is resumed: where and how it runs, and how long.
RESUMABLE_CHANGES = {"epochs", "device", "workers", "progress", "save_every", "save_minutes", "test",
                     "output", "compile", "channels_last", "strict"}


def resume_config(output: str | Path, overrides: dict | None = None) -> TrainConfig:
    """The saved config of the run in ``output``, with the allowed ``overrides`` applied."""
    output = Path(output)
    if not (output / STATE).is_file():
        raise FileNotFoundError(f"cannot resume: {output / STATE} does not exist (no checkpoint yet)")
    saved = {**SAVED_BEFORE, **read_state(output / STATE, tensors=False)["config"]}
    overrides = check_keys(overrides or {}, "flags")
    # The original command line repeated is no change: values are compared as resolved, not as
    # spelt (--arch A is the stored vgg11, --scale 37 the stored [37, 37]).
    changed = [k for k, v in overrides.items() if k not in RESUMABLE_CHANGES
               and resolved_value(TrainConfig(**{**saved, k: v}).to_dict(), k) != resolved_value(saved, k)]
    if changed:
        raise ValueError(f"cannot change {', '.join(changed)} when resuming {output}; allowed: "
                         f"{', '.join(sorted(RESUMABLE_CHANGES))}")
    allowed = {k: v for k, v in overrides.items() if k in RESUMABLE_CHANGES}
    return TrainConfig(**{**saved, **allowed, "output": str(output)})


# The settings of a run saved before they existed: what such a run did (it resumes as it started).
SAVED_BEFORE = {"floor_pooling": True}


def resolved_value(values: dict, key: str):
    """What a setting of a config dict means rather than how it is spelt: the net's usual name for
    ``arch`` and ``batch_norm`` (``A`` + batch_norm is ``vgg11_bn``); other values as they are."""
    if key in ("arch", "batch_norm"):
        config, bn = parse_arch(values["arch"])
        return NAMES[config] + ("_bn" if bn or values.get("batch_norm") else "")
    return values.get(key)

