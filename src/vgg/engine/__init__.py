"""The CPU inference engine: it wraps a :class:`~vgg.models.VGG` from outside, and the net knows
nothing of it.

- :mod:`.guards`: which private torch ops the engine calls and whether this torch has them; which
  calls it may take (:func:`cpu_inference_call`); when packed weights are stale (:func:`tensors_key`).
- :mod:`.fused`: :class:`FusedFeatures`, the feature stack with every conv (BatchNorm folded in) and
  its ReLU as one prepacked oneDNN primitive (:class:`FusedConv`).
- :mod:`.winograd`: :class:`Winograd3x3`, F(4x4, 3x3) for the big 3x3 convs, and when it pays.
- :mod:`.linear`: :class:`PackedLinear`, the FC layers' matmul on a prepacked weight.
- :mod:`.memory`: :func:`keep_freed_memory`, big activations on memory the process already holds.

:func:`attach_cpu_inference` swaps a net's feature stack and FC layers for these (the same parameter
objects, the same state-dict keys); they take the inference calls they can and run the plain modules
for every other call, so training steps are untouched. Measured speed-ups: BENCHMARKS.md.
"""

from __future__ import annotations

import torch

from .. import distributed
from ..models import VGG, DenseLinear
from .fused import FusedConv, FusedFeatures
from .guards import cpu_inference_call, tensors_key, warn_if_missing
from .linear import PackedLinear
from .memory import keep_freed_memory
from .winograd import Winograd3x3

__all__ = [
    "FusedConv", "FusedFeatures", "PackedLinear", "Winograd3x3", "attach_cpu_inference",
    "cpu_inference_call", "keep_freed_memory", "prepare_for_inference", "tensors_key",
]


def prepare_for_inference(model: VGG, device: str | torch.device = "cpu", bf16: bool = False) -> VGG:
    """The model as every inference path runs it: eval mode, on ``device``, channels_last, and on
    the CPU the engine (:func:`attach_cpu_inference`; ``bf16``: in bfloat16, opt-in, for CPUs with
    native bf16).

    channels_last lets oneDNN (CPU) and cuDNN (GPU) pick their fastest convolutions; on the CPU the
    fused conv+ReLU with prepacked weights, Winograd for the big convs of 128 channels and more
    (:class:`Winograd3x3`) and the prepacked FC layers (:class:`PackedLinear`) each add to it
    (BENCHMARKS.md, Inference). The input needs no conversion: a channels_last weight makes the
    convolution produce channels_last output.
    """
    model = model.eval().to(device, memory_format=torch.channels_last)
    if torch.device(device).type == "cpu":
        attach_cpu_inference(model, bf16)
    return model


def attach_cpu_inference(model: VGG, bf16: bool = False) -> VGG:
    """Give a CPU model the fused feature runner and the prepacked FC layers for its inference calls
    (eval mode, no autograd, float32); training steps keep running the modules. A training loop may
    call this once (before building its optimizer or after: the parameters stay the same objects) so
    that its validation passes take the fast path too.

    ``model.features`` becomes a :class:`FusedFeatures` and each :class:`~vgg.models.DenseLinear` of
    ``model.classifier`` a :class:`PackedLinear`, holding the same layers and Parameters; attaching
    again changes nothing but the precision. Where this torch lacks the oneDNN ops the engine calls,
    it warns once and leaves the modules as they are.

    ``bf16``: the convs, pools and crop-size FC layers of the inference calls compute in bfloat16
    (float32 in and out; :class:`FusedFeatures`), about twice as fast where the CPU has native bf16
    (AVX512-BF16, AMX) and slower than float32 where it has not, hence opt-in and refused there.

    It also makes the process keep the memory its forwards free for the next ones
    (:func:`~vgg.engine.memory.keep_freed_memory`: no fresh pages to fault in per activation; off with
    ``VGG_KEEP_FREED_MEMORY=0``)."""
    dtype = torch.bfloat16 if bf16 else torch.float32
    if bf16 and not distributed.cpu_has_native_bf16():
        raise ValueError("bf16 inference needs a CPU with native bfloat16 (AVX512-BF16 or AMX); this "
                         "one would emulate it, slower than float32: leave out --bf16")
    warn_if_missing()
    keep_freed_memory()
    if FusedFeatures.available():
        if not isinstance(model.features, FusedFeatures):
            model.features = FusedFeatures.of(model.features)
        model.features.dtype = dtype
    if PackedLinear.available():
        for i, layer in enumerate(list(model.classifier)):
            if isinstance(layer, DenseLinear):
                if not isinstance(layer, PackedLinear):
                    model.classifier[i] = layer = PackedLinear.of(layer)
                layer.dtype = dtype
    return model
