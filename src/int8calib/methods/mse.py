"""MSE: the amax minimising the expected squared quantization error (TensorRT has no such calibrator).

With amax t and step s = t / 127, symmetric INT8 quantization maps |x| > t to t (clipping
error (|x| - t)^2) and rounds the rest to the nearest step (rounding error e(x)^2, a
sawtooth of period s). The error is taken over the piecewise-uniform density of the
full-resolution statistics (bins 2**-mantissa_bits wide relative to their value), in two
stages so that the whole search stays vectorised and cheap:

1. every bin edge is a candidate, scored with rounding noise s^2/12 above s/2 and x^2
   below (those values round to 0): sums of partial moments, O(bins) per tensor;
2. candidates within 10 % of that optimum are rescored with the exact integral of the
   sawtooth e(x)^2 over every bin (a compiled loop over ~70 candidates x the bins
   between s/2 and t), and the best one is amax.

The cache says EntropyCalibration2 (docs/methods.md).
"""

from __future__ import annotations

import functools

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


def _exact_errors(lo, hi, c, m0, m1, m2, thresholds):  # pragma: no cover - compiled by _kernel()
    """Bins wholly below s/2 round to 0 (error x^2: their m2), bins wholly above t are clipped
    (sum of (x - t)^2 from their moments); only the bins in between need the sawtooth
    G(u) = integral over [0, u] of (v - round(v))^2 dv = m/12 - 1/24 + ((u - m)^3 + 1/8) / 3,
    m = floor(u + 1/2), in units of the step s."""
    n = lo.size
    out = np.zeros(thresholds.size)
    for k in range(thresholds.size):
        t = thresholds[k]
        s = t / LEVELS
        first = np.searchsorted(hi, 0.5 * s, side="right")  # bins [0, first) end at or below s/2
        last = np.searchsorted(lo, t, side="left")  # bins [last, n) start at or above t
        total = m2[first] + (m2[n] - m2[last]) - 2 * t * (m1[n] - m1[last]) + t * t * (m0[n] - m0[last])
        for j in range(first, last):
            a, b = lo[j], hi[j]
            if b <= a:  # a point mass
                e = a - s * np.floor(a / s + 0.5)
                total += c[j] * e * e
                continue
            u, v = a / s, min(b, t) / s
            mu, mv = np.floor(u + 0.5), np.floor(v + 0.5)
            du, dv = u - mu, v - mv
            err = ((mv - mu) / 12 + (dv * dv * dv - du * du * du) / 3) * s * s * s
            if b > t:  # the clipped part, [t, b]
                err += (b - t) * (b - t) * (b - t) / 3
            total += c[j] * err / (b - a)
        out[k] = total
    return out


@functools.lru_cache(maxsize=1)
def _kernel():
    from numba import njit  # only mse needs it; reading statistics and the other methods do not

    return njit(cache=True, nogil=True)(_exact_errors)


def exact_error(hist: TensorHistogram, thresholds: np.ndarray) -> np.ndarray:
    """Stage 2: expected squared error of each amax, rounding integrated exactly per bin.

    A compiled loop over candidates x the bins between s/2 and t (a few thousand): per bin
    the sawtooth integral has no array form cheaper than it.
    """
    lo, hi, c = hist.pieces()
    width = hi - lo
    with np.errstate(divide="ignore", invalid="ignore"):
        point = width <= 0
        mean = np.where(point, lo, (lo + hi) / 2)
        square = np.where(point, lo * lo, (lo * lo + lo * hi + hi * hi) / 3)
    prefix = [np.concatenate(([0.0], np.cumsum(v))) for v in (c, c * mean, c * square)]
    return _kernel()(lo, hi, c, *prefix, np.ascontiguousarray(thresholds, dtype=np.float64))


@register("mse", algorithm="EntropyCalibration2", prepare=_kernel)
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
