"""Entropy calibration: the threshold minimising KL(P || Q) (TensorRT's EntropyCalibration2).

Over 2048 linear bins h on [0, max |x|], each candidate i = 128 ... 2048 builds
    P: the first i bins, with all mass beyond folded into bin i - 1;
    Q: the first i bins merged into 128 levels (bin b goes to level b * 128 // i) and
       expanded back, each level's mass shared equally by its non-empty bins;
and the candidate with the smallest KL(P || Q) gives amax = (i + 0.5) * bin width
(ties: the smallest i). A Q that is zero where P is not has infinite divergence.
Before the search, bin 0 takes the count of bin 1 (see ``entropy2``: the zero spike).

All candidates are evaluated at once. With T the total count, C_i = h[0] + ... + h[i-1]
and q the unnormalised expansion above (Q sums to C_i), the divergence is

    KL_i = (sum_j p_j log p_j - sum_j p_j log q_j) / T + log(C_i / T).

Within a level q is constant (mass / filled), so sum_j p_j log q_j is a sum over the 128
levels of mass log(mass / filled), plus the folded tail times log q of the last level;
level masses and filled-bin counts are differences of prefix sums at the level starts
ceil(l * i / 128). Those ~19 k distinct level ranges are computed once and summed per
candidate: array operations instead of 1921 loop turns.
"""

from __future__ import annotations

import functools

import numpy as np

from ..stats.histogram import TensorHistogram
from .registry import register

BINS = 2048
LEVELS = 128


@functools.lru_cache(maxsize=4)
def _level_segments(n: int, levels: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The bin ranges [lo, hi) of the levels of every candidate, without repeats.

    Level l of candidate i spans bins ceil(l * i / levels) .. ceil((l + 1) * i / levels).
    The 1921 x 128 levels of 2048 bins are only ~19 k distinct ranges, so each range's
    mass log(mass / filled) is computed once. Returns (lo, hi, which) where
    ``which[k, l]`` indexes the range of level l of candidate levels + k.
    """
    cand = np.arange(levels, n + 1)
    starts = (np.arange(levels + 1)[None, :] * cand[:, None] + levels - 1) // levels
    key = starts[:, :-1] * (n + 1) + starts[:, 1:]
    unique, which = np.unique(key, return_inverse=True)
    out = (unique // (n + 1), unique % (n + 1), which.reshape(key.shape).astype(np.intp))
    for array in out:
        array.setflags(write=False)
    return out


def _xlogx(x: np.ndarray) -> np.ndarray:
    """x log x with 0 log 0 = 0 (x >= 0)."""
    return x * np.log(np.maximum(x, np.finfo(np.float64).tiny))


def kl_divergences(hist: np.ndarray, levels: int = LEVELS) -> np.ndarray:
    """KL(P || Q) for every candidate i in levels .. len(hist) (index 0 is i = levels)."""
    h = np.asarray(hist, dtype=np.float64)
    n = h.size
    cand = np.arange(levels, n + 1)
    cum = np.concatenate(([0.0], np.cumsum(h)))
    total = cum[-1]  # the same sums the tails come from, so an empty tail is exactly 0
    if total <= 0:
        return np.zeros(cand.size)
    filled_cum = np.concatenate(([0], np.cumsum(h > 0)))
    lo, hi, which = _level_segments(n, levels)
    # Per distinct level range: mass log(mass / filled). A running sum of non-negative numbers
    # never decreases, so mass >= 0, and an empty range has mass exactly 0 and adds 0.
    mass = cum[hi] - cum[lo]
    filled = np.maximum(filled_cum[hi] - filled_cum[lo], 1)
    level_term = _xlogx(mass) - mass * np.log(filled)
    plogq_inside = level_term[which].sum(axis=1)

    last_lo = (cand * (levels - 1) + levels - 1) // levels  # bin i - 1 is always in the last level
    q_last = (cum[cand] - cum[last_lo]) / np.maximum(filled_cum[cand] - filled_cum[last_lo], 1)
    tail = total - cum[cand]
    last = h[cand - 1]
    plogp = np.concatenate(([0.0], np.cumsum(_xlogx(h))))[cand - 1] + _xlogx(last + tail)
    plogq = plogq_inside + tail * np.log(np.maximum(q_last, np.finfo(np.float64).tiny))
    with np.errstate(divide="ignore"):
        kl = (plogp - plogq) / total + np.log(cum[cand] / total)
    # Folded tail mass on an empty bin i - 1 (q there is 0) makes the divergence infinite.
    return np.where((tail > 0) & (last <= 0), np.inf, kl)


def kl_threshold(counts: np.ndarray, width: float) -> float:
    """amax = (i + 0.5) * width for the candidate i with the smallest divergence."""
    i = LEVELS + int(np.argmin(kl_divergences(counts)))
    return float((i + 0.5) * width)


@register("entropy2", algorithm="EntropyCalibration2")
def entropy2(hist: TensorHistogram) -> float:
    """KL-divergence threshold over 2048 bins, as TensorRT's EntropyCalibrator2."""
    if hist.amax <= 0:
        return 0.0
    counts, edges = hist.linear(BINS)
    # Exact zeros (ReLU / ReLU6 outputs: often 70 % of the values) form a spike in bin 0 that
    # int8 represents exactly at any threshold, yet it makes every wide candidate look costly
    # and drives the search to its smallest one. Like NVIDIA's reference implementation
    # (pytorch-quantization), replace bin 0 by its neighbour before the search.
    counts[0] = counts[1]
    return kl_threshold(counts, edges[1] - edges[0])


@register("entropy", algorithm="EntropyCalibration")
def entropy(hist: TensorHistogram) -> float:
    """KL-divergence threshold, as TensorRT's legacy EntropyCalibrator (same search as entropy2).

    TensorRT runs the legacy calibrator after layer fusion, so it only needs scales of
    tensors that survive fusion; the KL search itself is the same. Here every ONNX tensor
    gets the entropy2 threshold and the cache says ``EntropyCalibration``; TensorRT ignores
    the scales of tensors fused away (docs/methods.md).
    """
    return entropy2(hist)
