"""What the loop does differently on a GPU, so that it neither stalls the GPU nor applies a broken
step: how often it meets the host, the device-side guard against non-finite updates, and cuDNN's
autotuning scoped to the training steps.

On the CPU the loop meets the host after every step and checks the loss before applying the step;
nothing here changes that path (a CPU run's numbers do not depend on this module).
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

import torch

# On CUDA the loop meets the host (sums the loss over processes, checks it is finite) every
# CUDA_SYNC_EVERY steps, not every step, so that the GPU is not stalled; on the CPU every step.
CUDA_SYNC_EVERY = 10


def sync_every(device: torch.device) -> int:
    """Every how many steps the loop reads its sums on the host: 1 on the CPU (each step is checked
    before it is applied), :data:`CUDA_SYNC_EVERY` on CUDA (the steps in between run guarded by a
    :class:`StepGuard`)."""
    return CUDA_SYNC_EVERY if device.type == "cuda" else 1


class StepGuard:
    """Keeps non-finite updates out of the net between two host syncs, without a sync of its own.

    After each backward, :meth:`check` sets a flag on the device when any gradient holds a NaN or an
    infinity (the fused check torch's ``GradScaler`` runs); the flag stays set. The optimizer must be
    a fused SGD: it reads the flag on the device (``found_inf``, GradScaler's protocol for fused
    optimizers) and skips its update while it is set. At the next sync the loop reads the flag and
    stops. So the net the run stops with is the net before the first non-finite step, as on the CPU
    (where each step is checked before it is applied), and no step after it was applied either:
    skipping only the bad step would let later steps continue from a state the CPU run never reaches.

    Chosen over a copy of the parameters to restore: no second copy of the net and its momentum,
    no copy per step; the cost is one fused pass over the gradients per step.
    """

    def __init__(self, optimizer: torch.optim.Optimizer, device: torch.device):
        self.flag = torch.zeros(1, device=device)     # 1.0 from the first non-finite step on
        self.flagged = torch.zeros(1, device=device)  # the steps skipped since (that one included)
        self._one = torch.ones(1, device=device)
        for group in optimizer.param_groups:  # also after a resume from a run that was not fused
            group["fused"], group["foreach"] = True, None
        optimizer.found_inf = self.flag

    def check(self, optimizer: torch.optim.Optimizer) -> None:
        """Flag this step (on the device) if any gradient is not finite; count the skipped steps."""
        grads = [p.grad for group in optimizer.param_groups for p in group["params"] if p.grad is not None]
        if grads:
            # Multiplies every gradient by 1 (exact) and sets the flag where one is NaN or infinite.
            torch._amp_foreach_non_finite_check_and_unscale_(grads, self.flag, self._one)
        self.flagged += self.flag

    def first_bad_step(self, step: int) -> int:
        """The step (in the epoch) at which the flag was first set, read at a sync at ``step``
        (``step`` itself when it is not set)."""
        skipped = int(self.flagged.item())
        return step - skipped + 1 if skipped else step


@contextmanager
def cudnn_autotuning(on: bool) -> Iterator[None]:
    """cuDNN's autotuner (``cudnn.benchmark``) while the training steps run: their input shape is
    fixed, so each convolution is tuned once. Outside them (validation, the test) the setting is the
    process's own: dense evaluation meets every image size of the data set (Sec. 3.2), and each new
    size would be tuned again."""
    before = torch.backends.cudnn.benchmark
    torch.backends.cudnn.benchmark = on
    try:
        yield
    finally:
        torch.backends.cudnn.benchmark = before
