"""The slow, obviously-correct KL search: one loop turn per candidate.

Kept only as an independent oracle for the vectorised search in int8calib.methods.entropy.
"""

from __future__ import annotations

import numpy as np


def kl_divergences_loop(hist: np.ndarray, levels: int = 128) -> np.ndarray:
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
