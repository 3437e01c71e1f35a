"""When the engine may run: this torch has the oneDNN ops it calls, the call is an inference call,
and the packed weights are still those of the parameters.

The engine runs on private torch ops (``torch.ops.mkldnn.*``, ``torch._C._nn.mkldnn_*``) that a torch
release may rename or drop. They are named here; where one is missing the engine warns once and the
net keeps running its plain modules.
"""

from __future__ import annotations

import warnings

import torch
from torch import Tensor, nn

# The private ops each runner calls, as attribute paths under ``torch``.
CONV_OPS = ("ops.mkldnn._convolution_pointwise", "_C._nn.mkldnn_reorder_conv2d_weight")
LINEAR_OPS = ("ops.mkldnn._linear_pointwise", "ops.mkldnn._reorder_linear_weight")

_warned = False


def op_exists(path: str) -> bool:
    """Whether ``torch.<path>`` exists in this torch."""
    obj = torch
    for name in path.split("."):
        try:
            obj = getattr(obj, name)
        except (AttributeError, RuntimeError):
            return False
    return True


def onednn_enabled() -> bool:
    """Whether torch was built with oneDNN and it is switched on."""
    return torch.backends.mkldnn.is_available() and torch.backends.mkldnn.enabled


def missing_ops(ops: tuple[str, ...] = CONV_OPS + LINEAR_OPS) -> list[str]:
    return [f"torch.{op}" for op in ops if not op_exists(op)]


def has_ops(ops: tuple[str, ...]) -> bool:
    """Whether a runner calling ``ops`` can run here: oneDNN on, and every op present."""
    return onednn_enabled() and not missing_ops(ops)


def warn_if_missing() -> None:
    """Warn (once a process) when oneDNN is on but this torch lacks some op the engine calls."""
    global _warned
    missing = missing_ops() if onednn_enabled() else []
    if missing and not _warned:
        _warned = True
        warnings.warn(f"torch {torch.__version__} has no {', '.join(missing)}: the CPU inference "
                      "engine stays off where it needs them, and the net runs its plain modules",
                      RuntimeWarning, stacklevel=3)


def tensors_key(tensors) -> tuple:
    """What identifies the current values of some tensors, so that packed copies know when to rebuild:
    each tensor's identity, storage and in-place version. Inference tensors (made under
    inference_mode) keep no version counter; their storage is still watched, and they cannot be
    changed in place outside inference_mode."""
    return tuple((id(t), -1 if t.is_inference() else t._version, t.data_ptr()) for t in tensors)


def cpu_inference_call(x: Tensor, module: nn.Module) -> bool:
    """Whether a call of ``module`` on ``x`` is one the packed CPU runners may take: float32 on the
    CPU, no autograd, eval mode, no autocast, not traced or compiled (a graph holds the plain ops);
    otherwise the modules run as usual."""
    return (x.device.type == "cpu" and x.dtype == torch.float32 and not torch.is_grad_enabled()
            and not module.training and not torch.is_autocast_enabled("cpu")
            and not torch.jit.is_tracing() and not torch.compiler.is_compiling())
