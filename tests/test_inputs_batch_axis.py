"""Inputs' batch axes and mixed shapes (#16 points 1 and 2): the batch axis from the model or declared,
inputs without one fed as they are, samples of different shapes batched in groups of equal shape."""

from __future__ import annotations

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

from int8calib.cli import main
from int8calib.runner.model import InputInfo, batch_axes

T = 6


def _stateful_model(path, time: int | str = T) -> None:
    """A streaming model shaped like Silero VAD: x [N, T], state [2, N, 4], sr int64 scalar.
    y = (x @ w + state[0] + state[1]) * sr / 16000 -> [N, 4]; new_state = state + y -> [2, N, 4]."""
    rng = np.random.default_rng(3)
    inits = {"w": rng.standard_normal((T, 4)).astype(np.float32), "axes": np.array([0], np.int64),
             "k": np.array(1 / 16000, np.float32)}
    nodes = [
        helper.make_node("MatMul", ["x", "w"], ["h"], "fc"),
        helper.make_node("ReduceSum", ["state", "axes"], ["s"], "sum", keepdims=0),
        helper.make_node("Add", ["h", "s"], ["a"], "add"),
        helper.make_node("Cast", ["sr"], ["srf"], "cast", to=TensorProto.FLOAT),
        helper.make_node("Mul", ["srf", "k"], ["scale"], "scale"),
        helper.make_node("Mul", ["a", "scale"], ["y"], "mul"),
        helper.make_node("Add", ["state", "y"], ["new_state"], "update"),
    ]
    inputs = [
        helper.make_tensor_value_info("x", TensorProto.FLOAT, ["", time]),
        helper.make_tensor_value_info("state", TensorProto.FLOAT, [2, "", 4]),
        helper.make_tensor_value_info("sr", TensorProto.INT64, []),
    ]
    outputs = [helper.make_tensor_value_info("y", TensorProto.FLOAT, None),
               helper.make_tensor_value_info("new_state", TensorProto.FLOAT, None)]
    graph = helper.make_graph(nodes, "g", inputs, outputs, [numpy_helper.from_array(v, k) for k, v in inits.items()])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    onnx.save(model, path)


def _reference(x, state, sr):
    """The model's activations for one sample, computed in numpy."""
    rng = np.random.default_rng(3)
    w = rng.standard_normal((T, 4)).astype(np.float32)
    y = (x @ w + state.sum(0)) * np.float32(sr / 16000)
    return {"y": y, "new_state": state + y}


def test_batch_axis_rule():
    dyn0, named, fixed = ("N", 3), ("batch", "T"), (1, 3, 8, 8)
    assert batch_axes([("", ""), (2, "", 128), ()]) == [0, 1, None]  # Silero VAD
    assert batch_axes([("batch", "seq"), ("batch", "seq")]) == [0, 0]  # a transformer
    assert batch_axes([named, (2, "batch", 16), (2, "other", 16), (10, 4)]) == [0, 1, None, None]
    assert batch_axes([fixed, (1, 5)]) == [0, 0]  # a fixed-batch model: axis 0 everywhere
    assert batch_axes([dyn0, None]) == [0, 0]  # unknown rank: axis 0, as before
    assert batch_axes([dyn0, (1, "T")]) == [0, None]  # its dynamic axis is named, but not like a batch axis
    assert batch_axes([dyn0, (1, None)]) == [0, 1]  # its only dynamic axis, unnamed


def test_declared_batch_axes_and_their_errors(tmp_path, capsys):
    from int8calib.errors import Int8CalibError
    from int8calib.runner.model import declare_batch_axes, parse_batch_axes

    inputs = [InputInfo("x", ("N", T), np.dtype(np.float32), 0), InputInfo("state", (2, "N", 4), np.dtype(np.float32), 1)]
    out = declare_batch_axes(inputs, parse_batch_axes(["state=none", "x=-2"]))
    assert [i.batch_axis for i in out] == [0, None]
    with pytest.raises(Int8CalibError, match="--batch-axis s=1: the model has no input 's'"):
        declare_batch_axes(inputs, {"s": 1})
    with pytest.raises(Int8CalibError, match=r"--batch-axis state=3: input 'state' has rank 3"):
        declare_batch_axes(inputs, {"state": 3})
    _stateful_model(tmp_path / "m.onnx")
    rc = main(["calibrate", str(tmp_path / "m.onnx"), "--data", str(tmp_path / "none"), "--batch-axis", "state:1",
               "--cache", str(tmp_path / "c")])
    assert rc == 2 and capsys.readouterr().err.strip() == (
        "int8calib: error: --batch-axis state:1: expected NAME=AXIS or NAME=none")


def _write_samples(folder, count=10, seed=0, times=None):
    rng = np.random.default_rng(seed)
    folder.mkdir(exist_ok=True)
    samples = []
    for i in range(count):
        x = rng.standard_normal(T if times is None else times[i % len(times)]).astype(np.float32)
        state = rng.standard_normal((2, 4)).astype(np.float32)
        np.savez(folder / f"s{i:02d}.npz", x=x, state=state, sr=np.array(16000, np.int64))
        samples.append((x, state))
    return samples


def test_state_on_axis_1_and_a_scalar_input_from_npz_files(tmp_path):
    """One .npz per sample (x [T], state [2, 4], sr scalar): batched along x's axis 0 and state's
    axis 1, sr fed as it is; minmax ranges equal numpy's over the samples, for any batch size."""
    from int8calib.api import calibrate

    _stateful_model(tmp_path / "m.onnx")
    samples = _write_samples(tmp_path / "data")
    refs = [_reference(x, s, 16000) for x, s in samples]
    expect = {
        "y": max(float(np.abs(r["y"]).max()) for r in refs),
        "new_state": max(float(np.abs(r["new_state"]).max()) for r in refs),
        "state": max(float(np.abs(s).max()) for _, s in samples),
    }
    results = [calibrate(tmp_path / "m.onnx", str(tmp_path / "data"), method="minmax", batch_size=b) for b in (1, 4)]
    for result in results:
        assert result.samples == 10
        for name, value in expect.items():
            assert result.amax[name] == pytest.approx(value, rel=1e-6), name
    one, four = (r.statistics.tensors for r in results)
    for name in one:
        assert np.array_equal(one[name].counts, four[name].counts) and one[name].max == four[name].max, name

    # The same samples as one batch file: x [10, T], state [2, 10, 4] (batch on axis 1), sr scalar.
    np.savez(tmp_path / "batch.npz", x=np.stack([x for x, _ in samples]), state=np.stack([s for _, s in samples], 1),
             sr=np.array(16000, np.int64))
    batch = calibrate(tmp_path / "m.onnx", str(tmp_path / "batch.npz"), method="minmax", batch_size=3)
    assert batch.samples == 10 and batch.amax == results[0].amax

    # A Polygraphy loader script: each yielded dict is one batch, state batched on axis 1.
    def load_data():
        for start in (0, 3, 7):
            part = samples[start: {0: 3, 3: 7, 7: 10}[start]]
            yield {"x": np.stack([x for x, _ in part]), "state": np.stack([s for _, s in part], 1), "sr": np.array(16000)}

    script = calibrate(tmp_path / "m.onnx", load_data, method="minmax")
    assert script.samples == 10 and script.amax == results[0].amax


def test_samples_of_different_shapes_batch_in_groups(tmp_path):
    """x [N, T] with T dynamic: samples of three lengths, batch size 3, statistics equal to batch size 1's;
    samples whose scalar input differs never share a batch."""
    from int8calib.batching import BatchLoader
    from int8calib.runner import load_model, model_inputs
    from int8calib.sources import resolve

    _stateful_model(tmp_path / "m.onnx", time="T")
    inputs = model_inputs(load_model(tmp_path / "m.onnx"))
    assert [i.batch_axis for i in inputs] == [0, 1, None]
    rng = np.random.default_rng(1)
    (tmp_path / "d").mkdir()
    lengths = [6, 6, 9, 6, 9, 12, 6, 9, 6, 6]
    for i, n in enumerate(lengths):
        np.savez(tmp_path / "d" / f"{i:02d}.npz", x=rng.standard_normal(n).astype(np.float32),
                 state=rng.standard_normal((2, 4)).astype(np.float32), sr=np.array(8000 if i == 9 else 16000))
    samples = resolve(str(tmp_path / "d"), {i.name: i.layout for i in inputs})
    batches = list(BatchLoader(samples, inputs, None, 3, prefetch=0))
    shapes = [(b.feeds["x"].shape, b.feeds["state"].shape, int(b.feeds["sr"])) for b in batches]
    # full groups as they fill, then the partial ones in order of their first sample
    assert shapes == [
        ((3, 6), (2, 3, 4), 16000), ((3, 9), (2, 3, 4), 16000),
        ((1, 12), (2, 1, 4), 16000), ((2, 6), (2, 2, 4), 16000), ((1, 6), (2, 1, 4), 8000),
    ]
    assert [s.path.name for s in batches[0].samples] == ["00.npz", "01.npz", "03.npz"]


def test_grouping_memory_is_bounded():
    """Six shapes in turn with batch size 4: 16 samples wait before any group fills, so the largest
    group (the first seen on a tie) is emitted early: never more than 4 batches' worth held."""
    from int8calib.batching import loader as loader_module
    from int8calib.batching import BatchLoader
    from int8calib.sources import Sample

    inputs = [InputInfo("x", ("N", "T"), np.dtype(np.float32), 0)]
    samples = [Sample(__import__("pathlib").Path(f"{i}.npy")) for i in range(40)]

    class Fake(BatchLoader):
        def load_sample(self, sample):
            i = int(sample.path.stem)
            return {"x": np.full(2 + i % 6, i, np.float32)}

    batches = list(Fake(samples, inputs, None, 4, prefetch=0))
    assert loader_module.MAX_PENDING_BATCHES == 4
    assert sum(b.n for b in batches) == 40 and max(b.n for b in batches) == 4
    assert [int(v) for v in batches[0].feeds["x"][:, 0]] == [0, 6, 12]  # emitted when 16 samples waited
    assert [int(v) for v in batches[1].feeds["x"][:, 0]] == [1, 7, 13]  # 16 waiting again: the next largest
    order = [int(v) for b in batches for v in b.feeds["x"][:, 0]]
    assert sorted(order) == list(range(40))
