"""Training with the paper's recipe (Sec. 3.1), resumable to the bit, on one process or many (Sec. 3.3).

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

The modules, in the order a run meets them:

- ``config``: :class:`TrainConfig` (the paper's defaults); ``recipes``: TOML recipes, flags, what a
  resume may change;
- ``build``: the run's data (the fixed val split, class subsets) and its net (fresh, pretrained,
  from another run, or net A's transfer);
- ``tasks``: what is learned (loss, targets, metric): :class:`Classification`; ``localization``:
  App. A's box regression (:class:`Localization`: the net from a classifier, boxes that follow the
  crops, the Euclidean loss, localisation accuracy on the centre crop);
- ``schedule``: the plateau schedule and the parameter groups it sets;
- ``start``: a run's state and its set-up; ``loop``: epochs, steps, checkpoints; ``step``: one
  step's forward and backward (DDP, accumulation); ``validation``: the val pass and the final test;
- ``guard``: what a GPU run does differently: the host reads the sums every 10 steps, no
  non-finite update is applied in between, cuDNN autotunes the training steps only;
- ``state``: the state file of exact resume; ``runlog``: log.jsonl, TensorBoard, the epoch lines;
- ``stopping``: Ctrl-C and SIGTERM stop at a step boundary with a checkpoint (exit 130 / 143).
"""

from .build import adapt_input_channels, build_model, load_weights, open_data, select_classes
from .config import TrainConfig, config_keys
from .held_out import run_test
from .localization import Localization
from .loop import train
from .recipes import (
    FINETUNE_DEFAULTS,
    RESUMABLE_CHANGES,
    check_keys,
    load_toml,
    make_config,
    resume_config,
    run_config,
    to_toml,
)
from .runlog import LOG_FILE, RunLog
from .schedule import Plateau, group_lrs, param_groups
from .start import CONFIG_FILE, CURVES, NonFiniteLoss, TrainResult
from .state import STATE, read_state, save_state
from .step import forward_backward, wrap
from .stopping import Stopped, StopRequests, exit_code
from .tasks import CLASSIFICATION, Classification, Task, task_for
from .validation import validate

__all__ = [
    "CLASSIFICATION", "CONFIG_FILE", "CURVES", "Classification", "FINETUNE_DEFAULTS", "LOG_FILE",
    "Localization", "NonFiniteLoss", "Plateau", "RESUMABLE_CHANGES", "RunLog", "STATE", "StopRequests",
    "Stopped", "Task", "TrainConfig",
    "TrainResult", "adapt_input_channels", "build_model", "check_keys", "config_keys", "forward_backward",
    "group_lrs", "load_toml", "load_weights", "make_config", "open_data", "param_groups", "read_state",
    "resume_config", "run_config", "run_test", "save_state", "select_classes", "task_for", "to_toml", "train",
    "exit_code", "validate", "wrap",
]
