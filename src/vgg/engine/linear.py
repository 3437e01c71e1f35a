"""The packed FC layers: a DenseLinear whose CPU inference matmul runs on a weight reordered once
into oneDNN's blocked layout."""

from __future__ import annotations

import torch
from torch import Tensor

from ..models import DenseLinear
from .guards import LINEAR_OPS, cpu_inference_call, has_ops, tensors_key


class PackedLinear(DenseLinear):
    """A :class:`~vgg.models.DenseLinear` whose CPU inference matmul (the crop-size case) runs with
    its weight reordered once into oneDNN's blocked layout, much faster than ``F.linear`` at small
    batches (BENCHMARKS.md). :meth:`of` makes one that shares the weight and bias Parameters of a
    layer. Costs one more copy of the weight in memory (411 MB for VGG16's fc6), a plain attribute
    rebuilt when the weight changes and left out of copies and pickles. ``usable`` as
    :class:`~vgg.engine.fused.FusedFeatures`; every other call is DenseLinear's own forward.
    ``dtype`` bfloat16: the packed weight and the matmul in bf16 (float32 accumulation), the output
    float32."""

    def __init__(self, in_channels: int, out_features: int, kernel_size: int = 1):
        super().__init__(in_channels, out_features, kernel_size)
        self._key: tuple | None = None
        self._packed: Tensor | None = None
        self._bias: Tensor | None = None
        self.dtype = torch.float32

    @classmethod
    def of(cls, layer: DenseLinear, dtype: torch.dtype = torch.float32) -> PackedLinear:
        """A PackedLinear holding ``layer``'s very weight and bias, computing in ``dtype``."""
        with torch.device("meta"):  # no memory for weights that are replaced at once
            packed = cls(layer.in_channels, layer.out_features, layer.kernel_size)
        packed.weight, packed.bias = layer.weight, layer.bias
        packed.training = layer.training
        packed.dtype = dtype
        return packed

    def __getstate__(self):
        return {**super().__getstate__(), "_key": None, "_packed": None, "_bias": None}

    @staticmethod
    def available() -> bool:
        return has_ops(LINEAR_OPS)

    def usable(self, x: Tensor) -> bool:
        return (cpu_inference_call(x, self) and self.weight.dtype == torch.float32
                and self.available())

    def forward(self, x: Tensor) -> Tensor:
        n, _, h, w = x.shape
        if h == self.kernel_size and w == self.kernel_size:
            flat = x.flatten(1)
            if self.usable(flat):
                return self.packed_matmul(flat).view(n, -1, 1, 1)
        return super().forward(x)

    def packed_matmul(self, x: Tensor) -> Tensor:
        """``F.linear(x, weight, bias)`` on the packed weight (the checks of :meth:`usable` are the
        caller's)."""
        w, b = self.weight, self.bias
        key = (self.dtype, *tensors_key((w, b)))
        if key != self._key:
            self._packed = torch.ops.mkldnn._reorder_linear_weight(w.detach().to(self.dtype), x.shape[0])
            self._bias = b.detach().to(self.dtype)
            self._key = key
        x = x.to(self.dtype).contiguous()
        return torch.ops.mkldnn._linear_pointwise(x, self._packed, self._bias, "none", [], "").float()
