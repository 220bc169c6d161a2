"""MSE: the amax minimising the expected squared quantization error (TensorRT has no such calibrator).

With amax t and step s = t / 127, symmetric INT8 quantization maps |x| > t to t (clipping
error (|x| - t)^2) and rounds the rest to the nearest step (rounding error e(x)^2, a
sawtooth of period s). The error is taken over the piecewise-uniform density of the
full-resolution statistics (bins 2**-mantissa_bits wide relative to their value), in two
stages so that the whole search stays vectorised and cheap:

1. every bin edge is a candidate, scored with rounding noise s^2/12 above s/2 and x^2
   below (those values round to 0): sums of partial moments, O(bins) per tensor;
2. candidates within 10 % of that optimum are rescored with the exact integral of the
   sawtooth e(x)^2 over every bin, and the best one is amax.

The cache says EntropyCalibration2 (docs/methods.md).
"""

from __future__ import annotations

import numpy as np

from ..stats.histogram import TensorHistogram
from .registry import register

LEVELS = 127  # positive INT8 steps
REFINE = 0.10  # stage 2 rescans candidates within this fraction of the stage-1 optimum


def approximate_error(hist: TensorHistogram, thresholds: np.ndarray) -> np.ndarray:
    """Stage 1: expected squared error of each amax, rounding taken as uniform noise."""
    t = np.asarray(thresholds, dtype=np.float64)
    half_step = t / (2 * LEVELS)
    k = t.size
    # One pass over the histogram for all three point sets: t, s / 2 and the top.
    n, m1, m2 = hist.partial_moments(np.concatenate((t, half_step, [max(hist.amax, 0.0)])))
    n_t, m1_t, m2_t = n[:k], m1[:k], m2[:k]
    n_z, m2_z = n[k : 2 * k], m2[k : 2 * k]
    clipped = (m2[-1] - m2_t) - 2 * t * (m1[-1] - m1_t) + t * t * (n[-1] - n_t)
    rounded = (n_t - n_z) * (2 * half_step) ** 2 / 12
    return np.maximum(clipped, 0.0) + rounded + m2_z


def _sawtooth_integral(u: np.ndarray) -> np.ndarray:
    """G(u) = integral over [0, u] of (v - round(v))^2 dv, for u >= 0 (unit step)."""
    m = np.floor(u + 0.5)
    return m / 12 - 1 / 24 + ((u - m) ** 3 + 1 / 8) / 3


def exact_error(hist: TensorHistogram, thresholds: np.ndarray) -> np.ndarray:
    """Stage 2: expected squared error of each amax, rounding integrated exactly per bin."""
    lo, hi, c = hist.pieces()
    t = np.asarray(thresholds, dtype=np.float64)[:, None]
    s = t / LEVELS
    a, b = np.minimum(lo, t), np.minimum(hi, t)  # the part of each bin that is rounded
    width = hi - lo
    with np.errstate(divide="ignore", invalid="ignore"):
        spread = (_sawtooth_integral(b / s) - _sawtooth_integral(a / s)) * s**3 / width
        point = (lo - s * np.round(lo / s)) ** 2  # a bin of zero width is a point mass
        rounded = np.where(width > 0, spread, np.where(lo <= t, point, 0.0))
        ca, cb = np.maximum(lo, t), np.maximum(hi, t)  # the part that is clipped
        clipped = np.where(width > 0, ((cb - t) ** 3 - (ca - t) ** 3) / (3 * width), (ca - t) ** 2)
    return ((rounded + clipped) * c).sum(axis=1)


@register("mse", algorithm="EntropyCalibration2")
def mse(hist: TensorHistogram) -> float:
    """The amax with the smallest expected squared quantization error (clipping + rounding)."""
    if hist.amax <= 0:
        return 0.0
    lo, hi, _ = hist.pieces()
    candidates = np.unique(np.concatenate((lo, hi)))
    candidates = candidates[candidates > 0]
    rough = candidates[int(np.argmin(approximate_error(hist, candidates)))]
    near = candidates[(candidates >= rough * (1 - REFINE)) & (candidates <= rough * (1 + REFINE))]
    return float(near[int(np.argmin(exact_error(hist, near)))])
