"""A run's configuration: :class:`TrainConfig` (the paper's recipe as defaults, Sec. 3.1), TOML
recipes, and what a resumed run may change."""

from __future__ import annotations

import dataclasses
import difflib
import json
import math
from dataclasses import dataclass, fields
from pathlib import Path

from ..evaluation.views import library_scale
from ..models import parse_arch
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
        if isinstance(self.scale, (int, float)) and not isinstance(self.scale, bool):
            self.scale = (int(self.scale), int(self.scale))
        elif isinstance(self.scale, (list, tuple)):
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
        if p:
            return p
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
            raise ValueError("invalid training config: " + "; ".join(problems))

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


def config_keys() -> list[str]:
    return [f.name for f in fields(TrainConfig)]


def check_keys(values: dict, source: str) -> dict:
    """Normalise ``a-b`` keys to ``a_b`` and refuse unknown keys, suggesting the closest valid one."""
    out, unknown = {}, []
    valid = config_keys()
    for key, value in values.items():
        k = key.replace("-", "_")
        if k not in valid:
            close = difflib.get_close_matches(k, valid, n=1)
            unknown.append(f"{key!r}" + (f" (did you mean {close[0]!r}?)" if close else ""))
        out[k] = value
    if unknown:
        raise ValueError(f"{source}: unknown config key{'s' if len(unknown) > 1 else ''} "
                         f"{', '.join(unknown)}; valid keys: {', '.join(valid)}")
    return out


def load_toml(path: str | Path) -> dict:
    """Read a recipe: flat ``key = value`` pairs named like TrainConfig's fields (or the flags)."""
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
    return check_keys(values, str(path))


def make_config(file: str | Path | None = None, overrides: dict | None = None,
                defaults: dict | None = None) -> TrainConfig:
    """TrainConfig from ``defaults`` (e.g. fine-tuning's), then a TOML file, then ``overrides``
    (the flags given on the command line), each overriding the one before."""
    values = dict(defaults or {})
    if file is not None:
        values.update(load_toml(file))
    values.update(check_keys(overrides or {}, "flags"))
    return TrainConfig(**values)


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
    saved = read_state(output / STATE, tensors=False)["config"]
    overrides = check_keys(overrides or {}, "flags")
    changed = [k for k, v in overrides.items() if k not in RESUMABLE_CHANGES
               and TrainConfig(**{**saved, k: v}).to_dict()[k] != saved[k]]
    if changed:
        raise ValueError(f"cannot change {', '.join(changed)} when resuming {output}; allowed: "
                         f"{', '.join(sorted(RESUMABLE_CHANGES))}")
    return TrainConfig(**{**saved, **overrides, "output": str(output)})

