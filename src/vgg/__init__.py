"""vgg: the VGG paper (Simonyan & Zisserman, ICLR 2015), complete and fast.

The package, one sub-package or module per part of the paper (README, "The package"):
``models`` (Table 1 and 2, Sec. 3.1 init), ``engine`` (the CPU inference engine), ``data`` (Sec. 3.1
augmentation, data sets), ``training`` (Sec. 3.1, 3.3), ``evaluation`` (Sec. 3.2, 4), ``weights``
(our checkpoints, foreign and published weights), ``features`` (Appendix B), ``export``, ``report``,
``files``, ``distributed``, ``cli``.
"""

import os

# Transparent huge pages for torch's big CPU buffers (its own switch, read once, at torch's first
# allocation; so set before torch is imported, and only where the user has not set it). Without it
# every big activation comes from a fresh mmap whose 4 kB pages are faulted in and zeroed on each
# call: 25,000 faults for VGG16's first 103 MB activation at batch 8, ~560 with it (BENCHMARKS.md,
# Inference, "Page faults"). THP_MEM_ALLOC_ENABLE=0 turns it off; importing torch before vgg leaves
# torch's default.
os.environ.setdefault("THP_MEM_ALLOC_ENABLE", "1")

from .data import open_dataset
from .engine import prepare_for_inference
from .evaluation import evaluate, predict
from .models import (
    CONFIGS,
    VGG,
    Normalization,
    arch_names,
    create_model,
    init_from_shallow,
    init_weights,
    parse_arch,
)
from .training import TrainConfig, train
from .weights import load_any, load_model, save_model

__all__ = [
    "CONFIGS", "Normalization", "TrainConfig", "VGG", "arch_names", "create_model", "evaluate",
    "init_from_shallow", "init_weights", "load_any", "load_model", "open_dataset", "parse_arch",
    "predict", "prepare_for_inference", "save_model", "train",
]
__version__ = "0.1.0"
