"""The compiled histogram kernel against an independent numpy computation of the same bins."""

from __future__ import annotations

import struct

import numpy as np
import pytest
from hypothesis import given, settings, strategies as st
from hypothesis.extra import numpy as hnp

from int8calib.stats.kernels import accumulate, accumulate_checked


def reference(values: np.ndarray, mantissa_bits: int) -> tuple[np.ndarray, float, float]:
    """Bins from the float's parts (frexp), not from its bit pattern: exponent field and
    the top mantissa bits of |x|, computed in float64 arithmetic."""
    a = np.abs(values.astype(np.float64)).ravel()
    keys = np.empty(a.size, np.int64)
    finite = np.isfinite(a)
    normal = finite & (a >= np.finfo(np.float32).tiny)
    mant, exp = np.frexp(a[normal])  # a = mant * 2**exp, mant in [0.5, 1)
    field = exp - 1 + 127  # the biased exponent of a normal float32
    frac = mant * 2 - 1  # the fraction in [0, 1)
    keys[normal] = (field << mantissa_bits) + np.floor(frac * (1 << mantissa_bits)).astype(np.int64)
    sub = finite & ~normal  # zero and denormals: exponent field 0, fraction a / 2**-126
    keys[sub] = np.floor(a[sub] / 2.0**-126 * (1 << mantissa_bits)).astype(np.int64)
    nan = np.isnan(a)
    inf = np.isinf(a)
    keys[inf] = 255 << mantissa_bits
    # NaN: exponent 255 and a non-zero fraction; only its bin range is fixed, so map each via its bits.
    bits = np.abs(values.astype(np.float32)).ravel().view(np.uint32)
    keys[nan] = (bits[nan] & 0x7FFFFFFF) >> (23 - mantissa_bits)
    counts = np.bincount(keys, minlength=256 << mantissa_bits)
    real = values.ravel()[~nan]
    lo = float(real.min()) if real.size else float("inf")
    hi = float(real.max()) if real.size else float("-inf")
    return counts, lo, hi


special = st.sampled_from(
    [0.0, -0.0, np.inf, -np.inf, np.nan, 1e-45, -1e-45, 1.1754942e-38, 1.1754944e-38, 3.4028235e38, -3.4028235e38, 6.0]
)
floats32 = st.one_of(st.floats(width=32, allow_nan=True, allow_infinity=True), special)


@settings(max_examples=150, deadline=None)
@given(
    values=hnp.arrays(np.float32, st.integers(0, 300), elements=floats32),
    mantissa_bits=st.sampled_from([0, 3, 8]),
)
def test_kernel_matches_independent_binning(values, mantissa_bits):
    counts = np.zeros(256 << mantissa_bits, np.int64)
    lo, hi = accumulate(values, counts, mantissa_bits)
    want, want_lo, want_hi = reference(values, mantissa_bits)
    np.testing.assert_array_equal(counts, want)
    assert (lo, hi) == (want_lo, want_hi)
    for signed in (False, True):  # the finiteness flag collection raises on
        again = np.zeros((512 if signed else 256) << mantissa_bits, np.int64)
        assert accumulate_checked(values, again, mantissa_bits, signed)[2] == bool(np.isfinite(values).all())


def test_negative_zero_and_denormals_by_hand():
    values = np.array([-0.0, 0.0, 2.0**-149, -(2.0**-127), 1.0, -1.0, -1.5], np.float32)
    counts = np.zeros(256 << 8, np.int64)
    lo, hi = accumulate(values, counts, 8)
    assert counts[0] == 3  # +0, -0 and the smallest denormal (fraction 2**-23 < 1/256)
    assert counts[128] == 1  # -2**-127: exponent field 0, fraction 0.5 -> bin 128
    assert counts[127 << 8] == 2  # |+-1.0|: exponent 127, fraction 0
    assert counts[(127 << 8) + 128] == 1  # |-1.5|: fraction 0.5
    assert counts.sum() == values.size
    assert (lo, hi) == (-1.5, 1.0)


def test_accumulates_into_existing_counts_and_handles_views():
    rng = np.random.default_rng(1)
    x = rng.standard_normal((4, 6, 5)).astype(np.float32)
    counts = np.zeros(256 << 8, np.int64)
    accumulate(x[:2], counts, 8)
    accumulate(x[2:, :, ::2], counts, 8)  # a non-contiguous view
    want = reference(x[:2], 8)[0] + reference(np.ascontiguousarray(x[2:, :, ::2]), 8)[0]
    np.testing.assert_array_equal(counts, want)


@pytest.mark.parametrize("dtype", [np.float16, np.float64])
def test_other_float_types_are_binned_as_float32(dtype):
    x = np.array([0.5, -3.25, 1e-3], dtype)
    counts = np.zeros(256 << 8, np.int64)
    accumulate(x, counts, 8)
    np.testing.assert_array_equal(counts, reference(x.astype(np.float32), 8)[0])


@pytest.mark.parametrize("values", [[-0.0, 0.0], [0.0, -0.0], [0.0, -0.0, 0.0]])
def test_signed_zeros_order_the_same_whatever_comes_first(values):
    import math

    from int8calib.stats.histogram import ordered_max, ordered_min

    lo, hi = accumulate(np.array(values, np.float32), np.zeros(256 << 8, np.int64), 8)
    assert math.copysign(1, lo) == -1 and math.copysign(1, hi) == 1
    a, b = values[:2]
    assert math.copysign(1, ordered_min(a, b)) == math.copysign(1, ordered_min(b, a)) == -1
    assert math.copysign(1, ordered_max(a, b)) == math.copysign(1, ordered_max(b, a)) == 1
    assert ordered_min(-2.0, 1.0) == -2.0 and ordered_max(-2.0, 1.0) == 1.0


# ---- TensorRT's linear histogram: float32 division done as a float64 product -----------------
positive_f32 = st.floats(2.0**-90, 2.0**90, allow_nan=False, width=32)


@settings(max_examples=400, deadline=None)
@given(hnp.arrays(np.float32, st.integers(1, 64), elements=positive_f32), positive_f32)
def test_linear_bins_are_the_float32_division(values, upper):
    from int8calib.stats.kernels import bin_linear

    upper = np.float32(max(upper, np.abs(values).max()))
    width = np.float32(upper / np.float32(2048))
    counts = np.zeros(2048, np.int64)
    clamped = bin_linear(values, counts, float(width))
    q = (np.abs(values) / width).astype(np.float32)  # numpy: a float32 division
    expected = np.bincount(np.minimum(q.astype(np.int64), 2047), minlength=2048)
    np.testing.assert_array_equal(counts, expected)
    assert clamped == int(np.count_nonzero(q >= 2048))


# ---- one pass for every histogram (kernels.accumulate_all) ------------------------------------
finite32 = st.one_of(st.floats(-1e6, 1e6, width=32), st.sampled_from([0.0, -0.0, 6.0, -6.0, 1e-45, 5.999999, 6.000001]))


@settings(max_examples=150, deadline=None)
@given(
    steps=st.lists(hnp.arrays(np.float32, st.integers(0, 3000), elements=finite32), min_size=1, max_size=4),
    start=st.floats(1e-3, 1e4), signed=st.booleans(), bits=st.booleans(),
)
def test_one_pass_equals_min_max_then_each_histogram(steps, start, signed, bits):
    """accumulate_all (ranges widened block by block as values come) against the separate
    kernels with each range fitted to the whole step's maximum first, steps of one batch."""
    from int8calib.stats.kernels import accumulate_all, bin_linear
    from int8calib.stats.trt_histogram import TrtHistogram

    size = (512 if signed else 256) << 8
    one = [TrtHistogram.starting_at(start), TrtHistogram.starting_at(min(start, 6.0))]
    many = [TrtHistogram.starting_at(start), TrtHistogram.starting_at(min(start, 6.0))]
    counts_one, counts_many = np.zeros(size, np.int64), np.zeros(size, np.int64)
    for values in steps:
        lo, hi, finite = accumulate_checked(values, counts_many, 8, signed)
        if values.size:
            many[0].fit(max(abs(lo), abs(hi)))
            many[0].count_clamped(bin_linear(values, many[0].counts, many[0].width))
            many[1].fit(min(max(hi, 0.0), 6.0))
            many[1].count_clamped(bin_linear(values, many[1].counts, many[1].width, 6.0))
        got = accumulate_all(values, counts_one if bits else None, 8, signed, one[0], (one[1], 6.0))
        assert _same_floats(got, (lo, hi, finite))
    for a, b in zip(one, many):
        np.testing.assert_array_equal(a.counts, b.counts)
        assert (a.range, a.edge) == (b.range, b.edge)
    np.testing.assert_array_equal(counts_one, counts_many if bits else 0)


def _same_floats(a, b) -> bool:
    return [struct.pack("<d", x) if isinstance(x, float) else x for x in a] == [
        struct.pack("<d", x) if isinstance(x, float) else x for x in b
    ]


def test_one_pass_reports_nan_and_inf():
    from int8calib.stats.kernels import accumulate_all
    from int8calib.stats.trt_histogram import TrtHistogram

    for bad in (np.nan, np.inf, -np.inf):
        values = np.arange(5000, dtype=np.float32)
        values[3000] = bad
        assert accumulate_all(values, None, 8, False, TrtHistogram.starting_at(10.0))[2] is False
