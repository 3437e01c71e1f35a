"""The learning-rate schedule (Sec. 3.1): divided by 10 when validation stops improving, three times
at most; and the parameter groups it applies to (conv layers, fc6/fc7, the last layer)."""

from __future__ import annotations

import math
from dataclasses import dataclass

from ..models import VGG
from .config import TrainConfig


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



def head_parameters(model: VGG) -> set[int]:
    return {id(p) for p in model.classifier[6].parameters()}


def param_groups(model: VGG, decay_bias_norm: bool = True) -> list[dict]:
    """Three groups with their own rates: conv layers, fc6/fc7, and the last FC layer (the "head").
    ``decay_bias_norm=False`` splits each into its weights and its biases and BatchNorm parameters
    (every parameter of one dimension), the latter with no weight decay (same name, same rate)."""
    head = head_parameters(model)
    fc = [p for p in model.classifier.parameters() if id(p) not in head]
    groups = [{"name": "features", "params": list(model.features.parameters())},
              {"name": "fc", "params": fc},
              {"name": "head", "params": list(model.classifier[6].parameters())}]
    if decay_bias_norm:
        return groups
    split = []
    for g in groups:
        split.append({"name": g["name"], "params": [p for p in g["params"] if p.ndim > 1]})
        split.append({"name": g["name"], "params": [p for p in g["params"] if p.ndim <= 1],
                      "weight_decay": 0.0})
    return [g for g in split if g["params"]]


def conv_frozen(config: TrainConfig, epoch: int) -> bool:
    """Whether the conv layers are frozen at ``epoch``: fine-tuning's first ``freeze_epochs``, or the
    whole run with ``finetune = "fc"`` (App. A.1: only the FC layers fine-tuned, as OverFeat)."""
    return epoch < config.freeze_epochs or config.finetune == "fc"


def group_lrs(config: TrainConfig, epoch: int, factor: float) -> dict[str, float]:
    """Each group's learning rate at ``epoch``: base x head multiplier x stage x plateau factor.
    During the frozen stage of fine-tuning the conv layers do not train (rate 0)."""
    frozen = conv_frozen(config, epoch)
    stage = 1.0 if frozen or not config.freeze_epochs else config.unfreeze_lr_scale
    base = config.lr * stage * factor
    return {"features": 0.0 if frozen else base, "fc": base, "head": base * config.head_lr_mult}


