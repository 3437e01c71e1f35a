"""A run's configuration: :class:`TrainConfig` (the paper's recipe as defaults, Sec. 3.1), TOML
recipes, and what a resumed run may change."""

from __future__ import annotations

import copy
import dataclasses
import math
from dataclasses import MISSING, dataclass, fields

from ..evaluation.views import library_scale
from ..models import parse_arch

TASKS = ("classification", "localization")


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
    # bf16 autocast of the training steps on CUDA and on CPUs with native bf16 (distributed.training_amp)
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
