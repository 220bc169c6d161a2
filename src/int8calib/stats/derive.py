"""Histograms of Relu / Clip(0, hi) outputs derived from their input's, without exposing them.

Exposing a Clip output costs ONNX Runtime a layout reorder and the collector a pass
over the values (docs/performance.md). When the Clip's input is collected anyway, its
output's |x| histogram follows exactly from the input's counts split by sign: values
x > 0 below hi keep their key, values >= hi become hi, everything else becomes 0.
That is exact only when hi is the lower edge of a bit-pattern bin (6.0 is, for 8
mantissa bits): then every x < hi falls in a key below hi's.
"""

from __future__ import annotations

import math

import numpy as np

from .histogram import TensorHistogram


def bin_key(value: float, mantissa_bits: int) -> int:
    """The |x| key of a float32 value (its bit pattern without the sign, shifted)."""
    bits = int(np.array(value, np.float32).view(np.uint32)) & 0x7FFFFFFF
    return bits >> (23 - mantissa_bits)


def on_bin_edge(hi: float, mantissa_bits: int) -> bool:
    """Whether ``hi`` (float32) is a positive finite lower edge of a bin: every x < hi has a lower key."""
    bits = int(np.array(hi, np.float32).view(np.uint32))
    exact = float(np.float32(hi)) == hi
    return exact and 0 < hi < math.inf and bits & ((1 << (23 - mantissa_bits)) - 1) == 0


def unsigned_counts(signed_counts: np.ndarray) -> np.ndarray:
    """The |x| counts of sign-keyed counts (see :func:`kernels.accumulate_signed`)."""
    half = signed_counts.size // 2
    return signed_counts[:half] + signed_counts[half:]


def derive_clipped(
    signed_counts: np.ndarray, x_min: float, x_max: float, hi: float, mantissa_bits: int
) -> TensorHistogram:
    """The histogram of ``min(max(x, 0), hi)`` (``hi`` = inf: Relu) from x's sign-keyed counts and range."""
    n = 256 << mantissa_bits
    positive = signed_counts[:n]  # past key 0: x > 0 exactly
    counts = positive.copy()
    if hi < math.inf:
        top = bin_key(hi, mantissa_bits)
        counts[top] = positive[top:].sum()  # x >= hi becomes hi, whose key is top (hi is a bin edge)
        counts[top + 1 :] = 0
    counts[0] = 0
    counts[0] = int(signed_counts.sum()) - int(counts.sum())  # negatives, zeros and the positives of key 0
    if x_min > x_max:  # no values
        return TensorHistogram(counts, mantissa_bits=mantissa_bits)
    # As float32 Clip / Relu compute it; x < 0 becomes the constant +0.
    low = min(0.0 if x_min < 0 else x_min, hi)
    high = min(0.0 if x_max < 0 else x_max, hi)
    return TensorHistogram(counts, low, high, mantissa_bits)
