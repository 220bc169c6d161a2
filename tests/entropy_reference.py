"""The slow, obviously-correct KL search of TensorRT's entropy calibrators, one candidate at a time.

Written from the rules in docs/methods.md with numpy only, as an independent oracle for the
compiled search in int8calib.methods.entropy.
"""

from __future__ import annotations

import numpy as np


def smooth(counts: np.ndarray, eps: float) -> np.ndarray | None:
    """Zero entries get eps, the non-zero ones give up eps * zeros / non-zeros; None if all zero."""
    zero = counts == 0
    if zero.all():
        return None
    return np.where(zero, eps, counts - eps * zero.sum() / (~zero).sum())


def kl_divergences_loop(hist: np.ndarray, eps: float = 1e-3, levels: int = 128) -> np.ndarray:
    """KL(P || Q) for every candidate i in levels .. len(hist) (index 0 is i = levels)."""
    hist = np.asarray(hist, dtype=np.float64)
    n = hist.size
    out = np.full(n - levels + 1, np.inf)
    for k, i in enumerate(range(levels, n + 1)):
        p = hist[:i].copy()
        p[i - 1] += hist[i:].sum()
        level = (np.arange(i) * levels) // i
        mass = np.bincount(level, weights=hist[:i], minlength=levels)
        filled = np.bincount(level, weights=p != 0, minlength=levels)
        with np.errstate(divide="ignore", invalid="ignore"):
            q = np.where(p != 0, mass[level] / filled[level], 0.0)
        ps, qs = smooth(p, eps), smooth(q, eps)
        if ps is None or qs is None:
            continue
        ps, qs = ps / ps.sum(), qs / qs.sum()
        with np.errstate(invalid="ignore"):
            out[k] = float(np.sum(ps * np.log(ps / qs)))
    return out


def trt_histogram(batches: list[np.ndarray], bins: int = 2048) -> tuple[np.ndarray, float]:
    """TensorRT's histogram of |x| over ``batches`` in order, built the direct way: every
    value binned at the final width, except values clamped at the edge before a later batch
    doubled the range (they stay in the top bin then, and move with it)."""
    first = np.float32(np.abs(batches[0]).max())
    upper = first
    counts = np.zeros(bins, np.int64)
    for batch in batches:
        a = np.abs(np.asarray(batch, np.float32).ravel())
        while a.max() > upper:
            counts = np.concatenate([counts[0::2] + counts[1::2], np.zeros(bins // 2, np.int64)])
            upper = np.float32(upper * 2)
        q = (a / np.float32(upper / np.float32(bins))).astype(np.int64)
        np.add.at(counts, np.minimum(q, bins - 1), 1)
    return counts, float(upper)
