"""MSE: the amax minimising the expected squared quantization error (TensorRT has no such calibrator).

With amax t and step s = t / 127, symmetric INT8 quantization makes three kinds of error:
    |x| > t        clipped to t:               (|x| - t)^2
    s/2 <= |x| <= t rounded to a step:          s^2 / 12 on average (uniform rounding noise)
    |x| < s/2       rounded to 0:               x^2 exactly
The expected total, over the piecewise-uniform density of the full-resolution statistics,
is a combination of partial moments (sum of |x|^k below a point, k = 0, 1, 2), so every
candidate t (every bin edge) is scored at once. The cache says EntropyCalibration2.
"""

from __future__ import annotations

import numpy as np

from ..stats.histogram import TensorHistogram
from .registry import register

LEVELS = 127  # positive INT8 steps


def expected_error(hist: TensorHistogram, thresholds: np.ndarray) -> np.ndarray:
    """Sum over all values of the expected squared error of quantizing with each amax."""
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


@register("mse", algorithm="EntropyCalibration2")
def mse(hist: TensorHistogram) -> float:
    """The amax with the smallest expected squared quantization error (clipping + rounding)."""
    if hist.amax <= 0:
        return 0.0
    lo, hi, _ = hist.pieces()
    candidates = np.unique(np.concatenate((lo, hi)))
    candidates = candidates[candidates > 0]
    return float(candidates[int(np.argmin(expected_error(hist, candidates)))])
