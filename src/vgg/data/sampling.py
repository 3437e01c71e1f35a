"""Per-sample randomness: counter-based, a pure function of (seed, epoch, position in the epoch).

Every random choice of a training sample (its order in the epoch, S, the crop's position, the flip,
the colour shift) comes from here, so one process or many, workers or none, an uninterrupted epoch or
one resumed at batch k, all see the same data.
"""

from __future__ import annotations

import numpy as np
import torch
from torch import Tensor

_MASK64 = (1 << 64) - 1


def _mix64(x):
    """SplitMix64's finaliser: a bijective avalanche on 64-bit integers (numpy uint64 or Python int)."""
    if isinstance(x, int):
        x &= _MASK64
        x = ((x ^ (x >> 30)) * 0xBF58476D1CE4E5B9) & _MASK64
        x = ((x ^ (x >> 27)) * 0x94D049BB133111EB) & _MASK64
        return x ^ (x >> 31)
    with np.errstate(over="ignore"):
        x = (x ^ (x >> np.uint64(30))) * np.uint64(0xBF58476D1CE4E5B9)
        x = (x ^ (x >> np.uint64(27))) * np.uint64(0x94D049BB133111EB)
        return x ^ (x >> np.uint64(31))


def sample_uniform(seed: int, epoch: int, positions, stream: int) -> np.ndarray:
    """Uniform [0, 1) numbers, one per position, a pure function of (seed, epoch, position, stream).

    This counter-based generator is what makes the data independent of how the epoch is split across
    processes, workers or resumed runs: no generator state is carried from one sample to the next.
    """
    key = _mix64(_mix64(_mix64(seed + 0x9E3779B97F4A7C15) ^ (epoch & _MASK64)) ^ stream)
    pos = np.asarray(positions, dtype=np.int64).astype(np.uint64)
    with np.errstate(over="ignore"):
        h = _mix64(_mix64(pos * np.uint64(0x9E3779B97F4A7C15) ^ np.uint64(key)))
    return (h >> np.uint64(11)).astype(np.float64) * (1.0 / (1 << 53))


def sample_normal(seed: int, epoch: int, positions, stream: int) -> np.ndarray:
    """Standard normal numbers per position (Box-Muller over two uniform streams)."""
    u1 = sample_uniform(seed, epoch, positions, 2 * stream + 1000)
    u2 = sample_uniform(seed, epoch, positions, 2 * stream + 1001)
    return np.sqrt(-2.0 * np.log1p(-u1)) * np.cos(2 * np.pi * u2)


def epoch_order(n: int, seed: int, epoch: int) -> Tensor:
    """The epoch's sample order: a permutation of range(n) seeded by (seed, epoch) only."""
    g = torch.Generator().manual_seed(_mix64(_mix64(seed + 1) ^ (epoch + 0x51ED)) & ((1 << 63) - 1))
    return torch.randperm(n, generator=g)
