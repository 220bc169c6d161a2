"""Statistics: exact merging, the statistics file, and bounds every method respects."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings, strategies as st
from hypothesis.extra.numpy import arrays

from int8calib.errors import StatisticsFormatError
from int8calib.methods import available, compute_amax
from int8calib.stats import Statistics, StatsCollector, TensorHistogram, load, merge, save

finite_float32 = st.floats(allow_nan=False, allow_infinity=False, width=32)
batches = arrays(np.float32, st.integers(0, 60), elements=finite_float32)


def stats_of(*tensors: dict[str, np.ndarray]) -> Statistics:
    """One collector over the given batches, in order."""
    collector = StatsCollector()
    for batch in tensors:
        collector.collect(batch, samples=1)
    return collector.result()


def assert_same(a: Statistics, b: Statistics) -> None:
    assert sorted(a.tensors) == sorted(b.tensors)
    for name in a.tensors:
        ha, hb = a[name], b[name]
        assert np.array_equal(ha.counts, hb.counts), name
        assert (ha.min, ha.max, ha.mantissa_bits) == (hb.min, hb.max, hb.mantissa_bits), name
    assert a.meta.get("samples") == b.meta.get("samples")


@settings(max_examples=60, deadline=None)
@given(batches, batches, batches)
def test_merge_is_associative_commutative_and_equals_one_pass(x, y, z):
    a, b, c = stats_of({"t": x}), stats_of({"t": y, "u": y[:3]}), stats_of({"t": z})
    assert_same(merge(merge(a, b), c), merge(a, merge(b, c)))
    assert_same(merge(a, b), merge(b, a))
    assert_same(merge(merge(a, b), c), stats_of({"t": x}, {"t": y, "u": y[:3]}, {"t": z}))


@settings(max_examples=60, deadline=None)
@given(arrays(np.float32, st.integers(1, 300), elements=finite_float32))
def test_every_method_gives_amax_between_zero_and_max_times_2048_5_over_2048(x):
    h = stats_of({"t": x})["t"]
    top = float(np.max(np.abs(x.astype(np.float64))))
    for method in available():
        amax = compute_amax(method, h)
        bound = np.nextafter(np.float32(top * 2048.5 / 2048), np.float32(np.inf))  # float32 rounding of amax
        assert np.isfinite(amax) and 0.0 <= amax <= bound, (method, amax, top)


def test_merge_of_sharded_data_equals_one_pass_in_any_order(rng):
    data = [rng.standard_normal((5, 17)).astype(np.float32) * s for s in (0.1, 1.0, 30.0, 1e-3)]
    one_pass = stats_of(*({"t": d} for d in data))
    shards = [stats_of({"t": d}) for d in data]
    merged = merge(merge(shards[3], shards[1]), merge(shards[0], shards[2]))
    assert_same(merged, one_pass)
    assert one_pass.meta["samples"] == 4


def test_merge_refuses_different_resolutions():
    from int8calib.errors import Int8CalibError

    with pytest.raises(Int8CalibError, match="mantissa bits"):
        TensorHistogram.empty(8).merge(TensorHistogram.empty(6))


def test_cdf_quantile_and_moments_agree_with_numpy_at_bin_edges(rng):
    x = rng.standard_normal(100_000).astype(np.float32) * 3
    h = stats_of({"t": x})["t"]
    ax = np.abs(x.astype(np.float64))
    points = np.array([0.5, 1.0, 2.0, 4.0, 8.0])  # powers of two are bin edges: no interpolation
    n, m1, m2 = h.partial_moments(points)
    assert np.array_equal(n, [(ax <= p).sum() for p in points])
    np.testing.assert_allclose(m1, [ax[ax <= p].sum() for p in points], rtol=2e-3)
    np.testing.assert_allclose(m2, [(ax[ax <= p] ** 2).sum() for p in points], rtol=4e-3)
    for q in (0.1, 0.5, 0.9, 0.999):  # quantile inverts cdf
        assert h.cdf([h.quantile(q)])[0] == pytest.approx(q * x.size, rel=1e-9)
    assert h.quantile(1.0) == pytest.approx(h.amax)
    assert h.quantile(0.0) <= ax.min()


def test_linear_rebinning_matches_numpy_histogram_on_bin_aligned_data():
    # Values at the centres of the 2048 bins of [0, 32], max exactly 32. With 11 mantissa bits the
    # bit-pattern bins of the top octave [16, 32) are 1/128 wide, half a linear bin, and finer
    # below: every linear edge is a bit-pattern edge, so re-binning moves no count.
    x = (np.arange(2048 * 4) % 2048) / 64.0 + 1 / 128.0
    x[-1] = 32.0
    collector = StatsCollector(mantissa_bits=11)
    collector.collect({"t": x.astype(np.float32)})
    h = collector.result()["t"]
    counts, edges = h.linear(2048)
    expected, _ = np.histogram(x, bins=2048, range=(0.0, 32.0))
    np.testing.assert_allclose(counts, expected, atol=1e-9)
    assert counts.sum() == x.size


def test_statistics_file_round_trip_without_pickle(tmp_path, rng):
    stats = stats_of({"a": rng.standard_normal(1000).astype(np.float32), "b": np.zeros(7, np.float32)}, {"c": np.zeros(0, np.float32)})
    stats.meta.update({"model_sha256": "ab" * 32, "preprocess": {"resize": 256}, "data": ["x.jpg"]})
    path = tmp_path / "stats.npz"
    save(stats, path)
    loaded = load(path)
    assert_same(loaded, stats)
    assert list(loaded.tensors) == ["a", "b", "c"]
    assert loaded.meta == stats.meta
    with np.load(path, allow_pickle=False) as z:  # plain arrays only
        assert {z[k].dtype.kind for k in z.files} <= {"U", "i", "f"}
    save(loaded, tmp_path / "again.npz")
    assert (tmp_path / "again.npz").read_bytes() == path.read_bytes()


@pytest.mark.parametrize("content", [b"", b"not a zip", None])
def test_unreadable_statistics_file_is_a_one_line_error(tmp_path, content):
    path = tmp_path / "bad.npz"
    if content is None:
        np.savez(path, something=np.zeros(3))
    else:
        path.write_bytes(content)
    with pytest.raises(StatisticsFormatError, match="bad.npz"):
        load(path)
    with pytest.raises(StatisticsFormatError, match="not found"):
        load(tmp_path / "missing.npz")


def test_submitted_tasks_no_thread_started_run_in_the_waiting_thread(rng):
    """The model's thread histograms queued tasks itself instead of idling: same result,
    and an error in such a task still names the tensor and batch."""
    import threading
    from concurrent.futures import ThreadPoolExecutor

    from int8calib.errors import Int8CalibError

    batch = {f"t{i}": rng.normal(size=100 * (i + 1)).astype(np.float32) for i in range(12)}
    release = threading.Event()
    timer = threading.Timer(20, release.set)  # a wait() that waits fails the assert below instead of hanging
    timer.daemon = True
    timer.start()
    with ThreadPoolExecutor(max_workers=1) as pool:
        pool.submit(release.wait)  # the only thread is busy: every task stays queued
        collector = StatsCollector()
        collector.submit(batch, pool, samples=1)
        collector.wait()
        assert not release.is_set(), "wait() waited for the pool instead of running its tasks"
        assert_same(collector.result(), stats_of(batch))

        bad = dict(batch, t3=np.array([1.0, np.nan], np.float32))
        collector.submit(bad, pool, samples=1)
        with pytest.raises(Int8CalibError, match=r"tensor 't3'.*batch 1"):
            collector.wait()
        release.set()
    timer.cancel()
