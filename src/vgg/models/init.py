"""Initialisation (Sec. 3.1): random init of a net, and the transfer from a trained net A.

The nets are :class:`~vgg.models.VGG` (annotated as ``nn.Module``: :mod:`.vgg` imports this module
for :func:`~vgg.models.create_model`, so this one does not import it back).
"""

from __future__ import annotations

import torch
from torch import nn


def init_weights(model: nn.Module, init: str = "normal", std: float = 0.01) -> None:
    """Initialise a model in place (Sec. 3.1).

    ``normal``: weights ~ N(0, std^2), biases zero. The paper says "normal distribution with zero mean
    and 10^-2 variance", literally std 0.1; its released Caffe nets and torchvision's FC layers use
    std 0.01, which is the default here (std=0.1 is the literal reading).
    ``glorot``: Glorot & Bengio's uniform initialisation, which the paper found to work without
    pre-training. BatchNorm layers start at weight 1, bias 0 either way.
    """
    if init not in ("normal", "glorot"):
        raise ValueError(f"unknown init {init!r}; valid: normal, glorot")
    if std <= 0:
        raise ValueError(f"init std must be positive, got {std}")
    for m in model.modules():
        if isinstance(m, (nn.Conv2d, nn.Linear)):
            if init == "normal":
                nn.init.normal_(m.weight, 0.0, std)
            else:
                # An FC layer keeps its Linear fans (in, out) even though it runs as a conv.
                nn.init.xavier_uniform_(m.weight)
            nn.init.zeros_(m.bias)
        elif isinstance(m, nn.BatchNorm2d):
            nn.init.ones_(m.weight)
            nn.init.zeros_(m.bias)


def conv_layers(model: nn.Module) -> list[int]:
    """Indices in ``model.features`` of the conv layers, in order."""
    return [i for i, m in enumerate(model.features) if isinstance(m, nn.Conv2d)]


@torch.no_grad()
def init_from_shallow(model: nn.Module, trained_a: nn.Module) -> list[str]:
    """The paper's transfer from net A (Sec. 3.1): copy the first four conv layers and the three FC
    layers of a trained shallow net into ``model``; the layers in between keep their random init.
    Each conv goes to the layer of the same name (conv1_1, conv2_1, conv3_1, conv3_2).

    When both nets have BatchNorm, the BN layer after each copied conv is copied with it. Returns
    the names of the copied tensors. A shape mismatch raises an error naming the layer and both shapes.
    """
    # A's first four convs are conv1_1, conv2_1, conv3_1, conv3_2; they go to the layers of the same
    # name in the deeper net, the only reading under which the shapes agree (conv1_2 of D is 64->64).
    src_convs = conv_layers(trained_a)[:4]
    if len(src_convs) < 4:
        raise ValueError("init_from_shallow needs a source net with at least four conv layers")
    pairs = []  # (target prefix, source prefix)
    for s in src_convs:
        name = trained_a.feature_names[s]
        if name not in model.feature_names:
            raise ValueError(f"init_from_shallow: {model.arch} has no layer {name} to take "
                             f"features.{s} of the source")
        d = model.feature_names.index(name)
        pairs.append((f"features.{d}", f"features.{s}"))
        src_bn = isinstance(trained_a.features[s + 1], nn.BatchNorm2d)
        dst_bn = isinstance(model.features[d + 1], nn.BatchNorm2d)
        if src_bn and dst_bn:
            pairs.append((f"features.{d + 1}", f"features.{s + 1}"))
    pairs += [(f"classifier.{i}", f"classifier.{i}") for i in (0, 3, 6)]
    src, dst = trained_a.state_dict(), model.state_dict()
    copies = []
    for d_prefix, s_prefix in pairs:
        for key in [k for k in dst if k.startswith(d_prefix + ".")]:
            s_key = s_prefix + key[len(d_prefix):]
            if s_key not in src:
                raise ValueError(f"init_from_shallow: source net has no {s_key} for {key}")
            if src[s_key].shape != dst[key].shape:
                raise ValueError(f"init_from_shallow: layer {key} has shape {tuple(dst[key].shape)} "
                                 f"but the source's {s_key} has {tuple(src[s_key].shape)}")
            copies.append((key, src[s_key]))
    for key, value in copies:
        dst[key].copy_(value)
    return [key for key, _ in copies]
