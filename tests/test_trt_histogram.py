"""TensorRT's calibration histogram (range from the first batch, doubling) against a direct build."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import assume, given, settings
from hypothesis import strategies as st
from hypothesis.extra.numpy import arrays

from entropy_reference import trt_histogram
from int8calib.stats import StatsCollector, merge
from int8calib.stats.trt_histogram import TrtHistogram

batch_values = arrays(
    np.float32, st.integers(1, 40),
    elements=st.floats(-1e4, 1e4, allow_nan=False, allow_subnormal=False, width=32) | st.sampled_from([0.0, 1.0, 2.0, 4.0, 8.0, -0.5]),
)


def collect_in_steps(batches, step: int, first_from_prepass: bool):
    """Batches fed in steps of ``step`` values, as collection does under a memory budget."""
    collector = StatsCollector()
    if first_from_prepass:
        collector.set_first_batch({"t": (float(batches[0].min()), float(batches[0].max()))})
    for batch in batches:
        for start in range(0, batch.size, step):
            collector.collect({"t": batch[start : start + step]}, new_batch=start == 0)
    return collector.result()["t"].trt


@settings(max_examples=150, deadline=None)
@given(st.lists(batch_values, min_size=1, max_size=6), st.integers(1, 50))
def test_histogram_in_steps_equals_tensorrt_batch_by_batch(batches, step):
    assume(np.abs(batches[0]).max() > 0)  # all-zero first batches: see the test below
    counts, upper = trt_histogram(batches)
    whole = collect_in_steps(batches, 10**6, first_from_prepass=False)
    stepped = collect_in_steps(batches, step, first_from_prepass=True)
    for got in (whole, stepped):
        assert got.range == upper and got.first_max == float(np.float32(np.abs(batches[0]).max()))
        np.testing.assert_array_equal(got.counts, counts)


def test_doubling_merges_bin_pairs_and_keeps_the_first_range():
    collector = StatsCollector()
    collector.collect({"t": np.array([1.0, 0.25], np.float32)})  # range 1: bins of 1/2048
    collector.collect({"t": np.array([3.0], np.float32)})  # range doubles twice to 4
    trt = collector.result()["t"].trt
    assert (trt.first_max, trt.range) == (1.0, 4.0)
    expected = np.zeros(2048, np.int64)
    expected[2047 >> 2] += 1  # 1.0 was clamped into bin 2047 of range 1, then moved with it
    expected[(512 >> 2)] += 1  # 0.25 at bin 512, now 128
    expected[1536] += 1  # 3.0 / (4 / 2048)
    np.testing.assert_array_equal(trt.counts, expected)


def test_value_at_the_edge_moves_up_when_its_own_batch_doubles():
    # One batch in two steps: TensorRT sees the whole batch's max first and bins 1.0 at range 2
    # (bin 1024); binning it at range 1 (clamped to 2047) and doubling must give the same.
    collector = StatsCollector()
    collector.collect({"t": np.array([1.0], np.float32)})  # batch 1: range 1
    collector.collect({"t": np.array([1.0], np.float32)}, new_batch=True)  # batch 2, step 1: clamped
    collector.collect({"t": np.array([1.5], np.float32)}, new_batch=False)  # batch 2, step 2: doubles
    trt = collector.result()["t"].trt
    assert trt.range == 2.0
    assert trt.counts[1023] == 1 and trt.counts[1024] == 1 and trt.counts[1536] == 1


def test_merge_of_shards_on_the_same_first_batch_equals_one_run(rng):
    batches = [rng.standard_normal(50).astype(np.float32) * s for s in (1.0, 3.0, 0.5, 9.0)]
    first = {"t": (float(batches[0].min()), float(batches[0].max()))}

    def run(part):
        collector = StatsCollector()
        collector.set_first_batch(first)
        for b in part:
            collector.collect({"t": b})
        return collector.result()

    whole = run(batches)["t"].trt
    merged = merge(run(batches[:2]), run(batches[2:]))["t"].trt
    assert merged.range == whole.range
    np.testing.assert_array_equal(merged.counts, whole.counts)
    # Shards that started from different first batches: TensorRT's order is lost.
    alone = StatsCollector()
    alone.collect({"t": batches[2]})
    assert merge(run(batches[:2]), alone.result())["t"].trt is None


def test_relu_and_clip_outputs_get_their_own_histograms_from_the_input():
    x = np.array([-3.0, -0.0, 0.5, 2.0, 7.5, 9.0], np.float32)
    collector = StatsCollector(signed={"x"}, derived={"relu": ("x", np.inf), "clip": ("x", 6.0)})
    collector.collect({"x": x})
    stats = collector.result()
    for name, y in (("x", np.abs(x)), ("relu", np.maximum(x, 0)), ("clip", np.clip(x, 0, 6))):
        counts, upper = trt_histogram([y])
        assert stats[name].trt.range == upper, name
        np.testing.assert_array_equal(stats[name].trt.counts, counts, err_msg=name)


def test_statistics_file_round_trips_the_tensorrt_histograms(tmp_path, rng):
    from int8calib.stats import load, save

    collector = StatsCollector()
    for s in (1.0, 4.0):
        collector.collect({"a": rng.standard_normal(100).astype(np.float32) * s, "b": np.zeros(3, np.float32)})
    stats = collector.result()
    save(stats, tmp_path / "s.npz")
    back = load(tmp_path / "s.npz")
    for name in ("a", "b"):
        assert (back[name].trt.first_max, back[name].trt.range) == (stats[name].trt.first_max, stats[name].trt.range)
        np.testing.assert_array_equal(back[name].trt.counts, stats[name].trt.counts)


def test_zeros_before_the_first_non_zero_values_stay_in_bin_0():
    # TensorRT's behaviour on an all-zero first batch is not known (docs/methods.md): the
    # first non-zero values start the range.
    collector = StatsCollector()
    collector.collect({"t": np.zeros(5, np.float32)})
    assert collector.result()["t"].trt.range == 0
    collector.collect({"t": np.array([0.0, 3.0], np.float32)})
    trt = collector.result()["t"].trt
    assert (trt.first_max, trt.range, trt.counts[0], trt.counts[2047], trt.total) == (3.0, 3.0, 6, 1, 7)


def test_starting_range_is_float32():
    assert TrtHistogram.starting_at(0.1).range == float(np.float32(0.1))
    with pytest.raises(ValueError):
        _filled(TrtHistogram.starting_at(1.0)).merge(_filled(TrtHistogram.starting_at(2.0)))


def _filled(h: TrtHistogram) -> TrtHistogram:
    h.counts[3] = 1
    return h
