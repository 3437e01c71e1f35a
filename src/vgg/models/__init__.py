"""The paper's networks (Table 1), and nothing of how they are run fast.

- :mod:`.table`: Table 1 as data (``CONFIGS``, ``NAMES``, ``FC_WIDTH``), ``parse_arch``, ``scaled``.
- :mod:`.vgg`: the net (:class:`VGG`, its FC head applied as convolutions, :class:`DenseLinear`),
  :class:`Normalization` (how pixels become input), :func:`create_model`.
- :mod:`.init`: Sec. 3.1's initialisation (``init_weights``) and the transfer from net A
  (``init_from_shallow``).
- :mod:`.summary`: Table 2's numbers: parameters, multiply-adds, the layer table.

The CPU inference engine (fused conv+ReLU, Winograd, packed FC layers) lives in :mod:`vgg.engine`
and wraps a net from outside; this package imports nothing from it.
"""

from .init import conv_layers, init_from_shallow, init_weights
from .summary import count_params, layer_table
from .table import CONFIGS, FC_WIDTH, NAMES, arch_names, parse_arch, scaled
from .vgg import (
    CAFFE_NORMALIZATION,
    TORCHVISION_NORMALIZATION,
    VGG,
    DenseLinear,
    Normalization,
    create_model,
    make_features,
)

__all__ = [
    "CAFFE_NORMALIZATION", "CONFIGS", "FC_WIDTH", "NAMES", "TORCHVISION_NORMALIZATION", "VGG",
    "DenseLinear", "Normalization", "arch_names", "conv_layers", "count_params", "create_model",
    "init_from_shallow", "init_weights", "layer_table", "make_features", "parse_arch", "scaled",
]
