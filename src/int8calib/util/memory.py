"""Process memory and thread settings: malloc arenas, per-core step sizes, collection threads.

glibc gives each thread that allocates its own malloc arena (up to 8 per core). The decoder
thread, the histogram threads and ONNX Runtime's threads then each keep freed memory in
their own arena, and peak RSS creeps up with the length of the run: measured on
EfficientNet-Lite0, 100 vs 500 images gave 0.95 vs 1.06 GB peak RSS (+12 %); with two
arenas 0.93 vs 0.99 GB (+6 %), at no measurable cost in speed.
"""

from __future__ import annotations

import ctypes
import functools
import os
import sys

# Activation bytes one collection step may hold (--max-memory), per pair of cores. Measured on
# EfficientNet-Lite0 (28 MB of activations per image): on the 2-core VM 256 MiB runs 3 images per
# step, as fast as 1 GiB's 11 within noise, at 0.6 instead of 1.1 GB peak RSS, flat over the run;
# on 16 cores 3-image steps leave most cores idle (entropy2 9.6 s against 4.7 s with 2 GiB's 24,
# plain inference 1.6 s), so the default grows with the cores (docs/performance.md).
DEFAULT_MAX_MEMORY = 256 << 20
# ...up to this much for models of many small tensors, whose per-tensor Python cost per step
# calls for steps of more samples (collection.steps._StepSizer).
DEFAULT_MAX_MEMORY_SMALL_TENSORS = 1 << 30


def cores() -> int:
    """The cores this process may run on."""
    try:
        return len(os.sched_getaffinity(0))
    except (AttributeError, OSError):  # not Linux
        return os.cpu_count() or 1


def per_core_pairs(amount: int) -> int:
    """``amount`` (bytes or samples per ONNX Runtime run, sized for two cores) scaled to this
    machine: ONNX Runtime splits each operator over its threads, and a few samples per run leave
    the cores of a larger machine idle."""
    return amount * max(1, cores() // 2)


def collection_threads() -> tuple[int, int]:
    """(ONNX Runtime's intra-op threads, histogram threads) for a collection pass on this machine
    (0: ONNX Runtime's own default, every core). Up to 4 cores both get every core: ONNX Runtime on
    one thread and the histograms on the other was no faster on 2 (docs/performance.md). On more,
    ONNX Runtime takes three cores in four and the histograms half: on 16 cores mse took 2.42 s
    against 3.21 s with every core to each (entropy2 3.3 against 3.8 s)."""
    n = cores()
    return (0, n) if n <= 4 else (n - n // 4, n // 2)


def default_max_memory() -> int:
    """--max-memory's default on this machine: ``DEFAULT_MAX_MEMORY`` per pair of cores."""
    return per_core_pairs(DEFAULT_MAX_MEMORY)


_M_ARENA_MAX = -8  # mallopt parameter number in glibc's malloc.h


@functools.lru_cache(maxsize=1)
def limit_malloc_arenas(arenas: int = 2) -> bool:
    """Cap glibc's malloc arenas (once per process); False where there is no glibc."""
    if not sys.platform.startswith("linux"):
        return False
    try:
        # glibc's soname is fixed; find_library would run ldconfig in a subprocess (~30 ms)
        libc = ctypes.CDLL("libc.so.6")
        return bool(libc.mallopt(_M_ARENA_MAX, arenas))
    except (OSError, AttributeError):  # musl and others have no mallopt
        return False
