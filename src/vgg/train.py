"""Training with the paper's recipe (Sec. 3.1), resumable to the bit, on one process or many.

The recipe: multinomial logistic regression, mini-batch SGD (batch 256, momentum 0.9, weight decay
5e-4), dropout 0.5 on fc6/fc7, learning rate 1e-2 divided by 10 when the validation accuracy stops
improving (three times at most), 74 epochs; random crops of the image rescaled to shorter side S
(fixed, or jittered in [Smin, Smax]), random flips and AlexNet's PCA colour shift; initialisation
from random weights, from a trained net A (``init_from_shallow``) or from another run (``init_from``).

A run folder holds ``config.toml`` (the resolved config), ``log.jsonl`` (one JSON record per epoch
and event), ``last.safetensors`` and ``best.safetensors`` (our checkpoint format, with the
architecture, classes, normalisation, training scale, PCA and config in their metadata),
``state.safetensors`` (everything else a resumed run needs: optimizer, schedule, epoch, step in the
epoch, RNG states of every process; no pickle anywhere) and ``curves.png``. Every file is written
atomically, so a run killed at any moment resumes exactly where its last checkpoint left it.
"""

from __future__ import annotations

import dataclasses
import difflib
import gc
import json
import math
import os
import time
import warnings
from contextlib import nullcontext
from dataclasses import dataclass, field, fields
from pathlib import Path

import torch
import torch.nn.functional as F
from safetensors import safe_open
from safetensors.torch import save_file
from torch import nn

from . import data, distributed
from .models import VGG, Normalization, attach_cpu_inference, create_model, init_from_shallow, parse_arch
from .weights import BEST, LAST, atomic_write, load_state, model_from_metadata, save_model

STATE = "state.safetensors"
CONFIG_FILE = "config.toml"
LOG_FILE = "log.jsonl"
CURVES = "curves.png"

# Channels-last on CPU: measured with the demo net (B, BN, width 0.25, crop 32, batch 128, one thread,
# AMD EPYC with AVX-512): 202 and 208 training images/s against 166 and 131 in NCHW (alternating runs),
# so it is used on CPU too (README, Training).
CPU_CHANNELS_LAST = True


def cross_entropy(logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """Summed multinomial logistic loss (Sec. 3.1); a module attribute so that tests can fault it."""
    return F.cross_entropy(logits.float(), labels, reduction="sum")


class NonFiniteLoss(RuntimeError):
    """The loss became NaN or infinite; the run stopped before saving anything from that point."""


# -- config ------------------------------------------------------------------------------------------

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
        s = int(math.floor(self.crop_size * 256 / 224 + 0.5))
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


# -- schedule ----------------------------------------------------------------------------------------

@dataclass
class Plateau:
    """Sec. 3.1: "the learning rate was decreased by a factor of 10 when the validation set accuracy
    stopped improving"; "decreased 3 times". ``factor`` multiplies every group's base rate."""

    patience: int
    threshold: float = 0.0
    drop: float = 0.1
    max_drops: int = 3
    best: float = -math.inf
    bad_epochs: int = 0
    drops: int = 0

    @property
    def factor(self) -> float:
        return self.drop ** self.drops

    def step(self, accuracy: float) -> bool:
        """Record one epoch's val accuracy; True when the rate is divided now."""
        if accuracy > self.best + self.threshold:
            self.best, self.bad_epochs = accuracy, 0
            return False
        self.bad_epochs += 1
        if self.bad_epochs >= self.patience and self.drops < self.max_drops:
            self.drops, self.bad_epochs = self.drops + 1, 0
            return True
        return False

    def state_dict(self) -> dict:
        return {"best": None if self.best == -math.inf else self.best, "bad_epochs": self.bad_epochs,
                "drops": self.drops}

    def load_state_dict(self, state: dict) -> None:
        self.best = -math.inf if state["best"] is None else state["best"]
        self.bad_epochs, self.drops = state["bad_epochs"], state["drops"]


# -- model -------------------------------------------------------------------------------------------

def load_weights(spec: str) -> VGG:
    """Any weights for init_from / pretrained: weights.load_any when it exists (foreign formats,
    known names, URLs), else our own checkpoints."""
    from . import weights

    loader = getattr(weights, "load_any", None) or weights.load_model
    return loader(spec)


def adapt_input_channels(model: VGG, channels: int) -> None:
    """Fit an RGB net to greyscale data: a grey image is R = G = B, so the first conv's weights
    summed over its input channels see exactly what the RGB net saw (up to the normalisation's
    per-channel std, replaced by its mean)."""
    if model.in_channels == channels:
        return
    if channels != 1:
        raise ValueError(f"the net takes {model.in_channels}-channel images, the data has {channels}")
    conv = model.features[0]
    norm = model.normalization
    with torch.no_grad():
        std = torch.tensor(norm.std, dtype=conv.weight.dtype).view(1, -1, 1, 1)
        weight = (conv.weight / std).sum(1, keepdim=True) * (sum(norm.std) / len(norm.std))
        new = nn.Conv2d(1, conv.out_channels, conv.kernel_size, conv.stride, conv.padding)
        new.weight.copy_(weight)
        new.bias.copy_(conv.bias)
    model.features[0] = new
    model.in_channels = 1
    model.normalization = Normalization((sum(norm.mean) / len(norm.mean),), (sum(norm.std) / len(norm.std),))


def build_model(config: TrainConfig, classes: list[str], channels: int, stats: dict) -> VGG:
    """The net to train: fresh (Table 1, initialised per ``config.init``), or from pretrained weights,
    a checkpoint (``init_from``), or a trained net A (``init_from_shallow``, Sec. 3.1)."""
    k = len(classes)
    if config.pretrained:
        model = load_weights(config.pretrained)
        adapt_input_channels(model, channels)
        if config.reset_head or model.num_classes != k:
            model.reset_classifier(k)
    else:
        model = create_model(config.arch, num_classes=k, batch_norm=config.batch_norm,
                             dropout=config.dropout, crop_size=config.crop_size, width=config.width,
                             init=config.init, in_channels=channels, init_std=config.init_std)
        # The paper subtracts the training set's mean RGB and nothing else (Sec. 2).
        model.normalization = Normalization(tuple(stats["mean"]), (1.0,) * channels)
        source = config.init_from or config.init_from_shallow
        if source:
            src = load_weights(source)
            adapt_input_channels(src, channels)
            model.normalization = src.normalization  # preprocessing travels with the weights
            if config.init_from_shallow:
                init_from_shallow(model, src)
            else:
                state = src.state_dict()
                if src.num_classes != k or config.reset_head:
                    head = {n: v for n, v in model.state_dict().items() if n.startswith("classifier.6.")}
                    state = {**{n: v for n, v in state.items() if not n.startswith("classifier.6.")}, **head}
                load_state(model, state, source=source)
    for m in model.classifier:
        if isinstance(m, nn.Dropout):
            m.p = config.dropout
    model.dropout = config.dropout
    model.classes = list(classes)
    return model


def head_parameters(model: VGG) -> set[int]:
    return {id(p) for p in model.classifier[6].parameters()}


def param_groups(model: VGG) -> list[dict]:
    """Three groups with their own rates: conv layers, fc6/fc7, and the last FC layer (the "head")."""
    head = head_parameters(model)
    fc = [p for p in model.classifier.parameters() if id(p) not in head]
    return [{"name": "features", "params": list(model.features.parameters())},
            {"name": "fc", "params": fc},
            {"name": "head", "params": list(model.classifier[6].parameters())}]


def group_lrs(config: TrainConfig, epoch: int, factor: float) -> dict[str, float]:
    """Each group's learning rate at ``epoch``: base x head multiplier x stage x plateau factor.
    During the frozen stage of fine-tuning the conv layers do not train (rate 0)."""
    frozen = epoch < config.freeze_epochs
    stage = 1.0 if frozen or not config.freeze_epochs else config.unfreeze_lr_scale
    base = config.lr * stage * factor
    return {"features": 0.0 if frozen else base, "fc": base, "head": base * config.head_lr_mult}


# -- checkpoints -------------------------------------------------------------------------------------

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


# -- evaluation during training ----------------------------------------------------------------------

@torch.no_grad()
def validate(model: VGG, dataset, *, scale: int, batch_size: int, ctx: distributed.Context,
             amp: bool, channels_last: bool, workers: int = 0) -> dict:
    """Val loss and top-1 accuracy, the net applied densely at one test scale Q (Sec. 3.2, 4.1),
    without flips; the batches are shared out over the processes and the sums reduced."""
    model.eval()
    sums = torch.zeros(3, dtype=torch.float64, device=ctx.device)
    batches = data.eval_batches(dataset, scale=scale, batch_size=batch_size, workers=workers,
                                device=ctx.device)
    autocast = torch.autocast("cuda", dtype=torch.bfloat16) if amp else nullcontext()
    for i, (images, labels, _) in enumerate(batches):
        if i % ctx.world_size != ctx.rank:
            continue
        x = model.normalization(images)
        if channels_last:
            x = x.contiguous(memory_format=torch.channels_last)
        with autocast:
            logits = model(x)
        sums += torch.stack([cross_entropy(logits, labels).double(),
                             (logits.argmax(1) == labels).sum().double(),
                             torch.tensor(float(len(labels)), dtype=torch.float64, device=ctx.device)])
    distributed.all_reduce_sum(sums)
    loss, correct, n = sums.tolist()
    return {"loss": loss / max(n, 1), "accuracy": 100.0 * correct / max(n, 1), "images": int(n),
            "skipped": batches.skipped}


# -- plots and logs ----------------------------------------------------------------------------------

def plot_curves(history: list[dict], path: Path) -> Path:
    """Loss, accuracy and learning rate per epoch, as one PNG."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    epochs = [h["epoch"] for h in history]
    fig, axes = plt.subplots(1, 3, figsize=(14, 4))
    axes[0].plot(epochs, [h["train_loss"] for h in history], "o-", label="train")
    axes[0].plot(epochs, [h["val_loss"] for h in history], "o-", label="val")
    axes[0].set_title("loss")
    axes[1].plot(epochs, [h["train_accuracy"] for h in history], "o-", label="train (augmented)")
    axes[1].plot(epochs, [h["val_accuracy"] for h in history], "o-", label="val")
    axes[1].set_title("top-1 accuracy (%)")
    axes[2].plot(epochs, [h["lr"] for h in history], "o-")
    axes[2].set_yscale("log")
    axes[2].set_title("learning rate")
    for ax in axes:
        ax.set_xlabel("epoch")
        ax.grid(alpha=0.3)
    axes[0].legend()
    axes[1].legend()
    fig.tight_layout()
    atomic_write(path, lambda tmp: fig.savefig(tmp, format="png", dpi=90))
    plt.close(fig)
    return path


class RunLog:
    """log.jsonl (append one JSON object per line), echoed to TensorBoard when it is installed."""

    def __init__(self, folder: Path, keep_until_step: int | None):
        self.path = folder / LOG_FILE
        next_epoch = None
        if keep_until_step is not None and self.path.is_file():
            # A resumed run continues the log of its checkpoint: later lines are replayed anyway.
            records = [json.loads(line) for line in self.path.read_text().splitlines() if line.strip()]
            kept = [r for r in records if r.get("step", 0) <= keep_until_step]
            atomic_write(self.path, lambda tmp: tmp.write_text("".join(json.dumps(r) + "\n" for r in kept)))
            next_epoch = 1 + max((r.get("epoch", 0) for r in kept), default=0)
        elif keep_until_step is None:
            self.path.unlink(missing_ok=True)
        self.tb = None
        try:
            from torch.utils.tensorboard import SummaryWriter

            # purge_step hides the points a killed run wrote after its checkpoint, as the log does.
            self.tb = SummaryWriter(str(folder / "tensorboard"), purge_step=next_epoch)
        except ImportError:
            pass

    def write(self, record: dict) -> None:
        with open(self.path, "a") as f:
            f.write(json.dumps(record) + "\n")
        if self.tb is not None and "epoch" in record and "event" not in record:
            for key, value in record.items():
                if isinstance(value, (int, float)) and key not in ("epoch", "step"):
                    self.tb.add_scalar(key, value, record["epoch"])
            self.tb.flush()

    def close(self) -> None:
        if self.tb is not None:
            self.tb.close()


# -- the loop ----------------------------------------------------------------------------------------

@dataclass
class TrainResult:
    output: Path
    best_val_accuracy: float
    best_epoch: int
    epochs: int
    seconds: float
    history: list[dict] = field(default_factory=list)
    test: dict | None = None


def seed_everything(seed: int, deterministic: bool) -> None:
    torch.manual_seed(seed)
    if deterministic:
        os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")
        torch.use_deterministic_algorithms(True)
        torch.backends.cudnn.benchmark = False
        torch.backends.cudnn.deterministic = True
    else:
        torch.backends.cudnn.benchmark = True


def open_data(config: TrainConfig):
    # The held-out val split is fixed (seed 0), not the run's seed: nets trained with different seeds
    # must share it, or their val numbers and fusions would see each other's training images.
    kw = dict(limit=config.limit, val_size=config.val_size, seed=0, strict=config.strict)
    train_set = data.open_dataset(config.data, "train", **kw)
    val_set = data.open_dataset(config.data, "val", **kw)
    if config.classes is not None:
        return select_classes(train_set, config.classes), select_classes(val_set, config.classes)
    return train_set, val_set


def select_classes(dataset, classes: list):
    """The images of some classes only (names, or indices into the data's class list), relabelled
    0..K-1 in the order given: e.g. a net pre-trained on half the classes, to fine-tune on all."""
    names = []
    for c in classes:
        if isinstance(c, str) and c in dataset.classes:
            names.append(c)
        elif str(c).isdigit() and int(c) < len(dataset.classes):
            names.append(dataset.classes[int(c)])
        else:
            raise ValueError(f"class {c!r} is not one of {dataset.name}'s classes: {dataset.classes}")
    if len(set(names)) != len(names):
        raise ValueError(f"classes {classes} name a class twice")
    keep = torch.tensor([dataset.classes.index(n) for n in names])
    mask = torch.isin(dataset.labels, keep)
    remap = torch.full((len(dataset.classes),), -1, dtype=torch.int64)
    remap[keep] = torch.arange(len(keep))
    labels = remap[dataset.labels[mask]]
    if isinstance(dataset, data.TensorDataset):
        return data.TensorDataset(dataset.images[mask], labels, names, dataset.name, dataset.split)
    idx = mask.nonzero().flatten().tolist()
    return data.FolderDataset([dataset.paths[i] for i in idx], labels.tolist(), names, dataset.name,
                              dataset.split)


def train(config: TrainConfig, *, resume: bool = False, datasets=None) -> TrainResult:
    """Run (or resume) training as ``config`` says; returns the best val accuracy and where the run
    lives. Under torchrun every process calls this; only rank 0 writes. ``datasets`` = (train, val)
    replaces ``config.data`` (e.g. a subset built in Python)."""
    ctx = distributed.setup(config.device)
    try:
        result = _train(config, ctx, resume, datasets)
    except BaseException:
        gc.collect()
        distributed.cleanup()
        raise
    # The DDP wrapper (its reducer holds the process group and gloo's pending work) sits in reference
    # cycles: free it now, while the interpreter is whole; freed at exit instead, gloo's threads can
    # abort the process. Then every process finishes together before the group goes: a gloo group
    # torn down while another process still talks to it can abort that process too ("terminate called
    # without an active exception").
    gc.collect()
    distributed.barrier()
    distributed.cleanup()
    return result


def _train(config: TrainConfig, ctx: distributed.Context, resume: bool, datasets) -> TrainResult:
    out = Path(config.output)
    if config.batch_size % ctx.world_size:
        raise ValueError(f"batch_size {config.batch_size} is not divisible by the {ctx.world_size} "
                         "processes; the global batch is split evenly across them")
    per_rank = config.batch_size // ctx.world_size
    micro = min(config.micro_batch or per_rank, per_rank)
    # Every process checks (not only rank 0), so that no process is left waiting for one that failed.
    if not resume and (out / STATE).is_file():
        raise ValueError(f"{out} already holds a run; pass --resume to continue it or choose another "
                         "--output")
    seed_everything(config.seed, config.deterministic)
    train_set, val_set = datasets if datasets is not None else open_data(config)
    saved = read_state(out / STATE) if resume else None
    if saved is not None:
        model = model_from_metadata(saved["model"])
        load_state(model, {k[6:]: v for k, v in saved["tensors"].items() if k.startswith("model.")},
                   source=str(out / STATE))
    else:
        stats = data.channel_statistics(train_set, seed=config.seed)
        model = build_model(config, train_set.classes, train_set.channels, stats)
        model.info = {**model.info, "pca": {"eigval": stats["eigval"], "eigvec": stats["eigvec"]},
                      "data": getattr(train_set, "name", config.data)}
    # A pretrained net fixes the architecture; the resolved config says what was trained.
    config = dataclasses.replace(config, arch=model.arch, batch_norm=model.batch_norm, width=model.width,
                                 crop_size=model.crop_size)
    config = dataclasses.replace(config, scale=config.resolved_scale())
    if list(model.classes or []) != list(train_set.classes):
        raise ValueError(f"the checkpoint's classes {model.classes} differ from the data's "
                         f"{train_set.classes}")
    smin, smax = config.scale
    if smin < model.crop_size:
        raise ValueError(f"scale {list(config.scale)}: S must be at least the net's crop size "
                         f"{model.crop_size}")
    model.info["train_scale"] = [smin, smax]
    model.info["train_config"] = config.to_dict()
    device = ctx.device
    cuda = device.type == "cuda"
    channels_last = config.channels_last if config.channels_last is not None else (cuda or CPU_CHANNELS_LAST)
    amp = cuda and config.amp
    model.to(device)
    if channels_last:
        model.to(memory_format=torch.channels_last)
    if device.type == "cpu" and not config.compile:
        # Validation takes the fused inference path (training steps still run the modules), repacked
        # once per pass: for VGG16-BN at width 0.5 on Fashion-MNIST (Q = 40, batch 128, 2 threads) a
        # pass took 2.5 s against 2.6-2.8 s; the model call alone at crop 32, one thread, 1.27x.
        attach_cpu_inference(model)
    optimizer = torch.optim.SGD(param_groups(model), lr=config.lr, momentum=config.momentum,
                                weight_decay=config.weight_decay)
    plateau = Plateau(config.lr_patience, config.lr_threshold, config.lr_factor, config.lr_drops)
    pca = model.info.get("pca") if config.lighting_std > 0 else None
    augment = data.Augment(crop_size=model.crop_size, scale=(smin, smax), flip=config.flip, pca=pca,
                           lighting_std=config.lighting_std)
    val_scale = config.resolved_val_scale()
    epoch, step, global_step, history = 0, 0, 0, []
    skipped: dict[str, str] = {}  # undecodable files met by this process: path -> reason
    best = {"accuracy": -1.0, "epoch": -1}
    sums = [0.0, 0.0, 0]  # this epoch's loss sum, correct, images (all processes)
    seconds = 0.0
    # Every process draws its own dropout masks.
    torch.manual_seed(config.seed * 1_000_003 + ctx.rank + 1)
    if saved is not None:
        restore_optimizer(optimizer, saved["optimizer"], saved["tensors"])
        plateau.load_state_dict(saved["plateau"])
        epoch, step, global_step = saved["epoch"], saved["step"], saved["global_step"]
        history, best, sums, seconds = saved["history"], saved["best"], saved["sums"], saved["seconds"]
        rngs = [{name.split(".", 2)[2]: v for name, v in saved["tensors"].items()
                 if name.startswith(f"rng.{r}.")} for r in range(saved["world_size"])]
        if saved["world_size"] == ctx.world_size:
            set_rng_state(rngs[ctx.rank], device)
        else:
            warnings.warn(f"resuming a {saved['world_size']}-process run on {ctx.world_size} processes: "
                          "dropout masks will differ from the original run", stacklevel=2)
        del saved["tensors"]
    log = None
    if ctx.main:
        out.mkdir(parents=True, exist_ok=True)
        atomic_write(out / CONFIG_FILE, lambda tmp: tmp.write_text(to_toml(config.to_dict())))
        log = RunLog(out, global_step if resume else None)
        log.write({"event": "resume" if resume else "start", "step": global_step, "epoch": epoch,
                   "world_size": ctx.world_size, "device": str(device), "time": time.time()})
        print(f"{'resuming' if resume else 'training'} {model.arch} (width {model.width:g}, crop "
              f"{model.crop_size}, S={describe(config.scale)}) on {len(train_set)} {train_set.name} "
              f"images, {len(train_set.classes)} classes; {ctx.world_size} process(es) on {device}; "
              f"output {out}", flush=True)

    def checkpoint(epoch_done: bool) -> None:
        """Write the training state (then ``last``) atomically; every process sends its RNG state."""
        rngs = distributed.all_gather_objects({k: v.cpu() for k, v in rng_state(device).items()})
        if not ctx.main:
            return
        model.info["epoch"] = epoch + (1 if epoch_done else 0)
        meta = {"epoch": epoch + 1 if epoch_done else epoch, "step": 0 if epoch_done else step,
                "global_step": global_step, "history": history, "best": best, "plateau": plateau.state_dict(),
                "sums": [0.0, 0.0, 0] if epoch_done else sums, "seconds": seconds, "config": config.to_dict(),
                "world_size": ctx.world_size}
        save_state(out / STATE, model, optimizer, meta, rngs)
        save_model(model, out / LAST)

    net, no_sync = model, None
    trainable: tuple | None = None
    last_save = time.monotonic()
    start_time = time.monotonic()
    while epoch < config.epochs:
        # Fine-tuning stage: which parameters train, and every group's rate for this epoch.
        frozen = epoch < config.freeze_epochs
        lrs = group_lrs(config, epoch, plateau.factor)
        for group in optimizer.param_groups:
            group["lr"] = lrs[group["name"]]
        if trainable != (frozen,):
            for p in model.features.parameters():
                p.requires_grad_(not frozen)
            net, no_sync = wrap(model, ctx, config.compile)
            trainable = (frozen,)
        batches = data.train_batches(train_set, augment=augment, normalization=model.normalization,
                                     batch_size=config.batch_size, seed=config.seed, epoch=epoch,
                                     start_batch=step, rank=ctx.rank, world_size=ctx.world_size,
                                     workers=config.workers, device=device, channels_last=channels_last)
        n_batches = step + len(batches)
        model.train()
        if frozen:
            model.features.eval()  # frozen conv layers keep their BN statistics too
        bar = progress_bar(config, ctx, epoch, step, n_batches)
        t0, seen_here = time.monotonic(), 0
        pending = torch.zeros(3, dtype=torch.float64, device=device)
        for images, labels in batches:
            optimizer.zero_grad(set_to_none=True)
            pending += forward_backward(net, images, labels, micro, amp, no_sync)
            step, global_step, seen_here = step + 1, global_step + 1, seen_here + len(labels)
            save_due = bool(config.save_every) and global_step % config.save_every == 0
            if not cuda or step % 10 == 0 or step == n_batches or save_due:
                # Sync point: sum over processes, check the loss before the step is applied.
                want = float(ctx.main and time.monotonic() - last_save > 60 * config.save_minutes > 0)
                reduced = distributed.all_reduce_sum(torch.cat([pending, pending.new_tensor([want])]))
                if not math.isfinite(reduced[0].item()):
                    if log is not None:
                        log.write({"event": "diverged", "step": global_step, "epoch": epoch + 1})
                    raise NonFiniteLoss(diverged_message(epoch, step, optimizer, out))
                totals = reduced.tolist()
                sums = [sums[0] + totals[0], sums[1] + totals[1], sums[2] + int(totals[2])]
                pending.zero_()
                save_due = save_due or totals[3] > 0
                if bar is not None:
                    elapsed = time.monotonic() - t0
                    bar.set_postfix(loss=f"{sums[0] / max(sums[2], 1):.4f}",
                                    acc=f"{100 * sums[1] / max(sums[2], 1):.2f}%",
                                    img_s=f"{seen_here * ctx.world_size / max(elapsed, 1e-9):.0f}",
                                    refresh=False)
            optimizer.step()
            if bar is not None:
                bar.update(1)
            if save_due and step < n_batches:
                seconds += time.monotonic() - start_time
                start_time = time.monotonic()
                checkpoint(epoch_done=False)
                last_save = time.monotonic()
        if bar is not None:
            bar.close()
        skipped.update(batches.skipped)
        train_seconds = time.monotonic() - t0
        val = validate(model, val_set, scale=val_scale, batch_size=max(per_rank, 64), ctx=ctx, amp=amp,
                       channels_last=channels_last, workers=config.workers)
        skipped.update(val.pop("skipped"))
        dropped = plateau.step(val["accuracy"])
        seconds += time.monotonic() - start_time
        start_time = time.monotonic()
        record = {"epoch": epoch + 1, "step": global_step, "train_loss": sums[0] / max(sums[2], 1),
                  "train_accuracy": 100 * sums[1] / max(sums[2], 1), "val_loss": val["loss"],
                  "val_accuracy": val["accuracy"], "lr": lrs["fc"], "lr_drops": plateau.drops,
                  "images_per_second": seen_here * ctx.world_size / max(train_seconds, 1e-9),
                  "epoch_seconds": train_seconds, "seconds": seconds}
        history.append(record)
        improved = val["accuracy"] > best["accuracy"]
        if improved:
            best = {"accuracy": val["accuracy"], "epoch": epoch + 1}
            model.info["val_accuracy"] = val["accuracy"]
            model.info["epoch"] = epoch + 1
            if ctx.main:
                save_model(model, out / BEST)
        checkpoint(epoch_done=True)
        last_save = time.monotonic()
        if ctx.main:
            log.write(record)
            if dropped:
                log.write({"event": "lr_drop", "step": global_step, "epoch": epoch + 1,
                           "drops": plateau.drops, "factor": plateau.factor})
            print(summary_line(record, config.epochs, improved, dropped, plateau), flush=True)
            plot_curves(history, out / CURVES)
        epoch, step, sums = epoch + 1, 0, [0.0, 0.0, 0]
    result = TrainResult(out, best["accuracy"], best["epoch"], epoch, seconds, history)
    if config.test:
        result.test = run_test(config, out, ctx, log, global_step)
    if log is not None and skipped:
        log.write({"event": "skipped_files", "count": len(skipped),
                   "files": [{"path": p, "reason": r} for p, r in sorted(skipped.items())]})
        shown = "; ".join(f"{p} ({r})" for p, r in sorted(skipped.items())[:5])
        print(f"skipped {len(skipped)} unreadable file(s) (this process): {shown}"
              f"{' ...' if len(skipped) > 5 else ''}", flush=True)
    if log is not None:
        log.close()
        if history:
            print(f"best val accuracy {best['accuracy']:.2f}% (epoch {best['epoch']}); checkpoints "
                  f"{out / BEST}, {out / LAST}; curves {out / CURVES}; log {out / LOG_FILE}", flush=True)
    return result


def wrap(model: VGG, ctx: distributed.Context, compile_: bool):
    """The module the loop calls: DistributedDataParallel over the trainable parameters when several
    processes run (gradients averaged, Sec. 3.1), optionally compiled; and DDP's ``no_sync``."""
    net: nn.Module = model
    no_sync = None
    if ctx.distributed:
        from torch.nn.parallel import DistributedDataParallel

        net = DistributedDataParallel(model, device_ids=[ctx.device] if ctx.device.type == "cuda" else None)
        no_sync = net.no_sync
    if compile_:
        net = torch.compile(net)
    return net, no_sync


def forward_backward(net: nn.Module, images, labels, micro: int, amp: bool, no_sync) -> torch.Tensor:
    """Gradients of the mean loss over this process's share of the batch, in chunks of ``micro``
    images (gradient accumulation); returns (loss sum, correct, images) as float64."""
    n = len(labels)
    autocast = torch.autocast("cuda", dtype=torch.bfloat16) if amp else nullcontext()
    out = torch.zeros(3, dtype=torch.float64, device=labels.device)
    starts = list(range(0, n, micro))
    for i, s in enumerate(starts):
        x, y = images[s:s + micro], labels[s:s + micro]
        # DDP all-reduces gradients once, after the last chunk.
        sync = no_sync() if no_sync is not None and i < len(starts) - 1 else nullcontext()
        with sync:
            with autocast:
                logits = net(x)
            loss = cross_entropy(logits, y)
            (loss / n).backward()
        out += torch.stack([loss.detach().double(), (logits.argmax(1) == y).sum().double(),
                            torch.tensor(float(len(y)), dtype=torch.float64, device=y.device)])
    return out


def progress_bar(config: TrainConfig, ctx: distributed.Context, epoch: int, step: int, total: int):
    if not (ctx.main and config.progress):
        return None
    from tqdm import tqdm

    return tqdm(total=total, initial=step, desc=f"epoch {epoch + 1}/{config.epochs}", unit="batch",
                leave=False, dynamic_ncols=True, disable=None)


def describe(scale) -> str:
    return str(scale[0]) if scale[0] == scale[1] else f"[{scale[0]},{scale[1]}]"


def summary_line(r: dict, epochs: int, improved: bool, dropped: bool, plateau: Plateau) -> str:
    line = (f"epoch {r['epoch']:>3}/{epochs}  train loss {r['train_loss']:.4f} "
            f"acc {r['train_accuracy']:6.2f}%"
            f"  val loss {r['val_loss']:.4f} acc {r['val_accuracy']:6.2f}%  lr {r['lr']:.1e}"
            f"  {r['images_per_second']:,.0f} img/s  {r['epoch_seconds']:.0f}s")
    if improved:
        line += "  *best*"
    if dropped:
        line += f"  (val plateau: lr / {1 / plateau.drop:g}, drop {plateau.drops}/{plateau.max_drops})"
    return line


def diverged_message(epoch: int, step: int, optimizer, out: Path) -> str:
    lrs = ", ".join(f"{g['name']} {g['lr']:.2e}" for g in optimizer.param_groups)
    saved = (f"the last good checkpoint is {out / LAST}" if (out / LAST).is_file()
             else "no checkpoint had been written yet")
    return (f"the training loss became NaN or infinite at epoch {epoch + 1}, batch {step} (learning rates: "
            f"{lrs}); stopped without saving anything from this point; {saved}. Lower --lr, or use "
            "--batch-norm or --init-from-shallow for deep nets")


def run_test(config: TrainConfig, out: Path, ctx: distributed.Context, log, step: int) -> dict | None:
    """Evaluate the best checkpoint on the test split: dense evaluation over the paper's three test
    scales with flips (Sec. 3.2, 4.2). Folder data without a test/ split is skipped."""
    from . import evaluate
    from .weights import load_model

    if not ctx.main:
        return None
    try:
        test_set = data.open_dataset(config.data, "test", limit=config.limit, seed=config.seed,
                                     val_size=config.val_size, strict=config.strict)
    except FileNotFoundError as e:
        print(f"no test split to evaluate: {e}")
        return None
    if config.classes is not None:
        test_set = select_classes(test_set, config.classes)
    model = load_model(out, device=ctx.device)
    result = evaluate.evaluate([model], test_set, names=[str(out / BEST)], protocol="dense",
                               batch_size=256)
    summary = result.summary()
    record = {"event": "test", "step": step, "protocol": "dense", "scales": summary["scales"],
              "flip": summary["flip"], "top1_accuracy": summary["top1_accuracy"],
              "top5_accuracy": summary["top5_accuracy"], "images": summary["images"],
              "seconds": summary["seconds"]}
    if log is not None:
        log.write(record)
    print(f"test ({summary['images']} images, dense, Q={summary['scales']}, flips): top-1 accuracy "
          f"{summary['top1_accuracy']:.2f}%, top-5 {summary['top5_accuracy']:.2f}%", flush=True)
    return record
