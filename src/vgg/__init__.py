"""vgg: the VGG paper (Simonyan & Zisserman, ICLR 2015), complete and fast."""

from .models import (
    CONFIGS,
    VGG,
    Normalization,
    arch_names,
    create_model,
    init_from_shallow,
    init_weights,
    parse_arch,
    prepare_for_inference,
)
from .weights import load_any, load_model, save_model

__all__ = [
    "CONFIGS", "VGG", "Normalization", "arch_names", "create_model", "init_from_shallow",
    "init_weights", "load_any", "load_model", "parse_arch", "prepare_for_inference", "save_model",
]
__version__ = "0.1.0"
