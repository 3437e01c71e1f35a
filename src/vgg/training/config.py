"""A run's configuration: :class:`TrainConfig` (the paper's recipe as defaults, Sec. 3.1), TOML
recipes, and what a resumed run may change."""

from __future__ import annotations

import copy
import dataclasses
import difflib
import json
import math
from dataclasses import MISSING, dataclass, fields
from pathlib import Path

from ..evaluation.views import library_scale
from ..models import NAMES, parse_arch
from .state import STATE, read_state


@dataclass
class TrainConfig:
    """Everything a training run depends on; the defaults are the paper's (Sec. 3.1).

    ``scale`` is (S, S) for single-scale training or (Smin, Smax) for scale jittering; None means
    the paper's S = 256 at crop 224, i.e. round(256/224 x crop). ``batch_size`` is the global batch
    (split across processes); ``micro_batch`` the images per forward pass of one process, with
    gradients accumulated up to the batch. The learning rate is divided by ``lr_factor`` after
    ``lr_patience`` epochs without a val-accuracy gain of more than ``lr_threshold`` points, at most
    ``lr_drops`` times. Fine-tuning: the first ``freeze_epochs`` epochs train only the FC layers,
    the new last layer at ``head_lr_mult`` x lr; afterwards everything trains at
    ``unfreeze_lr_scale`` x those rates.
    """

    # data
    data: str = "fashion-mnist"
    classes: list | None = None
    limit: int | None = None
    val_size: int = 5000
    strict: bool = False
    workers: int = 0
    # network (Table 1) and initialisation
    arch: str = "vgg11"
    batch_norm: bool = False
    width: float = 1.0
    crop_size: int = 224
    dropout: float = 0.5
    init: str = "normal"
    init_std: float = 0.01
    init_from: str | None = None
    init_from_shallow: str | None = None
    pretrained: str | None = None
    reset_head: bool = False
    # what is learned: classification (Sec. 3.1) or localisation (App. A: a box per class (pcr) or one
    # shared box (scr); fine-tuning all layers or only the FC ones); boxes: --boxes [SPLIT=]PATH
    task: str = "classification"
    head: str = "pcr"
    finetune: str = "all"
    boxes: list | None = None
    # augmentation (Sec. 3.1)
    scale: tuple[int, int] | None = None
    flip: bool = True
    lighting_std: float = 0.1
    # optimisation (Sec. 3.1)
    epochs: int = 74
    batch_size: int = 256
    micro_batch: int | None = None
    lr: float = 0.01
    momentum: float = 0.9
    weight_decay: float = 5e-4
    # The paper does not say which parameters decay; ours all do, as Caffe's solver does unless a
    # layer sets decay_mult 0. False exempts biases and BatchNorm (timm's and torchvision's recipes).
    decay_bias_norm: bool = True
    lr_factor: float = 0.1
    lr_patience: int = 2
    lr_threshold: float = 0.0
    lr_drops: int = 3
    # fine-tuning
    freeze_epochs: int = 0
    head_lr_mult: float = 1.0
    unfreeze_lr_scale: float = 1.0
    # evaluation
    val_scale: int | None = None
    # Dense validation pools as Caffe (rounding up, so the whole image is seen); True: PyTorch's floor.
    floor_pooling: bool = False
    test: bool = False
    # run
    output: str = "runs/train"
    seed: int = 0
    deterministic: bool = False
    device: str = "auto"
    channels_last: bool | None = None
    amp: bool = True
    compile: bool = False
    save_every: int = 0
    save_minutes: float = 10.0
    progress: bool = True

    def __post_init__(self):
        def number(v) -> bool:
            return isinstance(v, (int, float)) and not isinstance(v, bool)

        if number(self.scale):
            self.scale = (int(self.scale), int(self.scale))
        elif isinstance(self.scale, (list, tuple)) and all(number(v) for v in self.scale):
            if len(self.scale) == 1:
                self.scale = (int(self.scale[0]), int(self.scale[0]))
            elif len(self.scale) == 2:
                self.scale = (int(self.scale[0]), int(self.scale[1]))
        self.validate()

    def problems(self) -> list[str]:
        """Every problem with this config (empty when it is valid)."""
        p = []
        types = {f.name: f.type for f in fields(self)}
        for f in fields(self):
            v = getattr(self, f.name)
            want = str(types[f.name])
            if v is None and "None" in want:
                continue
            if want.startswith("bool") and not isinstance(v, bool):
                p.append(f"{f.name} must be true or false, got {v!r}")
            elif want.startswith("int") and (isinstance(v, bool) or not isinstance(v, int)):
                p.append(f"{f.name} must be an integer, got {v!r}")
            elif want.startswith("float") and (isinstance(v, bool) or not isinstance(v, (int, float))):
                p.append(f"{f.name} must be a number, got {v!r}")
            elif want.startswith("str") and not isinstance(v, str):
                p.append(f"{f.name} must be a string, got {v!r}")
        if not p:
            return self._value_problems()
        # A wrong type hides no other problem: the other values are checked with the badly typed
        # ones at their defaults, and whatever is then said about those is left out.
        bad = {m.split(" ", 1)[0] for m in p}
        probe = copy.copy(self)  # no __post_init__, so no validation
        for f in fields(self):
            if f.name in bad:
                setattr(probe, f.name, f.default if f.default_factory is MISSING else f.default_factory())
        words = bad | {name.replace("_", " ") for name in bad}
        return p + [m for m in probe._value_problems() if not any(w in m for w in words)]

    def _value_problems(self) -> list[str]:
        p = []
        try:
            parse_arch(self.arch)
        except ValueError as e:
            p.append(str(e))
        for name in ("epochs", "batch_size"):
            if getattr(self, name) < 1:
                p.append(f"{name} must be at least 1, got {getattr(self, name)}")
        if self.micro_batch is not None and self.micro_batch < 1:
            p.append(f"micro_batch must be at least 1, got {self.micro_batch}")
        if self.classes is not None and (not isinstance(self.classes, list) or not self.classes or any(
                isinstance(c, bool) or not isinstance(c, (str, int)) for c in self.classes)):
            p.append(f"classes must be a non-empty list of class names or indices, got {self.classes!r}")
        if self.limit is not None and self.limit < 1:
            p.append(f"limit must be at least 1, got {self.limit}")
        if self.crop_size < 32 or self.crop_size % 32:
            p.append(f"crop_size must be a positive multiple of 32, got {self.crop_size}")
        if self.width <= 0:
            p.append(f"width must be positive, got {self.width}")
        if not 0 <= self.dropout < 1:
            p.append(f"dropout must be in [0, 1), got {self.dropout}")
        if self.init not in ("normal", "glorot"):
            p.append(f"init must be normal or glorot, got {self.init!r}")
        if self.init_std <= 0:
            p.append(f"init_std must be positive, got {self.init_std}")
        sources = [n for n in ("init_from", "init_from_shallow", "pretrained") if getattr(self, n)]
        if len(sources) > 1:
            p.append(f"give at most one of init_from, init_from_shallow, pretrained (got {sources})")
        if self.scale is not None:
            if not (isinstance(self.scale, tuple) and len(self.scale) == 2):
                p.append(f"scale must be S or [Smin, Smax], got {self.scale!r}")
            elif self.scale[0] > self.scale[1]:
                p.append(f"scale must be [Smin, Smax] with Smin <= Smax, got {list(self.scale)}")
            elif self.scale[0] < self.crop_size and not self.pretrained:
                p.append(f"scale {list(self.scale)}: S must be at least the crop size {self.crop_size}")
        if self.val_scale is not None and self.val_scale < self.crop_size and not self.pretrained:
            p.append(f"val_scale {self.val_scale} is smaller than the crop size {self.crop_size}")
        for name in ("lr", "lighting_std", "weight_decay", "momentum", "save_minutes", "lr_threshold"):
            if getattr(self, name) < 0:
                p.append(f"{name} must be >= 0, got {getattr(self, name)}")
        if self.lr == 0:
            p.append("lr must be positive, got 0")
        if not 0 < self.lr_factor < 1:
            p.append(f"lr_factor must be in (0, 1), got {self.lr_factor}")
        for name in ("lr_patience", "lr_drops", "freeze_epochs", "save_every", "workers", "seed",
                     "val_size"):
            if getattr(self, name) < 0:
                p.append(f"{name} must be >= 0, got {getattr(self, name)}")
        if self.task not in TASKS:
            p.append(f"task must be one of {', '.join(TASKS)}, got {self.task!r}")
        if self.head not in ("pcr", "scr"):
            p.append(f"head must be pcr (a box per class) or scr (one box), got {self.head!r}")
        if self.finetune not in ("all", "fc"):
            p.append(f"finetune must be all or fc (the FC layers only), got {self.finetune!r}")
        elif self.finetune == "fc" and not (self.pretrained or self.init_from):
            p.append("finetune fc needs pretrained weights (init_from or pretrained)")
        if self.task == "localization" and not (self.pretrained or self.init_from):
            p.append("a localisation net starts from a trained classification net (App. A.1): give "
                     "init_from (--init-from CLS_RUN)")
        if self.boxes is not None and (not isinstance(self.boxes, list) or
                                       not all(isinstance(b, str) for b in self.boxes)):
            p.append(f"boxes must be a list of [SPLIT=]PATH strings, got {self.boxes!r}")
        if self.freeze_epochs and not (self.pretrained or self.init_from):
            p.append("freeze_epochs needs pretrained weights (pretrained or init_from)")
        if self.head_lr_mult <= 0 or self.unfreeze_lr_scale <= 0:
            p.append("head_lr_mult and unfreeze_lr_scale must be positive")
        if self.device not in ("auto", "cpu", "cuda") and not self.device.startswith("cuda:"):
            p.append(f"device must be auto, cpu or cuda, got {self.device!r}")
        return p

    def validate(self) -> None:
        problems = self.problems()
        if problems:
            raise ConfigError(problems)

    def resolved_scale(self) -> tuple[int, int]:
        """(Smin, Smax); the paper's S = 256 at crop 224 scaled to the crop when not given."""
        if self.scale is not None:
            return self.scale
        s = library_scale(self.crop_size)
        return s, s

    def resolved_val_scale(self) -> int:
        """Q for validation: S, or (Smin + Smax) / 2 for jittered S (Sec. 4.1, one test scale)."""
        if self.val_scale is not None:
            return self.val_scale
        smin, smax = self.resolved_scale()
        return int(math.floor((smin + smax) / 2 + 0.5))

    def to_dict(self) -> dict:
        d = dataclasses.asdict(self)
        if d["scale"] is not None:
            d["scale"] = list(d["scale"])
        return d


class ConfigError(ValueError):
    """Every problem of a training config at once (``problems``), as one message."""

    def __init__(self, problems: list[str]):
        self.problems = list(problems)
        super().__init__("invalid training config: " + "; ".join(self.problems))


def config_keys() -> list[str]:
    return [f.name for f in fields(TrainConfig)]


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
TASKS = ("classification", "localization")
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

