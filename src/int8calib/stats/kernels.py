"""The histogram kernel, compiled with numba.

Measured on this project's 2-core machine, over 12.8 M float32 values: numpy
(bit mask, shift, bincount) 0.10 G values/s, numpy.histogram 0.10 G/s, this kernel
1.07 G/s; one pass reads each value once and updates counts, min and max together.
"""

from __future__ import annotations

import numpy as np
from numba import njit


@njit(nogil=True, cache=True)
def _accumulate(flat_bits, counts, shift):  # pragma: no cover - compiled
    lo = np.float32(np.inf)
    hi = np.float32(-np.inf)
    values = flat_bits.view(np.float32)
    for i in range(flat_bits.size):
        counts[(flat_bits[i] & 0x7FFFFFFF) >> shift] += 1
        v = values[i]
        if v < lo:
            lo = v
        if v > hi:
            hi = v
    return lo, hi


def accumulate(values: np.ndarray, counts: np.ndarray, mantissa_bits: int) -> tuple[float, float]:
    """Add |values| to ``counts`` (int64, keyed on the float32 bit pattern); return (min, max).

    NaN is counted in the top exponent's keys and ignored by min and max.
    """
    flat = np.ascontiguousarray(values, dtype=np.float32).reshape(-1)
    if flat.size == 0:
        return float("inf"), float("-inf")
    lo, hi = _accumulate(flat.view(np.uint32), counts, 23 - mantissa_bits)
    return float(lo), float(hi)


@njit(nogil=True, cache=True)
def _accumulate_signed(flat_bits, counts, shift):  # pragma: no cover - compiled
    lo = np.float32(np.inf)
    hi = np.float32(-np.inf)
    values = flat_bits.view(np.float32)
    for i in range(flat_bits.size):
        counts[flat_bits[i] >> shift] += 1  # the sign bit stays in the key: one increment, no branch
        v = values[i]
        if v < lo:
            lo = v
        if v > hi:
            hi = v
    return lo, hi


def accumulate_signed(values: np.ndarray, signed_counts: np.ndarray, mantissa_bits: int) -> tuple[float, float]:
    """Like :func:`accumulate`, keyed on the sign bit too: ``signed_counts`` (int64,
    ``512 << mantissa_bits``) holds x >= +0 in its first half and x <= -0 in its second,
    each by the |x| key. Adding the halves gives :func:`accumulate`'s counts; the first
    half past key 0 counts the strictly positive values (what a Relu or Clip(0, hi) keeps).
    """
    flat = np.ascontiguousarray(values, dtype=np.float32).reshape(-1)
    if flat.size == 0:
        return float("inf"), float("-inf")
    lo, hi = _accumulate_signed(flat.view(np.uint32), signed_counts, 23 - mantissa_bits)
    return float(lo), float(hi)
