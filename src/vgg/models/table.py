"""Table 1 as data: the six configurations, their usual names, and how a name or a width maps onto
them."""

from __future__ import annotations

# Table 1 as data. An int is a 3x3 conv with that many channels, (C, 1) a 1x1 conv (config C),
# "M" a 2x2 max-pool with stride 2, "LRN" AlexNet's local response normalisation (config A-LRN).
CONFIGS: dict[str, list] = {
    "A": [64, "M", 128, "M", 256, 256, "M", 512, 512, "M", 512, 512, "M"],
    "A-LRN": [64, "LRN", "M", 128, "M", 256, 256, "M", 512, 512, "M", 512, 512, "M"],
    "B": [64, 64, "M", 128, 128, "M", 256, 256, "M", 512, 512, "M", 512, 512, "M"],
    "C": [64, 64, "M", 128, 128, "M", 256, 256, (256, 1), "M", 512, 512, (512, 1), "M",
          512, 512, (512, 1), "M"],
    "D": [64, 64, "M", 128, 128, "M", 256, 256, 256, "M", 512, 512, 512, "M", 512, 512, 512, "M"],
    "E": [64, 64, "M", 128, 128, "M", 256, 256, 256, 256, "M", 512, 512, 512, 512, "M",
          512, 512, 512, 512, "M"],
}

# The names people use for each configuration (torchvision's where it has one).
NAMES: dict[str, str] = {
    "A": "vgg11", "A-LRN": "vgg11_lrn", "B": "vgg13", "C": "vgg16_c", "D": "vgg16", "E": "vgg19",
}

FC_WIDTH = 4096
# AlexNet's LRN (Krizhevsky et al. 2012, Sec. 3.3): b = a / (k + alpha * sum(a^2))^beta over n=5
# channels. PyTorch's LocalResponseNorm divides alpha by n (as Caffe does), so it gets n * alpha.
LRN_SIZE, LRN_ALPHA, LRN_BETA, LRN_K = 5, 1e-4, 0.75, 2.0


def arch_names() -> list[str]:
    """Every accepted architecture name: the usual names, then the paper's letters."""
    usual = [n + bn for n in NAMES.values() for bn in ("", "_bn")]
    return usual + [c + bn for c in CONFIGS for bn in ("", "_bn")]


def parse_arch(arch: str) -> tuple[str, bool]:
    """Map a name (``vgg16_bn``, ``D``, ``a-lrn``, ``vgg11_lrn`` ...) to (config letter, batch_norm)."""
    name = arch.strip().lower().replace("-", "_")
    batch_norm = name.endswith("_bn")
    if batch_norm:
        name = name[: -len("_bn")]
    for config, usual in NAMES.items():
        if name in (usual, config.lower().replace("-", "_"), config.lower().replace("-", "")):
            return config, batch_norm
    raise ValueError(f"unknown architecture {arch!r}; valid names: {', '.join(arch_names())}")


def scaled(channels: int, width: float) -> int:
    """Channels of a layer at a given width multiplier (never below 1)."""
    return max(1, int(round(channels * width)))
