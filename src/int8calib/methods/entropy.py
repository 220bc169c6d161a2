"""Entropy calibration: TensorRT's KL-divergence threshold search.

Over a histogram h of |x| in 2048 linear bins of width w, each candidate i = 128 ... 2048:
    P: the first i bins, with the mass of all bins >= i added to bin i - 1;
    Q: the first i bins of h (without that tail) merged into 128 levels (bin j goes to
       level floor(j * 128 / i)), each level's mass spread evenly over the bins of that
       level where P is non-zero (zero elsewhere);
    both smoothed: zero entries get EPSILON and the non-zero ones give up
       EPSILON * zeros / non-zeros between them (counts, not probabilities);
    then normalised and compared: KL(P || Q).
The first candidate with the smallest divergence gives amax = (i + 0.5) * w in float32.
Bin 0 is discarded before the search (the zero spike of Relu outputs).

These rules reproduce, bit for bit, the caches TensorRT 7.0 to 10.6 wrote in NVIDIA's
public samples (tests/test_trt_golden.py; docs/methods.md says what was checked and what
is assumed). ``entropy2`` and ``entropy`` read TensorRT's own histogram of the tensor
(:class:`int8calib.stats.TrtHistogram`: range from the first batch, doubling), so they
depend on batch size and order as TensorRT does; ``entropy2-stable`` runs the same search
over [0, max |x|] of the order-free statistics, the same for any batching or sharding.
"""

from __future__ import annotations

import functools

import numpy as np

from ..errors import Int8CalibError
from ..stats.histogram import TensorHistogram
from ..stats.trt_histogram import BINS, f32
from .registry import register

LEVELS = 128
SMALL = 64  # counts below this are summed by value, larger ones by series (see _search)
SERIES = 9
EPSILON = 1e-3  # in counts: 1e-4 and 1e-2 miss the TensorRT 7.0 golden line, 1.3e-4 .. 6e-3 match


def _search(h, levels, eps):  # pragma: no cover - compiled by _kernel()
    """KL(P || Q) of every candidate i = levels .. len(h) (index 0 is i = levels); inf where
    a distribution is all zeros, NaN where smoothing turns a count negative.

    sum (h - a) log(h - a) over the first i - 1 bins is kept as running sums while i grows:
    bins of small integer counts (< SMALL) by how many hold each value, one log per value
    (other small counts, from re-binned histograms, one log each);
    larger counts by the series (h - a) log(h - a) = h log h - a (1 + log h)
    + sum_k>=2 a^k / (k (k - 1) h^(k - 1)), whose terms past SERIES are below 1e-16 of the
    first since a = eps * zeros / non-zeros <= 2.05 < h / 31. Q is constant
    within a level (its mass over its filled bins), so its side of the sum is one log per
    level, with level masses and filled counts from prefix sums (exact: counts are integers).
    P's zero bins have Q zero too (Q fills only where P is non-zero), so after smoothing
    both are eps there and add eps / Tp * log(Tq / Tp) each.
    """
    n = h.size
    out = np.full(n - levels + 1, np.inf)
    cum = np.zeros(n + 1)
    nonzero = np.zeros(n + 1, np.int64)
    for j in range(n):
        cum[j + 1] = cum[j] + h[j]
        nonzero[j + 1] = nonzero[j] + (1 if h[j] != 0 else 0)
    total = cum[n]
    small = np.zeros(SMALL, np.int64)  # how many of bins 0 .. i - 2 hold each small count
    moments = np.zeros(SERIES + 1)  # sums over the bins with larger counts, see below
    odd = np.zeros(n)  # small counts that are not integers (re-binned histograms), one log each
    n_odd = 0
    inserted = 0  # bins 0 .. inserted - 1 are in small / odd / moments
    for i in range(levels, n + 1):
        while inserted < i - 1:  # bins 0 .. i - 2: all of P but its last bin, which carries the tail
            v = h[inserted]
            inserted += 1
            if v == 0:
                continue
            if v < SMALL and v == np.floor(v):
                small[int(v)] += 1
            elif v < SMALL:
                odd[n_odd] = v
                n_odd += 1
            else:
                lg = np.log(v)
                moments[0] += v * lg
                moments[1] += 1.0 + lg
                inv = 1.0 / v
                power = inv
                for k in range(2, SERIES + 1):
                    moments[k] += power
                    power *= inv
        p_last = h[i - 1] + (total - cum[i])
        p_zeros = (i - 1 - nonzero[i - 1]) + (1 if p_last == 0 else 0)
        if p_zeros == i:
            continue
        # Level l holds bins ceil(l i / levels) .. ceil((l + 1) i / levels) - 1; bin i - 1 is in the last.
        last_start = ((levels - 1) * i + levels - 1) // levels
        last_mass = cum[i] - cum[last_start]
        q_zeros = p_zeros + (1 if (last_mass == 0 and p_last != 0) else 0)
        if q_zeros == i:
            continue
        p_shift = eps * p_zeros / (i - p_zeros)
        q_shift = eps * q_zeros / (i - q_zeros)
        # Smoothed sums: the non-zero entries minus their shift plus eps per zero entry.
        p_sum = (total - p_shift * (i - p_zeros)) + eps * p_zeros
        q_sum = (cum[i] - q_shift * (i - q_zeros)) + eps * q_zeros
        # sum of ps log ps over P's non-zero bins: sum (h - a) log(h - a) / p_sum - log(p_sum) * sum ps,
        # with a = p_shift the same for every bin of this candidate (see the docstring).
        f = moments[0] - p_shift * moments[1]
        term = p_shift
        for k in range(2, SERIES + 1):
            term *= p_shift
            f += term / (k * (k - 1)) * moments[k]
        for v in range(1, SMALL):
            if small[v]:
                f += small[v] * (v - p_shift) * np.log(v - p_shift)
        for t in range(n_odd):
            f += (odd[t] - p_shift) * np.log(odd[t] - p_shift)
        if p_last != 0:
            f += (p_last - p_shift) * np.log(p_last - p_shift)
        plogp = f / p_sum - np.log(p_sum) * (total - p_shift * (i - p_zeros)) / p_sum
        # sum of ps log qs over P's non-zero bins, level by level.
        plogq = 0.0
        for level in range(levels):
            start = (level * i + levels - 1) // levels
            stop = ((level + 1) * i + levels - 1) // levels
            mass = cum[stop] - cum[start]
            filled = nonzero[stop] - nonzero[start]
            p_mass = mass
            if level == levels - 1:  # bin i - 1 carries the tail
                filled = filled - (1 if h[i - 1] != 0 else 0) + (1 if p_last != 0 else 0)
                p_mass = mass + (total - cum[i])
            if filled == 0:
                continue
            ps = (p_mass - p_shift * filled) / p_sum
            if mass == 0:  # only bin i - 1, filled by the tail: Q is zero there, smoothed to eps
                qs = eps / q_sum
            else:
                qs = (mass / filled - q_shift) / q_sum
            plogq += ps * np.log(qs)
        zero_term = p_zeros * (eps / p_sum) * np.log(q_sum / p_sum)
        out[i - levels] = plogp - plogq + zero_term
    return out


def _direct(h, levels, eps, candidates):  # pragma: no cover - compiled by _kernel()
    """KL(P || Q) of the given candidates the plain way, bin by bin: where P and Q agree the
    terms are exactly 0, so ties (flat or few-valued histograms) stay exact ties."""
    n = h.size
    out = np.full(candidates.size, np.inf)
    tail = np.zeros(n + 1)
    for j in range(n - 1, -1, -1):
        tail[j] = tail[j + 1] + h[j]
    p = np.empty(n)
    q = np.empty(n)
    for c in range(candidates.size):
        i = candidates[c]
        for j in range(i):
            p[j] = h[j]
        p[i - 1] += tail[i]
        for level in range(levels):
            start = (level * i + levels - 1) // levels
            stop = ((level + 1) * i + levels - 1) // levels
            mass = 0.0
            filled = 0
            for j in range(start, stop):
                mass += h[j]
                if p[j] != 0:
                    filled += 1
            for j in range(start, stop):
                q[j] = mass / filled if p[j] != 0 else 0.0
        p_zeros = 0
        q_zeros = 0
        for j in range(i):
            p_zeros += p[j] == 0
            q_zeros += q[j] == 0
        if p_zeros == i or q_zeros == i:
            continue
        p_shift = eps * p_zeros / (i - p_zeros)
        q_shift = eps * q_zeros / (i - q_zeros)
        p_sum = 0.0
        q_sum = 0.0
        for j in range(i):
            p[j] = p[j] - p_shift if p[j] != 0 else eps
            q[j] = q[j] - q_shift if q[j] != 0 else eps
            p_sum += p[j]
            q_sum += q[j]
        kl = 0.0
        for j in range(i):
            kl += p[j] / p_sum * np.log((p[j] / p_sum) / (q[j] / q_sum))
        out[c] = kl
    return out


@functools.lru_cache(maxsize=1)
def _kernel():
    from numba import njit

    compile = njit(nogil=True, cache=True, error_model="numpy")
    return compile(_search), compile(_direct)


def kl_divergences(counts: np.ndarray, eps: float = EPSILON, levels: int = LEVELS) -> np.ndarray:
    """KL(P || Q) of every candidate i = levels .. len(counts) (index 0 is i = levels), from
    running sums; within 1e-12 of the plain bin-by-bin sum."""
    return _kernel()[0](np.ascontiguousarray(counts, dtype=np.float64), levels, float(eps))


# Candidates whose running-sum divergence is this close to the smallest are recomputed bin by
# bin before the first minimum is taken (the running sums differ from it by < 1e-12).
_NEAR = 1e-9


def kl_bins(counts: np.ndarray, eps: float = EPSILON) -> int:
    """The number of bins kept, i: the first candidate with the smallest divergence."""
    h = np.asarray(counts, dtype=np.float64).copy()
    h[0] = 0.0  # discarded, as TensorRT does (NVIDIA's MLPerf calibration notes)
    kl = kl_divergences(h, eps)
    finite = np.isfinite(kl)
    if not finite.any():
        return len(h)
    best = kl[finite].min()
    near = np.flatnonzero(finite & (kl <= best + _NEAR * max(1.0, abs(best)))) + LEVELS
    exact = _kernel()[1](h, LEVELS, float(eps), near.astype(np.int64))
    index, value = len(near) - 1, np.inf
    for k, v in enumerate(exact):  # first minimum; NaN never wins
        if v < value:
            index, value = k, v
    return int(near[index])


def trt_threshold(counts: np.ndarray, width: float) -> float:
    """amax = (i + 0.5) * width, in float32 as TensorRT computes it (capped at the largest
    float32: a range within a bin of it would round to infinity)."""
    with np.errstate(over="ignore"):
        amax = np.float32(kl_bins(counts) + 0.5) * np.float32(width)
    return float(min(amax, np.finfo(np.float32).max))


def _trt_histogram(hist: TensorHistogram):
    if hist.trt is None:
        raise Int8CalibError(
            "these statistics have no TensorRT-order histogram (merged from runs with different first "
            "batches, or written by an older int8calib): use --method entropy2-stable, or collect again"
        )
    return hist.trt


@register("entropy2", algorithm="EntropyCalibration2", prepare=_kernel, ordered=True)
def entropy2(hist: TensorHistogram) -> float:
    """KL-divergence threshold on TensorRT's own histogram, as IInt8EntropyCalibrator2."""
    if hist.amax <= 0:
        return 0.0
    trt = _trt_histogram(hist)
    if trt.range <= 0:
        return 0.0
    return trt_threshold(trt.counts, trt.width)


@register("entropy2-stable", algorithm="EntropyCalibration2", prepare=_kernel)
def entropy2_stable(hist: TensorHistogram) -> float:
    """The same KL search over [0, max |x|]: independent of batch size, order and sharding."""
    if hist.amax <= 0:
        return 0.0
    counts, edges = hist.linear(BINS)
    return trt_threshold(counts, f32(edges[1]))


@register("entropy", algorithm="EntropyCalibration", prepare=_kernel, ordered=True)
def entropy(hist: TensorHistogram) -> float:
    """KL-divergence threshold, as TensorRT's legacy IInt8EntropyCalibrator (same search as entropy2).

    TensorRT runs the legacy calibrator after layer fusion, so it only needs scales of
    tensors that survive fusion; the KL search itself is taken to be the same (no cache
    TensorRT wrote with it and regenerable data is public: docs/methods.md). Every ONNX
    tensor gets the entropy2 threshold and the cache says ``EntropyCalibration``.
    """
    return entropy2(hist)
