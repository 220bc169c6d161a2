"""The histogram kernel, compiled with numba.

One pass reads each value once and updates counts, min and max together. Measured on this
project's 2-core machine over real EfficientNet-Lite0 activations: ~0.9 G values/s on one
thread, against 0.1 G/s for numpy.histogram and 0.1-0.2 G/s for numpy's
mask-shift-bincount (docs/performance.md).
"""

from __future__ import annotations

import math
import struct

import numpy as np
from numba import njit

_ABS = 0x7FFFFFFF  # key on |x|: the sign bit masked off
_SIGNED = 0xFFFFFFFF  # key on x: the sign bit stays, one increment and no branch either way


_INT32, _FLOAT32 = struct.Struct("<i"), struct.Struct("<f")


@njit(nogil=True, cache=True)
def _accumulate(flat_bits, counts, shift, mask):  # pragma: no cover - compiled
    # min and max are tracked on an integer that orders like the float (bits with the
    # magnitude bits flipped for negatives): no float compares, and the update sits in a
    # branch that is almost never taken after the first values, so it costs no
    # loop-carried dependency (0.65 -> 0.9 G values/s on real activations).
    # (A NaN check in the branch cost 25 %: NaN is handled outside, see _run.)
    ints = flat_bits.view(np.int32)
    lo = np.int32(0x7FFFFFFF)
    hi = np.int32(-0x7FFFFFFF - 1)
    for i in range(ints.size):
        b = ints[i]
        counts[(np.uint32(b) & mask) >> shift] += 1
        o = b ^ ((b >> np.int32(31)) & np.int32(0x7FFFFFFF))
        if o > hi or o < lo:
            hi = max(hi, o)
            lo = min(lo, o)
    return lo, hi


def _to_float(ordered: int) -> float:
    """The float32 whose ordered integer (see ``_accumulate``) is ``ordered``."""
    b = int(ordered)
    return _FLOAT32.unpack(_INT32.pack(b ^ ((b >> 31) & 0x7FFFFFFF)))[0]


_ORDERED_NEG_INF = -0x7F800001  # the ordered integer of -inf; +inf's is 0x7F800000


def _decode_min_max(flat: np.ndarray, lo: int, hi: int) -> tuple[float, float, bool]:
    """(min, max, whether every value was finite) from the kernel's ordered integers."""
    finite = _ORDERED_NEG_INF < lo and hi < 0x7F800000  # inf and NaN order beyond every finite value
    lo, hi = _to_float(lo), _to_float(hi)
    if math.isnan(lo) or math.isnan(hi):  # min and max ignore NaN
        real = flat[~np.isnan(flat)]
        lo, hi = (float(real.min()), float(real.max())) if real.size else (float("inf"), float("-inf"))
    return lo, hi, finite


def _run(values: np.ndarray, counts: np.ndarray, mantissa_bits: int, mask: int) -> tuple[float, float, bool]:
    """(min, max, whether every value was finite)."""
    flat = np.ascontiguousarray(values, dtype=np.float32).reshape(-1)
    if flat.size == 0:
        return float("inf"), float("-inf"), True
    lo, hi = _accumulate(flat.view(np.uint32), counts, np.uint32(23 - mantissa_bits), np.uint32(mask))
    return _decode_min_max(flat, lo, hi)


def accumulate_checked(values: np.ndarray, counts: np.ndarray, mantissa_bits: int, signed: bool) -> tuple[float, float, bool]:
    """:func:`accumulate` (``signed``: :func:`accumulate_signed`) plus whether every value was finite."""
    return _run(values, counts, mantissa_bits, _SIGNED if signed else _ABS)


def accumulate(values: np.ndarray, counts: np.ndarray, mantissa_bits: int) -> tuple[float, float]:
    """Add |values| to ``counts`` (int64, keyed on the float32 bit pattern); return (min, max).

    NaN is counted in the top exponent's keys and ignored by min and max; -0.0 counts
    as below +0.0 for min and max.
    """
    return _run(values, counts, mantissa_bits, _ABS)[:2]


def accumulate_signed(values: np.ndarray, signed_counts: np.ndarray, mantissa_bits: int) -> tuple[float, float]:
    """Like :func:`accumulate`, keyed on the sign bit too: ``signed_counts`` (int64,
    ``512 << mantissa_bits``) holds x >= +0 in its first half and x <= -0 in its second,
    each by the |x| key. Adding the halves gives :func:`accumulate`'s counts; the first
    half past key 0 counts the strictly positive values (what a Relu or Clip(0, hi) keeps).
    """
    return _run(values, signed_counts, mantissa_bits, _SIGNED)[:2]


# TensorRT's bin of |x| is floor(|x| / w) with a float32 division. |x| * (1 / w) in float64,
# rounded to float32, is that same float32 quotient and much cheaper: the double product is
# within 2^-52 of the exact quotient, and a quotient of two float32 values that is not exactly
# halfway between two float32 values (it never is, unless w is a power of two and the product
# exact) lies at least ~2^-49 from such a midpoint (tests/test_kernels.py checks it).


@njit(nogil=True, cache=True)
def _linear_bin(x, inv_width, clip_hi, clipped):  # pragma: no cover - compiled
    if clipped:
        x = min(max(x, np.float32(0)), clip_hi)  # Relu / Clip(0, clip_hi) output
    else:
        x = abs(x)
    return min(int(np.float32(np.float64(x) * inv_width)), 2048)  # 2048: at the upper edge


@njit(nogil=True, cache=True)
def _bin_linear(values, counts, inv_width, clip_hi, clipped):  # pragma: no cover - compiled
    # TensorRT's calibration histogram: bin floor(|x| / width) in float32, clamped to the top
    # bin. Four copies of the counts, one per value of each group of four: runs of values in
    # one bin (Relu zeros) do not wait on each other's increments (0.99 -> 1.64 G values/s on
    # Relu-like data). Bin 2048 of each copy counts the values at the upper edge.
    lanes = np.zeros((4, counts.size + 1), np.int32)  # one call bins < 2^31 values
    n = values.size
    m = n - n % 4
    for i in range(0, m, 4):
        lanes[0, _linear_bin(values[i], inv_width, clip_hi, clipped)] += 1
        lanes[1, _linear_bin(values[i + 1], inv_width, clip_hi, clipped)] += 1
        lanes[2, _linear_bin(values[i + 2], inv_width, clip_hi, clipped)] += 1
        lanes[3, _linear_bin(values[i + 3], inv_width, clip_hi, clipped)] += 1
    for i in range(m, n):
        lanes[0, _linear_bin(values[i], inv_width, clip_hi, clipped)] += 1
    at_top = 0
    for j in range(4):
        for k in range(counts.size):
            counts[k] += lanes[j, k]
        counts[counts.size - 1] += lanes[j, counts.size]
        at_top += lanes[j, counts.size]
    return at_top


def bin_linear(values: np.ndarray, counts: np.ndarray, width: float, clip_hi: float | None = None) -> int:
    """Add |values| (``clip_hi`` given: ``min(max(x, 0), clip_hi)``) to TensorRT's linear
    histogram ``counts`` (2048 bins) of bin width ``width`` (float32); no value may exceed the
    range, 2048 widths (finite values only).

    Returns how many values fell at the upper edge (bin 2048) and were clamped into the top
    bin: :meth:`TrtHistogram.double` needs them.
    """
    flat = np.ascontiguousarray(values, dtype=np.float32).reshape(-1)
    if flat.size == 0:
        return 0
    hi = np.float32(np.inf if clip_hi is None else clip_hi)
    inverse = 1.0 / max(float(np.float32(width)), _TINY)
    return int(_bin_linear(flat, counts, inverse, hi, clip_hi is not None))


_TINY = 2.0**-149  # the smallest float32: a range below 2048 of it would give a zero width


_BLOCK = 1024  # values per block: read twice (range check, then bins), the second time from L1


@njit(nogil=True, cache=True, error_model="numpy")
def _scatter(lane, bins, m):  # pragma: no cover - compiled
    four = np.uint64(4)
    q = m - m % four
    for i in range(np.uint64(0), q, four):
        lane[0, bins[i]] += 1
        lane[1, bins[i + np.uint64(1)]] += 1
        lane[2, bins[i + np.uint64(2)]] += 1
        lane[3, bins[i + np.uint64(3)]] += 1
    for i in range(q, m):
        lane[0, bins[i]] += 1


@njit(nogil=True, cache=True, error_model="numpy")
def _blocks(ints, values, start, counts, shift, mask, inv_a, range_a, inv_b, range_b, clip_value, clip_b, lanes, idx, lo, hi):  # pragma: no cover - compiled
    # Every histogram of a tensor in one pass over memory, block by block: min/max (ordered
    # integers, as in _accumulate), TensorRT's linear bins of |x| (inv_a > 0; lanes[0]) and of
    # Clip(0, clip_value)(x) (inv_b > 0; lanes[1]; clip_b: its bits), and the bit-pattern counts (counts.size > 0).
    # Each block is first checked against the linear ranges (bits as int32: positive floats
    # order like their bits); a block holding NaN, Inf or a value beyond a range stops the
    # kernel before any of it is counted, and the caller widens the range and calls again.
    # Bins are computed into idx and then scattered (4 lanes, as in _bin_linear). Unsigned
    # loop indices: with signed ones numba's negative-index wraparound kept LLVM from
    # vectorising the range check and the bin arithmetic (6x slower).
    n = ints.size
    has_a, has_b, bits = inv_a > 0, inv_b > 0, counts.size > 0
    for s in range(start, n, _BLOCK):
        block = ints[s : s + _BLOCK]
        vals = values[s : s + _BLOCK]
        m = np.uint64(block.size)
        top = np.int32(0)
        block_lo = np.int32(0x7FFFFFFF)
        block_hi = np.int32(-0x7FFFFFFF - 1)
        for i in range(m):
            b = block[i]
            top = max(top, b & np.int32(0x7FFFFFFF))
            o = b ^ ((b >> np.int32(31)) & np.int32(0x7FFFFFFF))
            block_lo = min(block_lo, o)
            block_hi = max(block_hi, o)
        if top >= np.int32(0x7F800000) or (has_a and top > range_a) or (has_b and min(block_hi, clip_b) > range_b):
            return lo, hi, s
        lo = min(lo, block_lo)
        hi = max(hi, block_hi)
        if has_a:
            out = idx[0]
            for i in range(m):
                out[i] = np.uint32(min(np.int32(np.float32(np.float64(abs(vals[i])) * inv_a)), np.int32(2048)))
            _scatter(lanes[0], out, m)
        if has_b:
            out = idx[1]
            for i in range(m):
                c = min(max(vals[i], np.float32(0)), clip_value)
                out[i] = np.uint32(min(np.int32(np.float32(np.float64(c) * inv_b)), np.int32(2048)))
            _scatter(lanes[1], out, m)
        if bits:
            for i in range(m):
                counts[(np.uint32(block[i]) & mask) >> shift] += 1
    return lo, hi, n


_NO_COUNTS = np.zeros(0, np.int64)


def _bits(value: float) -> np.int32:
    return np.array(value, np.float32).view(np.int32)[()]


def accumulate_all(
    values: np.ndarray, counts: "np.ndarray | None", mantissa_bits: int, signed: bool, absolute=None, clipped=None
) -> tuple[float, float, bool]:
    """Every histogram of one tensor in one pass: the bit-pattern ``counts`` as
    :func:`accumulate_checked` does (None: not wanted), TensorRT's histogram of |x|
    (``absolute``, a :class:`~.trt_histogram.TrtHistogram`) and of a Clip(0, hi) output
    derived from x (``clipped``: ``(TrtHistogram, hi)``), each with a range > 0 already.
    A block of values beyond a range widens it (``fit``) before the block is binned: the same
    counts as fitting to the whole step's maximum first (doubling is exact, trt_histogram).
    Returns (min, max, whether every value was finite); after a NaN or Inf the histograms
    are left part-way (collection stops with an error).
    """
    flat = np.ascontiguousarray(values, dtype=np.float32).reshape(-1)
    if flat.size == 0:
        return float("inf"), float("-inf"), True
    ints = flat.view(np.int32)
    hists = [(h, None, 0) for h in (absolute,) if h is not None] + ([(*clipped, 1)] if clipped is not None else [])
    clip_value = np.float32(clipped[1] if clipped is not None else np.inf)
    lanes = np.zeros((2, 4, 2049), np.int32)  # one call bins < 2^31 values
    idx = np.empty((2, _BLOCK), np.uint32)
    lo, hi, start = np.int32(0x7FFFFFFF), np.int32(-0x7FFFFFFF - 1), 0
    shift, mask = np.uint32(23 - mantissa_bits), np.uint32(_SIGNED if signed else _ABS)
    while True:
        inv = [0.0, 0.0]
        for h, _, row in hists:
            inv[row] = 1.0 / max(h.width, _TINY)
        lo, hi, stop = _blocks(
            ints, flat, start, _NO_COUNTS if counts is None else counts, shift, mask,
            inv[0], _bits(absolute.range if absolute is not None else 0.0),
            inv[1], _bits(clipped[0].range if clipped is not None else 0.0), clip_value, _bits(clip_value),
            lanes, idx, lo, hi,
        )
        for h, _, row in hists:  # the edge counts must be known before a range doubles
            summed = lanes[row].sum(axis=0)
            h.counts[:2048] += summed[:2048]
            h.counts[2047] += summed[2048]
            h.count_clamped(int(summed[2048]))
        if stop == flat.size:
            return _decode_min_max(flat, lo, hi)
        block = flat[stop : stop + _BLOCK]
        if not np.isfinite(block).all():
            return float("nan"), float("nan"), False
        for h, c, _ in hists:
            h.fit(float(np.abs(block).max()) if c is None else min(max(float(block.max()), 0.0), c))
        lanes[:] = 0
        start = stop


@njit(nogil=True, cache=True)
def _min_max(ints):  # pragma: no cover - compiled
    lo = np.int32(0x7FFFFFFF)
    hi = np.int32(-0x7FFFFFFF - 1)
    for i in range(ints.size):
        b = ints[i]
        o = b ^ ((b >> np.int32(31)) & np.int32(0x7FFFFFFF))
        if o > hi or o < lo:
            hi = max(hi, o)
            lo = min(lo, o)
    return lo, hi


def min_max(values: np.ndarray) -> tuple[float, float]:
    """(min, max) of float32 values as :func:`accumulate` reports them, without counting."""
    flat = np.ascontiguousarray(values, dtype=np.float32).reshape(-1)
    if flat.size == 0:
        return float("inf"), float("-inf")
    lo, hi = _min_max(flat.view(np.int32))
    return _decode_min_max(flat, lo, hi)[:2]


def warm_up() -> None:
    """Load the compiled kernel (numba's import and on-disk cache: ~0.4 s on the project's
    machine); collection calls it in a background thread while the model loads."""
    accumulate(np.zeros(1, np.float32), np.zeros(256 << 8, np.int64), 8)
    bin_linear(np.zeros(1, np.float32), np.zeros(2048, np.int64), 1.0)
    bin_linear(np.zeros(1, np.float32), np.zeros(2048, np.int64), 1.0, 6.0)
    min_max(np.zeros(1, np.float32))
    from .trt_histogram import TrtHistogram

    accumulate_all(np.zeros(1, np.float32), None, 8, True, TrtHistogram.starting_at(1.0), (TrtHistogram.starting_at(1.0), 6.0))


