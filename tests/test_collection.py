"""Collection at scale: sub-batches, worker processes, shards + merge, external data.

Every way of splitting the work must give the very same statistics and cache bytes
as one plain run, because histogram counts are integer sums.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

from int8calib.api import calibrate
from int8calib.batching import parse_shard, prefetch, shard
from int8calib.calibrator import Calibrator
from int8calib.collection import collect_statistics, parse_size
from int8calib.cli import main
from int8calib.errors import Int8CalibError
from int8calib.runner import ActivationRunner
from int8calib.stats import load

REPO = Path(__file__).resolve().parents[1]


def _model(seed: int = 0) -> onnx.ModelProto:
    """input [N,3,8,8] -> Conv -> Clip(0,6) -> Mul -> GlobalAveragePool -> Flatten: 6 calibrated tensors."""
    rng = np.random.default_rng(seed)
    w = numpy_helper.from_array(rng.standard_normal((4, 3, 3, 3)).astype(np.float32), "w")
    lo = numpy_helper.from_array(np.array(0.0, np.float32), "lo")
    hi = numpy_helper.from_array(np.array(6.0, np.float32), "hi")
    k = numpy_helper.from_array(np.array(0.5, np.float32), "k")
    nodes = [
        helper.make_node("Conv", ["input", "w"], ["conv"], pads=[1, 1, 1, 1]),
        helper.make_node("Clip", ["conv", "lo", "hi"], ["clip"]),
        helper.make_node("Mul", ["clip", "k"], ["scaled"]),
        helper.make_node("GlobalAveragePool", ["scaled"], ["pool"]),
        helper.make_node("Flatten", ["pool"], ["logits"]),
    ]
    graph = helper.make_graph(
        nodes, "small", [helper.make_tensor_value_info("input", TensorProto.FLOAT, ["N", 3, 8, 8])],
        [helper.make_tensor_value_info("logits", TensorProto.FLOAT, ["N", 4])], [w, lo, hi, k],
    )
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])


@pytest.fixture
def setup(tmp_path):
    model = tmp_path / "small.onnx"
    onnx.save(_model(), str(model))
    data = tmp_path / "data.npy"
    np.save(data, np.random.default_rng(3).standard_normal((23, 3, 8, 8)).astype(np.float32) * 2)
    return model, data


def _same(a, b):
    assert list(a.tensors) == list(b.tensors)
    for name in a.tensors:
        np.testing.assert_array_equal(a[name].counts, b[name].counts, err_msg=name)
        assert (a[name].min, a[name].max) == (b[name].min, b[name].max)
    assert a.meta["samples"] == b.meta["samples"]


def _collect(model, data, batch_size=32, max_memory=None, tensors=None):
    runner = ActivationRunner(model, tensors=tensors)
    calibrator = Calibrator(str(data), runner.inputs, None, batch_size)
    return collect_statistics(calibrator.loader, runner, max_memory=max_memory)


def test_sub_batches_give_identical_statistics(setup):
    model, data = setup
    whole = _collect(model, data, batch_size=32, max_memory="1G")  # 23 samples in one run
    per_sample = _collect(model, data, batch_size=32, max_memory=1)  # one sample per run
    odd_batches = _collect(model, data, batch_size=5, max_memory=3 * 4 * 1400)  # a few samples per run
    assert whole.meta["samples"] == 23
    assert sum(whole["conv"].counts) == 23 * 4 * 8 * 8
    _same(whole, per_sample)
    _same(whole, odd_batches)
    # The histogram is of the model's real activations: its max equals ONNX Runtime's own output.
    import onnxruntime as ort

    session = ort.InferenceSession(str(model), providers=["CPUExecutionProvider"])
    logits = session.run(None, {"input": np.load(data)})[0]
    assert whole["logits"].max == float(logits.max()) and whole["logits"].min == float(logits.min())


def test_tensor_selection_keeps_those_histograms_unchanged(setup):
    model, data = setup
    full = _collect(model, data)
    part = _collect(model, data, tensors=["clip", "logits"])
    assert list(part.tensors) == ["clip", "logits"]
    for name in part.tensors:
        np.testing.assert_array_equal(part[name].counts, full[name].counts)
    with pytest.raises(Int8CalibError, match="nope"):
        ActivationRunner(model, tensors=["nope"])


def test_workers_give_the_same_cache_bytes(setup, tmp_path):
    model, data = setup
    one = calibrate(model, str(data), cache=tmp_path / "one.cache", histograms=tmp_path / "one.npz")
    two = calibrate(model, str(data), cache=tmp_path / "two.cache", histograms=tmp_path / "two.npz", workers=2)
    assert (tmp_path / "one.cache").read_bytes() == (tmp_path / "two.cache").read_bytes()
    _same(one.statistics, two.statistics)
    assert one.statistics.meta == two.statistics.meta


def test_shards_merge_to_the_single_run(setup, tmp_path, capsys):
    model, data = setup
    assert main([
        "calibrate", str(model), "--data", str(data), "--cache", str(tmp_path / "single.cache"),
        "--histograms", str(tmp_path / "single.npz"), "--batch-size", "4", "--method", "entropy2", "-q",
    ]) == 0  # entropy2 (TensorRT's histograms) needs the same first batch: every shard takes the whole data's
    parts = []
    for k in (1, 2, 3):
        out = tmp_path / f"shard_{k}.npz"
        step = ["--max-memory", "1"] if k == 2 else []  # one sample per run in this shard
        assert main(["collect", str(model), "--data", str(data), "--shard", f"{k}/3", "-o", str(out), "--batch-size", "4", "-q", *step]) == 0
        parts.append(str(out))
    assert [load(p).meta["samples"] for p in parts] == [7, 8, 8]
    merged = tmp_path / "merged.npz"
    assert main(["merge", *reversed(parts), "-o", str(merged), "-q"]) == 0
    assert main(["calibrate", "--from-histograms", str(merged), "--cache", str(tmp_path / "merged.cache"), "--method", "entropy2", "-q"]) == 0
    assert (tmp_path / "merged.cache").read_bytes() == (tmp_path / "single.cache").read_bytes()
    single, combined = load(tmp_path / "single.npz"), load(merged)
    _same(single, combined)
    assert combined.meta == single.meta  # the merge is indistinguishable from one run

    # Misuse: a shard twice, a missing shard, another model's statistics.
    assert main(["merge", parts[0], parts[0], parts[1], parts[2], "-o", str(tmp_path / "x.npz")]) == 2
    assert "also in" in capsys.readouterr().err
    assert main(["merge", parts[0], parts[1], "-o", str(tmp_path / "x.npz")]) == 2
    assert "3/3 missing" in capsys.readouterr().err
    assert main(["merge", parts[0], parts[1], "-o", str(tmp_path / "x.npz"), "--allow-partial"]) == 0
    capsys.readouterr()
    assert main(["collect", str(model), "--data", str(data), "-o", str(tmp_path / "y.npz"), "--max-memory", "lots"]) == 2
    assert "memory size" in capsys.readouterr().err and not (tmp_path / "y.npz").exists()
    other = tmp_path / "other.onnx"
    onnx.save(_model(seed=1), str(other))
    assert main(["collect", str(other), "--data", str(data), "--shard", "3/3", "-o", str(tmp_path / "o3.npz"), "-q"]) == 0
    capsys.readouterr()
    assert main(["merge", parts[0], parts[1], str(tmp_path / "o3.npz"), "-o", str(tmp_path / "x.npz")]) == 2
    err = capsys.readouterr().err
    assert "different model" in err and "o3.npz" in err and err.count("\n") == 1
    assert load(tmp_path / "x.npz").meta["samples"] == 15  # the partial merge's output is left as it was


def test_external_data_model_calibrates_like_the_inline_one(setup, tmp_path):
    model, data = setup
    inline = calibrate(model, str(data), cache=tmp_path / "inline.cache")
    folder = tmp_path / "ext"
    folder.mkdir()
    onnx.save(_model(), str(folder / "big.onnx"), save_as_external_data=True, location="big.weights", size_threshold=0)
    assert (folder / "big.weights").stat().st_size > 0
    # Run from another folder: the weights must be found beside the model, not in the cwd.
    code = (
        "import sys; from int8calib.api import calibrate; "
        f"calibrate({str(folder / 'big.onnx')!r}, {str(data)!r}, cache={str(tmp_path / 'ext.cache')!r})"
    )
    env = {**os.environ, "PYTHONPATH": str(REPO / "src")}
    subprocess.run([sys.executable, "-c", code], check=True, cwd=tmp_path.anchor, env=env)
    assert (tmp_path / "ext.cache").read_bytes() == (tmp_path / "inline.cache").read_bytes()
    # and the Mul's constant, which TensorRT 10 calibrates as 'k_output' (not in a cache with an 8.x header)
    assert list(inline.amax) == ["input", "conv", "clip", "scaled", "pool", "logits", "k_output"]


def test_prefetch_keeps_order_and_reraises():
    assert list(prefetch(range(10), depth=2)) == list(range(10))

    def failing():
        yield 1
        raise Int8CalibError("bad image")

    it = prefetch(failing(), depth=1)
    assert next(it) == 1
    with pytest.raises(Int8CalibError, match="bad image"):
        next(it)


def test_shard_slices_are_disjoint_and_complete():
    items = list(range(11))
    parts = [shard(items, k, 4) for k in range(1, 5)]
    assert sum(parts, []) == items
    assert [len(p) for p in parts] == [2, 3, 3, 3]
    assert parse_shard("2/4") == (2, 4)
    for bad in ("0/4", "5/4", "2", "a/b"):
        with pytest.raises(Int8CalibError):
            parse_shard(bad)


def test_parse_size():
    assert parse_size("1.5G") == 3 << 29
    assert parse_size("800M") == 800 << 20
    assert parse_size("2GiB") == 2 << 30
    assert parse_size("4096") == 4096
    for bad in ("-1G", "lots", "0"):
        with pytest.raises(Int8CalibError):
            parse_size(bad)


def test_steps_split_a_batch_evenly_under_the_memory_cap():
    from int8calib.batching import Batch
    from int8calib.collection.steps import _steps, _StepSizer

    def sizes(n, rows, measured=True):
        sizer = _StepSizer(1 << 30)
        sizer.rows = rows if measured else None
        batch = Batch({"x": np.arange(n, dtype=np.float32)[:, None]}, n, [])
        steps = list(_steps(batch, sizer, None))
        assert np.concatenate([f["x"][:, 0] for f, _ in steps]).tolist() == list(range(n))  # every row once, in order
        assert all(f["x"].shape[0] == k for f, k in steps)
        return [k for _, k in steps]

    assert sizes(32, 12) == [11, 11, 10]  # not 12, 12, 8: equal allocations keep peak memory flat
    assert sizes(20, 12) == [10, 10]
    assert sizes(12, 12) == [12] and sizes(5, 1) == [1] * 5 and sizes(7, 100) == [7]
    assert sizes(3, 12, measured=False) == [1, 1, 1]  # before the first measurement, one sample per run


def test_step_size_follows_the_memory_budget_and_grows_for_many_small_tensors():
    from int8calib.collection.steps import _StepSizer

    def rows(max_memory, tensors, values_per_sample, samples=2):
        sizer = _StepSizer(max_memory)
        per_tensor = values_per_sample // tensors
        sizer.measure({f"t{i}": np.zeros((samples, per_tensor), np.float32) for i in range(tensors)}, samples)
        return sizer.rows

    MB = 1 << 20
    # EfficientNet-Lite0-like: 62 tensors, 7 M values (28 MB) per sample. 256 MiB / (3 x 28 MB) -> 3 samples;
    # 115 k values per tensor per sample already exceed the 65,536 a step should hold: no growth.
    assert rows(None, 62, 62 * 115_000) == 268_435_456 // (3 * 62 * 115_000 * 4) == 3
    # 1,051 tensors of 2,925 values (12.3 MB per sample): the budget alone allows 7 samples; steps grow to
    # ceil(65,536 / 2,925) = 23 samples, within 1 GiB / (3 x 12.3 MB) = 29.
    assert rows(None, 1051, 1051 * 2925) == 23
    # ... but never past 1 GiB: 10,000 tensors of 100 values (4 MB per sample) would want ceil(65,536 / 100)
    # = 656 samples; 1 GiB / (3 x 4 MB) allows 89.
    assert rows(None, 10_000, 10_000 * 100) == (1 << 30) // (3 * 10_000 * 100 * 4) == 89
    # An explicit budget is a hard cap, many small tensors or not.
    assert rows(256 * MB, 1051, 1051 * 2925) == 268_435_456 // (3 * 1051 * 2925 * 4) == 7
    assert rows(1, 62, 62 * 1000) == 1
