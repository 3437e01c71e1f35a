"""Table 2's numbers for any net: parameters, multiply-adds and the layer table (``vgg summary``,
``vgg models``)."""

from __future__ import annotations

from torch import nn

from .vgg import VGG, DenseLinear


def layer_table(model: VGG, size: int | None = None) -> list[dict]:
    """One row per layer at a square input of ``size`` (default crop_size): name, output shape,
    receptive field, parameters and multiply-adds (convolutions and FC layers; BN, ReLU, pooling and
    LRN counted as zero, as the paper and torchvision do)."""
    size = size or model.crop_size
    if size < model.crop_size:
        raise ValueError(f"size {size} is smaller than the crop size {model.crop_size}")
    rows, c, h, w = [], model.in_channels, size, size
    rf, jump = 1, 1
    for name, m in zip(model.tap_names(), list(model.features) + list(model.classifier)):
        params = sum(p.numel() for p in m.parameters())
        macs = 0
        if isinstance(m, nn.Conv2d):
            k = m.kernel_size[0]
            h, w = h + 2 * m.padding[0] - k + 1, w + 2 * m.padding[1] - k + 1
            rf, c = rf + (k - 1) * jump, m.out_channels
            macs = h * w * c * m.in_channels * k * k
        elif isinstance(m, nn.MaxPool2d):
            rf, jump, h, w = rf + jump, jump * 2, h // 2, w // 2
        elif isinstance(m, DenseLinear):
            k = m.kernel_size
            h, w = h - k + 1, w - k + 1
            rf, c = rf + (k - 1) * jump, m.out_features
            macs = h * w * m.in_features * m.out_features
        rows.append({"layer": name, "shape": (c, h, w), "receptive_field": rf, "params": params,
                     "macs": macs})
    return rows


def count_params(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())
