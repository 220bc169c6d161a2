"""Entropy calibration: the threshold minimising KL(P || Q) (TensorRT's EntropyCalibration2).

Over 2048 linear bins on [0, max |x|], each candidate i = 128 ... 2048 builds
    P: the first i bins, with all mass beyond folded into bin i - 1;
    Q: the first i bins merged into 128 levels (bin b goes to level b * 128 // i) and
       expanded back, each level's mass shared equally by its non-empty bins;
and the candidate with the smallest KL(P || Q) gives amax = (i + 0.5) * bin width
(ties: the smallest i). A Q that is zero where P is not has infinite divergence.
"""

from __future__ import annotations

import numpy as np

from ..stats.histogram import TensorHistogram
from .registry import register

BINS = 2048
LEVELS = 128


def kl_divergences(hist: np.ndarray, levels: int = LEVELS) -> np.ndarray:
    """KL(P || Q) for every candidate i in levels .. len(hist) (index 0 is i = levels)."""
    hist = np.asarray(hist, dtype=np.float64)
    n = hist.size
    out = np.empty(n - levels + 1)
    nonempty_all = hist > 0
    for k, i in enumerate(range(levels, n + 1)):
        p = hist[:i].copy()
        p[i - 1] += hist[i:].sum()
        level = (np.arange(i) * levels) // i
        nonempty = nonempty_all[:i]
        mass = np.bincount(level, weights=hist[:i], minlength=levels)
        filled = np.bincount(level, weights=nonempty, minlength=levels)
        with np.errstate(divide="ignore", invalid="ignore"):
            q = np.where(nonempty, mass[level] / filled[level], 0.0)
        out[k] = _kl(p, q)
    return out


def _kl(p: np.ndarray, q: np.ndarray) -> float:
    p_sum, q_sum = p.sum(), q.sum()
    if p_sum <= 0:
        return 0.0
    if q_sum <= 0:
        return np.inf
    p = p / p_sum
    q = q / q_sum
    mask = p > 0
    if np.any(q[mask] <= 0):
        return np.inf
    return float(np.sum(p[mask] * np.log(p[mask] / q[mask])))


@register("entropy2", algorithm="EntropyCalibration2")
def entropy2(hist: TensorHistogram) -> float:
    """KL-divergence threshold over 2048 bins, as TensorRT's EntropyCalibrator2."""
    top = hist.amax
    if top <= 0:
        return 0.0
    counts, edges = hist.linear(BINS)
    divergences = kl_divergences(counts)
    i = LEVELS + int(np.argmin(divergences))
    return float((i + 0.5) * (edges[1] - edges[0]))
