"""The histogram kernel, compiled with numba.

One pass reads each value once and updates counts, min and max together. Measured on this
project's 2-core machine: 1.07 G values/s on random data and 0.62-0.69 G/s on one thread over
real EfficientNet-Lite0 activations (1.1 G/s on two), against 0.1 G/s for numpy.histogram and
0.1-0.2 G/s for numpy's mask-shift-bincount (docs/performance.md).
"""

from __future__ import annotations

import numpy as np
from numba import njit

_ABS = 0x7FFFFFFF  # key on |x|: the sign bit masked off
_SIGNED = 0xFFFFFFFF  # key on x: the sign bit stays, one increment and no branch either way


@njit(nogil=True, cache=True)
def _accumulate(flat_bits, counts, shift, mask):  # pragma: no cover - compiled
    lo = np.float32(np.inf)
    hi = np.float32(-np.inf)
    values = flat_bits.view(np.float32)
    for i in range(flat_bits.size):
        counts[(flat_bits[i] & mask) >> shift] += 1
        v = values[i]
        if v < lo:
            lo = v
        if v > hi:
            hi = v
    return lo, hi


def _run(values: np.ndarray, counts: np.ndarray, mantissa_bits: int, mask: int) -> tuple[float, float]:
    flat = np.ascontiguousarray(values, dtype=np.float32).reshape(-1)
    if flat.size == 0:
        return float("inf"), float("-inf")
    lo, hi = _accumulate(flat.view(np.uint32), counts, np.uint32(23 - mantissa_bits), np.uint32(mask))
    return float(lo), float(hi)


def accumulate(values: np.ndarray, counts: np.ndarray, mantissa_bits: int) -> tuple[float, float]:
    """Add |values| to ``counts`` (int64, keyed on the float32 bit pattern); return (min, max).

    NaN is counted in the top exponent's keys and ignored by min and max.
    """
    return _run(values, counts, mantissa_bits, _ABS)


def accumulate_signed(values: np.ndarray, signed_counts: np.ndarray, mantissa_bits: int) -> tuple[float, float]:
    """Like :func:`accumulate`, keyed on the sign bit too: ``signed_counts`` (int64,
    ``512 << mantissa_bits``) holds x >= +0 in its first half and x <= -0 in its second,
    each by the |x| key. Adding the halves gives :func:`accumulate`'s counts; the first
    half past key 0 counts the strictly positive values (what a Relu or Clip(0, hi) keeps).
    """
    return _run(values, signed_counts, mantissa_bits, _SIGNED)
