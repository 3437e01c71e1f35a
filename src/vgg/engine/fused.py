"""The fused feature runner: every conv of a feature stack (its BatchNorm folded in) and its ReLU as
one oneDNN primitive with a prepacked weight, the big 3x3 convs as Winograd."""

from __future__ import annotations

from collections import OrderedDict

import torch
from torch import Tensor, nn

from .guards import CONV_OPS, cpu_inference_call, has_ops, tensors_key
from .winograd import Winograd3x3, winograd_pays


class FusedFeatures(nn.Sequential):
    """A feature stack whose CPU inference calls run fused: every conv (with the BatchNorm after it
    folded in) and its ReLU run as one oneDNN primitive, the ReLU a post-op (no extra pass over the
    activations), the weight reordered once into oneDNN's blocked layout instead of on every call.
    The arithmetic is the convolution's own, except in the big convs of many channels, which run as
    Winograd F(4x4, 3x3) (:class:`~vgg.engine.winograd.Winograd3x3`, equal to float32 rounding,
    ~1e-5 relative). Max-pooling and LRN run as their modules (a hand-written pooling was measured
    slower, BENCHMARKS.md).

    It is an ``nn.Sequential`` of the very layers of the stack it replaces (:meth:`of`): the same
    parameters, the same state-dict keys. ``usable(x)`` says when a call runs fused: float32 on the
    CPU, no autograd, eval mode, no autocast (:func:`~vgg.engine.guards.cpu_inference_call`);
    every other call (a training step) is ``nn.Sequential``'s own forward. The packed weights are
    plain attributes, rebuilt when a weight changes (``load_state_dict``, an optimizer step), so the
    runner never computes with stale weights; copies and pickles leave them out.

    ``dtype`` bfloat16 (opt-in, ``vgg evaluate --bf16``) runs every conv and pool in bf16 (oneDNN's
    bf16 kernels accumulate in float32 and round each layer's output to bf16; the big convs of 256
    channels and more as Winograd F(2x2, 3x3) in bf16, whose larger tile would lose too much) and
    returns float32 features: 1.6-1.9x the float32 engine's speed on CPUs with native bf16, logits
    within ~2% of the float32 ones (BENCHMARKS.md, bf16 inference).
    """

    def __init__(self, *args):
        super().__init__(*args)
        self._key: tuple | None = None
        self._plan: list = []
        self.dtype = torch.float32

    @classmethod
    def of(cls, features: nn.Sequential, dtype: torch.dtype = torch.float32) -> FusedFeatures:
        """The stack ``features`` as a FusedFeatures holding the same layer objects, computing in
        ``dtype`` (float32 or bfloat16)."""
        fused = cls(OrderedDict(features.named_children()))
        fused.training = features.training
        fused.dtype = dtype
        return fused

    def __getstate__(self):
        return {**super().__getstate__(), "_key": None, "_plan": []}

    @staticmethod
    def available() -> bool:
        return has_ops(CONV_OPS)

    def usable(self, images: Tensor) -> bool:
        return cpu_inference_call(images, self) and self.available()

    def forward(self, images: Tensor) -> Tensor:
        if self.usable(images):
            return self.run_fused(images)
        return super().forward(images)

    def _state_key(self) -> tuple:
        return (self.dtype, *tensors_key(t for m in self for t in (*m.parameters(), *m.buffers())))

    def _pack(self, images: Tensor) -> None:
        layers, plan, i = list(self), [], 0
        while i < len(layers):
            m = layers[i]
            if not isinstance(m, nn.Conv2d):
                plan.append(m)
                i += 1
                continue
            w, b = m.weight.detach().float(), m.bias.detach().float()
            j = i + 1
            if j < len(layers) and isinstance(layers[j], nn.BatchNorm2d):
                bn = layers[j]  # eval-mode BatchNorm is an affine map: fold it into the conv
                scale = bn.weight.detach() / torch.sqrt(bn.running_var + bn.eps)
                w = w * scale.view(-1, 1, 1, 1)
                b = (b - bn.running_mean) * scale + bn.bias.detach()
                j += 1
            relu = j < len(layers) and isinstance(layers[j], nn.ReLU)
            i = j + 1 if relu else j
            plan.append(FusedConv(m, w, b, relu, (images.shape[0], m.in_channels, *images.shape[-2:]),
                                  self.dtype))
        self._plan = plan

    def run_fused(self, images: Tensor) -> Tensor:
        """The fused runner itself (the checks of :meth:`usable` are the caller's)."""
        key = self._state_key()
        if key != self._key:
            self._pack(images)
            self._key = key
        x = images.to(self.dtype)
        for step in self._plan:
            x = step(x)
        return x.float()


class FusedConv:
    """One conv (BatchNorm folded in) and its ReLU as one oneDNN primitive with a prepacked weight;
    a 3x3 conv of ``WINOGRAD_MIN_CHANNELS`` or more input channels (in bf16
    ``WINOGRAD_MIN_CHANNELS_BF16``) also gets a :class:`Winograd3x3` runner, taken for the calls of at
    least ``WINOGRAD_MIN_MACS`` multiply-adds on maps of at least ``WINOGRAD_MIN_SIDE`` pixels a side
    (:mod:`vgg.engine.winograd`)."""

    def __init__(self, conv: nn.Conv2d, weight: Tensor, bias: Tensor, relu: bool, input_hint: tuple,
                 dtype: torch.dtype = torch.float32):
        self.args = (list(conv.padding), list(conv.stride), list(conv.dilation), conv.groups,
                     "relu" if relu else "none")
        self.weight = torch._C._nn.mkldnn_reorder_conv2d_weight(
            weight.to(dtype).contiguous().to_mkldnn(), *self.args[:4], list(input_hint))
        self.bias = bias.to(dtype).contiguous()
        self.weight_shape = tuple(weight.shape[:2])
        # The Winograd weights (4x the conv's: 36 positions instead of 9; in bf16, F(2x2)'s 16) are
        # built on first use, so nets that only ever see small maps never hold them.
        self.dense_weight = weight if Winograd3x3.applies(conv, dtype) else None
        self.dtype, self.relu = dtype, relu
        self.winograd: Winograd3x3 | None = None

    def takes_winograd(self, shape: tuple) -> bool:
        """Whether a call on input of ``shape`` (N, C, H, W) runs as Winograd."""
        return self.dense_weight is not None and winograd_pays(shape, self.weight_shape)

    def __call__(self, x: Tensor) -> Tensor:
        if self.takes_winograd(x.shape):
            if self.winograd is None:
                self.winograd = Winograd3x3(self.dense_weight, self.bias, self.relu, x.shape[0] * 64,
                                            dtype=self.dtype)
            return self.winograd(x)
        return torch.ops.mkldnn._convolution_pointwise(x, self.weight, self.bias, *self.args, [], "")
