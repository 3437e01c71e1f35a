"""Big activations on memory the process already holds: glibc keeps the buffers a forward frees for
the next forward instead of handing them back to the kernel.

torch's CPU allocator is plain ``malloc``/``free``. glibc serves a block above its mmap threshold
(at most 32 MB by default) with a fresh ``mmap`` and unmaps it on ``free``, so every VGG16 forward at
224 gets its big activations (103 MB each for the first block at batch 8) as new pages, which the
kernel faults in and zeroes on first touch. Measured on a Zen 5 at batch 8 (BENCHMARKS.md,
Inference, "Freed memory kept"): the second conv took 124-185 ms on fresh pages and 67 ms on reused
ones, the whole forward 500-930 ms and 435-506 ms. onnxruntime and OpenVINO avoid this with their
own arenas; Intel's PyTorch CPU recipes preload jemalloc told to keep freed pages
(``MALLOC_CONF=...,dirty_decay_ms:9000000000``). Here two ``mallopt`` settings do the same
for the process: blocks up to ``MMAP_THRESHOLD`` come from the heap, and freed heap memory is given
back only past ``TRIM_THRESHOLD``. The cost is that the process keeps the memory of its largest
forward resident, as an arena does.

Only glibc's heap of the main thread serves such blocks (a thread's own arena maps big blocks as
before), and on other C libraries (musl, macOS) this does nothing. ``VGG_KEEP_FREED_MEMORY=0`` in
the environment leaves glibc's defaults.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import os

# glibc's mallopt parameters (malloc.h).
M_TRIM_THRESHOLD = -1
M_MMAP_THRESHOLD = -3
# Blocks up to 1 GiB from the heap: VGG16's largest activation at 224 is 411 MB at batch 32.
MMAP_THRESHOLD = 1 << 30
# Give freed heap memory back only past 2 GiB - 1 (mallopt takes an int): never, between forwards.
TRIM_THRESHOLD = (1 << 31) - 1

_applied: bool | None = None


def keep_freed_memory() -> bool:
    """Make glibc keep freed big blocks for reuse (once a process); whether it is in effect: False
    where the C library is not glibc, or ``VGG_KEEP_FREED_MEMORY=0`` is set."""
    global _applied
    if _applied is None:
        _applied = os.environ.get("VGG_KEEP_FREED_MEMORY", "1") != "0" and _mallopt()
    return _applied


def _mallopt() -> bool:
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
        mallopt = libc.mallopt
    except (OSError, AttributeError):  # not glibc: musl has no mallopt, macOS's libc neither
        return False
    mallopt.argtypes, mallopt.restype = (ctypes.c_int, ctypes.c_int), ctypes.c_int
    # Trim first: were the mmap threshold raised alone, freed blocks would go back at the top of
    # the heap (glibc's dynamic trim threshold) and still come back as fresh pages.
    return mallopt(M_TRIM_THRESHOLD, TRIM_THRESHOLD) == 1 and mallopt(M_MMAP_THRESHOLD, MMAP_THRESHOLD) == 1
