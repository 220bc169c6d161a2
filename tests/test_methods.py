"""Each calibration method against answers known by hand or computed independently."""

from __future__ import annotations

import numpy as np
import pytest

from entropy_reference import kl_divergences_loop
from int8calib.errors import Int8CalibError
from int8calib.methods import available, compute_amax, compute_all
from int8calib.methods.entropy import kl_bins, kl_divergences, trt_threshold
from int8calib.stats import Statistics, StatsCollector

ALL_METHODS = ["entropy2", "entropy2-stable", "entropy", "minmax", "percentile", "mse", "legacy"]


def histogram_of(values: np.ndarray):
    collector = StatsCollector()
    collector.collect({"t": np.asarray(values, dtype=np.float32)})
    return collector.result()["t"]


def fine_bin_width(value: float, mantissa_bits: int = 8) -> float:
    """Width of the bit-pattern bin holding ``value``: the statistics' resolution there."""
    return 2.0 ** (np.floor(np.log2(value)) - mantissa_bits)


def brute_force_mse_amax(samples: np.ndarray, grid: np.ndarray) -> float:
    """The amax on ``grid`` with the smallest squared error of symmetric INT8 fake quantization."""
    x = np.abs(samples.astype(np.float64))
    errors = [np.sum((np.clip(np.round(x / (t / 127)), 0, 127) * (t / 127) - x) ** 2) for t in grid]
    return float(grid[int(np.argmin(errors))])


def test_all_methods_registered_with_their_cache_algorithm():
    from int8calib.methods import get

    assert available() == ALL_METHODS
    assert {m: get(m).algorithm for m in ALL_METHODS} == {
        "entropy2": "EntropyCalibration2",
        "entropy2-stable": "EntropyCalibration2",
        "entropy": "EntropyCalibration",
        "minmax": "MinMaxCalibration",
        "percentile": "EntropyCalibration2",
        "mse": "EntropyCalibration2",
        "legacy": "LegacyCalibration",
    }


# ---- entropy: golden values on hand-made 2048-bin histograms ------------------------------
def test_entropy_flat_histogram_keeps_full_range():
    # i = 2048: 16 equal bins per level, Q == P, KL = 0; any smaller i folds a tail onto one bin.
    assert trt_threshold(np.full(2048, 7.0), 1.0) == 2048.5


@pytest.mark.parametrize("k, expected", [(500, 501.5), (2047, 2048.5), (3, 128.5)])
def test_entropy_all_mass_in_one_bin(k, expected):
    # KL is 0 for every i > k (P and Q both a single spike); for i <= k the folded mass lands
    # on a bin Q leaves empty (smoothed to eps): a large divergence. The smallest i > k wins,
    # never below 128.
    h = np.zeros(2048)
    h[k] = 1234.0
    assert trt_threshold(h, 1.0) == expected


def test_entropy_clips_a_thin_heavy_tail():
    # An exponential bulk (scale 40 bins) plus one count every 5 bins up to the max: the golden
    # value comes from the independent loop implementation (tests/entropy_reference.py).
    j = np.arange(2048)
    h = np.round(1e6 * np.exp(-j / 40.0)) + (j % 5 == 0)
    h[0] = 0  # the search discards bin 0
    assert 128 + int(np.nanargmin(kl_divergences_loop(h))) == 426
    assert trt_threshold(h, 1.0) == 426.5


def test_entropy_discards_bin_0():
    # A flat |x| histogram plus a large spike of Relu zeros in bin 0: the spike is discarded, the
    # range kept. Without the discard the spike dominates every wide level 0 and the search
    # stops at its smallest candidate.
    h = np.full(2048, 7.0)
    h[0] = 1e6
    assert trt_threshold(h, 1.0) == 2048.5
    assert 128 + int(np.nanargmin(kl_divergences_loop(h))) == 128
    values = np.concatenate([np.zeros(100_000), np.arange(2048) + 0.5])
    values[-1] = 2048.0
    assert compute_amax("entropy2", histogram_of(values)) == 2048.5


def test_entropy_of_all_zero_tensor_is_zero():
    for method in ("entropy2", "entropy", "entropy2-stable"):
        assert compute_amax(method, histogram_of(np.zeros(1000))) == 0.0
    assert np.isinf(kl_divergences(np.zeros(2048))).all()


def test_entropy_full_range_pick_from_data_is_max_times_2048_5_over_2048():
    # 2048 values at the centres of the 2048 linear bins, the max at the top edge: flat.
    values = np.arange(2048) + 0.5
    values[-1] = 2048.0
    assert compute_amax("entropy2", histogram_of(values)) == 2048.5
    assert compute_amax("entropy2-stable", histogram_of(values)) == pytest.approx(2048.5, rel=1e-6)


def test_a_few_values_keep_the_whole_range():
    # A 4-element tensor (a BatchNorm vector): every level holds at most one value, Q == P at
    # i = 2048 and the max's bin needs every bin.
    values = np.array([0.25, -1.5, 2.0, 3.0], np.float32)
    assert compute_amax("entropy2", histogram_of(values)) == float(np.float32(2048.5) * np.float32(3.0 / 2048))


@pytest.mark.parametrize("seed", range(10))
def test_compiled_kl_equals_the_loop_reference(seed):
    rng = np.random.default_rng(seed)
    n = int(rng.integers(128, 2049)) if seed % 3 else 2048
    decay = np.exp(-np.arange(n) / rng.uniform(20, 2000))
    h = np.round(rng.exponential(size=n) * (rng.random(n) < rng.uniform(0.05, 1.0)) * decay * rng.uniform(1, 1e5))
    h[0] = 0  # as the search does
    fast, slow = kl_divergences(h), kl_divergences_loop(h)
    assert np.array_equal(np.isinf(fast), np.isinf(slow)) and np.array_equal(np.isnan(fast), np.isnan(slow))
    finite = np.isfinite(slow)
    np.testing.assert_allclose(fast[finite], slow[finite], rtol=0, atol=1e-11)
    assert kl_bins(h) == 128 + int(np.nanargmin(slow))


# ---- minmax, percentile, legacy ------------------------------------------------------------
def test_minmax_and_percentile_on_uniform_data(rng):
    x = rng.uniform(-10.0, 10.0, 1_000_000).astype(np.float32)
    h = histogram_of(x)
    assert compute_amax("minmax", h) == float(np.abs(x).max())
    for p in (50.0, 99.0, 99.99):
        got = compute_amax("percentile", h, percentile=p)
        assert got == pytest.approx(10.0 * p / 100, abs=0.01)  # |x| is uniform on [0, 10]
        assert abs(got - np.percentile(np.abs(x), p)) <= fine_bin_width(got)
    assert compute_amax("percentile", h, percentile=100.0) == pytest.approx(float(np.abs(x).max()))


@pytest.mark.parametrize("dist", ["gaussian", "laplacian"])
def test_percentile_matches_numpy_within_bin_resolution(rng, dist):
    x = (rng.standard_normal(500_000) if dist == "gaussian" else rng.laplace(size=500_000)).astype(np.float32)
    h = histogram_of(x)
    for p in (90.0, 99.0, 99.9, 99.99):
        got = compute_amax("percentile", h, percentile=p)
        expected = np.percentile(np.abs(x.astype(np.float64)), p)
        assert abs(got - expected) <= fine_bin_width(expected), (p, got, expected)


@pytest.mark.parametrize("dist", ["gaussian", "laplacian"])
def test_mse_matches_brute_force_minimisation_within_1_percent(rng, dist):
    x = (rng.standard_normal(300_000) if dist == "gaussian" else rng.laplace(size=300_000)).astype(np.float32)
    top = float(np.abs(x).max())
    best = brute_force_mse_amax(x, np.linspace(0.2 * top, top, 1601))
    got = compute_amax("mse", histogram_of(x))
    assert got == pytest.approx(best, rel=0.01)


def test_legacy_is_quantile_capped_by_regression_cutoff(rng):
    x = rng.standard_normal(200_000).astype(np.float32)
    h = histogram_of(x)
    top = float(np.abs(x).max())
    assert compute_amax("legacy", h, quantile=0.99) == pytest.approx(compute_amax("percentile", h, percentile=99.0))
    assert compute_amax("legacy", h, quantile=1.0, regression_cutoff=1.0) == pytest.approx(top)
    assert compute_amax("legacy", h, quantile=1.0, regression_cutoff=0.5) == pytest.approx(0.5 * top)
    with pytest.raises(Int8CalibError):
        compute_amax("legacy", h, quantile=1.5)


def test_bad_parameters_are_user_errors(rng):
    h = histogram_of(rng.standard_normal(100))
    for p in (0.0, -1.0, 100.5):
        with pytest.raises(Int8CalibError, match="percentile"):
            compute_amax("percentile", h, percentile=p)
    with pytest.raises(Int8CalibError, match="no parameter"):
        compute_amax("mse", h, percentile=99.0)
    with pytest.raises(Int8CalibError, match="no method takes"):
        compute_all(Statistics({"t": h}), bogus=1)


# ---- outliers --------------------------------------------------------------------------------
def test_entropy_percentile_mse_clip_heavy_outliers_and_minmax_does_not(rng):
    # A million Gaussian values (|x| < 5.5) and three outliers 25 sigma out. Clipping them costs
    # 3 * 20^2 of squared error, keeping them (25/127)^2/12 per value, 3.2e3 in all: mse clips.
    x = np.concatenate((rng.standard_normal(1_000_000), [25.0, -25.0, 24.0])).astype(np.float32)
    h = histogram_of(x)
    assert compute_amax("minmax", h) == 25.0
    for method in ("entropy2", "entropy2-stable", "entropy", "percentile", "mse"):
        assert 3.0 < compute_amax(method, h) < 8.0, method


def test_every_method_handles_empty_and_zero_tensors():
    for values in (np.zeros(0), np.zeros(10)):
        h = histogram_of(values)
        assert all(compute_amax(m, h) == 0.0 for m in ALL_METHODS)


def test_compute_all_routes_parameters_to_the_methods_that_take_them(rng):
    stats = Statistics({"a": histogram_of(rng.standard_normal(10_000)), "b": histogram_of(rng.laplace(size=9_000))})
    ranges, seconds = compute_all(stats, percentile=99.0, quantile=0.9)
    assert list(ranges) == ALL_METHODS and list(seconds) == ALL_METHODS
    for name in ("a", "b"):
        assert ranges["percentile"][name] == compute_amax("percentile", stats[name], percentile=99.0)
        assert ranges["legacy"][name] == compute_amax("legacy", stats[name], quantile=0.9)
        assert ranges["entropy"][name] == ranges["entropy2"][name]
        assert ranges["mse"][name] == compute_amax("mse", stats[name])
