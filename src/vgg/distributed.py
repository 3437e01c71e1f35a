"""Synchronous data parallelism (Sec. 3.3: "each GPU processes a part of the batch, gradients are
averaged"), as torchrun sets it up: explicit and small.

``torchrun --nproc_per_node=N -m vgg train ...`` needs no extra flag: :func:`setup` reads RANK,
WORLD_SIZE and LOCAL_RANK from the environment, joins the process group (NCCL on CUDA, gloo on CPU)
and picks this process's device. Side effects (files, progress bars, prints) happen in the
process whose :attr:`Context.main` is true.
"""

from __future__ import annotations

import functools
import os
from contextlib import AbstractContextManager, nullcontext
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path

import torch
import torch.distributed as dist


@dataclass(frozen=True)
class Context:
    """Where this process stands: its rank among ``world_size`` processes and its device."""

    rank: int = 0
    world_size: int = 1
    local_rank: int = 0
    device: torch.device = torch.device("cpu")
    owns_group: bool = False  # this setup() joined the process group, so its cleanup() leaves it

    @property
    def distributed(self) -> bool:
        return self.world_size > 1

    @property
    def main(self) -> bool:
        return self.rank == 0


def launched_by_torchrun() -> bool:
    """True when the environment describes more than one process (torchrun, or a launcher like it)."""
    return int(os.environ.get("WORLD_SIZE", "1")) > 1


def resolve_device(device: str | None = "auto", local_rank: int = 0) -> torch.device:
    """The device a command runs on. ``auto`` (or None): CUDA when available, else the CPU; plain
    ``cuda`` takes this process's local GPU (``local_rank``); anything else torch names (``cpu``,
    ``cuda:1``, ``mps``) as is. A name torch does not know, or CUDA asked for without CUDA, is a
    ValueError that names it."""
    if device in (None, "", "auto"):
        device = "cuda" if torch.cuda.is_available() else "cpu"
    try:
        dev = torch.device(device)
    except (RuntimeError, TypeError) as e:
        raise ValueError(f"bad device {device!r}: {e}; use auto, cpu, cuda or cuda:N") from None
    if dev.type == "cuda":
        if not torch.cuda.is_available():
            raise ValueError(f"device {device!r} asked for but CUDA is not available")
        if dev.index is None:
            return torch.device("cuda", local_rank % max(1, torch.cuda.device_count()))
    return dev


def setup(device: str = "auto", timeout: timedelta | None = None) -> Context:
    """Join the process group when launched by torchrun (unless this process is in one already, as
    under ``vgg reproduce``, whose training steps share its group); return this process's
    :class:`Context`. ``timeout``: how long a collective waits for the other processes (torch's
    default, 30 min for gloo, 10 min for NCCL, when None)."""
    if not launched_by_torchrun():
        return Context(device=resolve_device(device))
    rank, world = int(os.environ["RANK"]), int(os.environ["WORLD_SIZE"])
    local_rank = int(os.environ.get("LOCAL_RANK", rank))
    dev = resolve_device(device, local_rank)
    if dev.type == "cuda":
        check_one_gpu_each(device, local_rank, int(os.environ.get("LOCAL_WORLD_SIZE", world)))
        torch.cuda.set_device(dev)
    owns = not dist.is_initialized()
    if owns:
        dist.init_process_group(backend="nccl" if dev.type == "cuda" else "gloo",
                                device_id=dev if dev.type == "cuda" else None,
                                **({"timeout": timeout} if timeout is not None else {}))
    return Context(rank, world, local_rank, dev, owns_group=owns)


def check_one_gpu_each(device: str | None, local_rank: int, local_world_size: int) -> None:
    """NCCL needs a GPU of its own for each process on a machine: say so, naming the counts, before
    two processes share one (NCCL's own error comes later and says less)."""
    gpus = torch.cuda.device_count()
    if local_world_size > gpus:
        raise ValueError(f"{local_world_size} processes on this machine (local rank {local_rank}) but "
                         f"{gpus} CUDA device(s): NCCL needs one GPU per process; start torchrun "
                         f"with --nproc_per_node={gpus} or fewer, or train on --device cpu (gloo)")
    if local_world_size > 1 and device not in (None, "", "auto") and torch.device(device).index is not None:
        raise ValueError(f"--device {device} puts all {local_world_size} processes of this machine on "
                         "one GPU, which NCCL refuses; use --device cuda (each process takes the GPU "
                         "of its local rank)")


# Where ``amp`` (bf16 autocast) takes effect in evaluation (and in validation inside a run): CUDA
# only. On the CPU the inference engine runs float32 (``vgg evaluate --bf16`` opts in), so a CPU
# evaluation's numbers do not depend on ``amp``. Tests add "cpu" to run the autocast path of the
# training loop and of the evaluation on the CPU.
AMP_DEVICES = ("cuda",)


def autocast(device: torch.device, amp: bool) -> AbstractContextManager:
    """bfloat16 autocast on ``device`` when ``amp`` and its kind is in :data:`AMP_DEVICES`; otherwise
    a context that changes nothing."""
    if amp and device.type in AMP_DEVICES:
        return torch.autocast(device.type, dtype=torch.bfloat16)
    return nullcontext()


@functools.cache
def machine_cpuinfo() -> str:
    """``/proc/cpuinfo``, read once a process ("" where there is none)."""
    try:
        return Path("/proc/cpuinfo").read_text()
    except OSError:
        return ""


def cpu_name() -> str:
    """The CPU's model name and x86 family from ``/proc/cpuinfo`` ("" where it gives none): virtual
    machines often say only "AMD EPYC", and the family tells Zen 4 (25) from Zen 5 (26)."""
    fields: dict[str, str] = {}
    for line in machine_cpuinfo().splitlines():
        if not line.strip():
            break  # the first processor's block
        key, _, value = line.partition(":")
        fields.setdefault(key.strip(), value.strip())
    name, family = fields.get("model name", ""), fields.get("cpu family")
    return f"{name} (family {family})" if name and family else name


def cpu_has_native_bf16(cpuinfo: str | None = None) -> bool:
    """Whether this CPU multiplies bfloat16 in hardware: AVX512-BF16 or AMX on x86 (Zen 4 and later,
    Cooper Lake, Sapphire Rapids), BF16 on Arm (the flags of ``/proc/cpuinfo``, or of ``cpuinfo``).
    Elsewhere oneDNN emulates bf16, slower than float32, so autocast must not be turned on there.
    ``VGG_CPU_BF16=0`` treats this CPU as one without (the test suite sets it, so that its training
    runs take the same float32 path on every machine)."""
    if cpuinfo is None:
        if os.environ.get("VGG_CPU_BF16") == "0":
            return False
        cpuinfo = machine_cpuinfo()
    return bool({"avx512_bf16", "amx_bf16", "bf16"} & cpu_flags(cpuinfo))


def cpu_flags(cpuinfo: str | None = None) -> set[str]:
    """The CPU's feature flags (x86 ``flags``, Arm ``Features``) from ``/proc/cpuinfo`` or ``cpuinfo``."""
    cpuinfo = machine_cpuinfo() if cpuinfo is None else cpuinfo
    return {w for line in cpuinfo.splitlines() if line.partition(":")[0].strip() in ("flags", "Features")
            for w in line.partition(":")[2].split()}


def training_amp(device: torch.device, amp: bool) -> bool:
    """Whether a run's training steps take bfloat16 autocast: ``amp`` (``--amp``, the default) on
    the :data:`AMP_DEVICES` and on a CPU with native bf16 arithmetic (:func:`cpu_has_native_bf16`).
    On such a CPU it makes the steps 1.4-1.7x faster at the same accuracy (README, Performance;
    BENCHMARKS.md); the weights, the optimizer, the loss and the validation stay float32."""
    return amp and (device.type in AMP_DEVICES or (device.type == "cpu" and cpu_has_native_bf16()))


def cleanup(ctx: Context) -> None:
    """Leave the process group if ``ctx``'s :func:`setup` joined it (a group set up by the caller of
    ``vgg.training.train`` outlives the run)."""
    if ctx.owns_group and dist.is_initialized():
        dist.destroy_process_group()


def broadcast_object(value):
    """Rank 0's ``value`` in every process (``value`` itself in a single process): decisions read from
    the file system (which steps finished, which resume) are made once, so that every process runs
    the same collectives."""
    if not dist.is_initialized():
        return value
    box = [value]
    dist.broadcast_object_list(box, src=0)
    return box[0]


def all_reduce_sum(tensor: torch.Tensor) -> torch.Tensor:
    """Sum a tensor over all processes in place (a no-op in a single process)."""
    if dist.is_initialized():
        dist.all_reduce(tensor, op=dist.ReduceOp.SUM)
    return tensor


def all_gather_objects(obj: object) -> list:
    """Every process's ``obj``, in rank order (``[obj]`` in a single process)."""
    if not dist.is_initialized():
        return [obj]
    out: list = [None] * dist.get_world_size()
    dist.all_gather_object(out, obj)
    return out


def barrier() -> None:
    if dist.is_initialized():
        dist.barrier()
