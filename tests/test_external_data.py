"""Models whose weights live in external data files (the only way past protobuf's 2 GB): calibrate,
bias-correct and write the Q/DQ model with ``<name>.data`` beside it, weights mapped, not loaded.
benchmarks/large_model.py runs the same on a generated model over 2 GB."""

from __future__ import annotations

import numpy as np
import onnx
import onnxruntime as ort
import pytest
from onnx import TensorProto, helper, numpy_helper

from int8calib.cli import main
from int8calib.passes import measure_shifts
from int8calib.runner.model import FOLDER_KEY, load_model, tensor_array


def wide_cnn(rng) -> onnx.ModelProto:
    """x [N,8,6,6] -> Conv(32, 3x3) -> Relu -> Mul(per-position gain [32,6,6]) -> Conv(16, 1x1) -> y: every
    weight over 4 KB, and the gain, which is not quantized, over 4 KB too."""
    f = np.float32
    inits = {"w1": (rng.standard_normal((32, 8, 3, 3)) * 0.3).astype(f), "b1": rng.standard_normal(32).astype(f) * 0.1,
             "gain": rng.uniform(0.5, 1.5, (32, 6, 6)).astype(f),
             "w2": (rng.standard_normal((16, 32, 1, 1)) * 0.3).astype(f), "b2": np.zeros(16, f)}
    nodes = [helper.make_node("Conv", ["x", "w1", "b1"], ["c1"], "conv1", pads=[1, 1, 1, 1]),
             helper.make_node("Relu", ["c1"], ["r1"], "relu1"),
             helper.make_node("Mul", ["r1", "gain"], ["m"], "gain_mul"),
             helper.make_node("Conv", ["m", "w2", "b2"], ["y"], "conv2")]
    graph = helper.make_graph(nodes, "wide", [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", 8, 6, 6])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["N", 16, 6, 6])],
                              [numpy_helper.from_array(v, k) for k, v in inits.items()])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    return model


@pytest.fixture
def models(tmp_path, rng):
    """The same model twice: weights inside the file, and in external data beside it; and data."""
    model = wide_cnn(rng)
    (tmp_path / "inside").mkdir()
    (tmp_path / "outside").mkdir()
    onnx.save(model, tmp_path / "inside" / "m.onnx")
    onnx.save(model, tmp_path / "outside" / "m.onnx", save_as_external_data=True, location="weights.bin", size_threshold=0)
    np.save(tmp_path / "x.npy", rng.standard_normal((16, 8, 6, 6)).astype(np.float32))
    return tmp_path / "inside" / "m.onnx", tmp_path / "outside" / "m.onnx", tmp_path / "x.npy"


def _session_output(path, x) -> np.ndarray:
    """The written file as a user loads it: ONNX Runtime from the path, its data file found beside it."""
    options = ort.SessionOptions()
    options.add_session_config_entry("session.disable_quant_qdq", "1")  # docs/qdq.md: ORT 1.32's FP16 Q/DQ fusion
    return ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"]).run(["y"], {"x": x})[0]


@pytest.mark.parametrize("high_precision", ["fp16", "fp32"])
def test_external_data_model_gets_the_same_qdq_model_with_its_data_beside_it(models, high_precision):
    inside, outside, data = models
    outputs = []
    for source in (inside, outside):
        out = source.parent / "m.qdq.onnx"
        assert main(["calibrate", str(source), "--data", str(data), "--method", "minmax", "--qdq", str(out),
                     "--high-precision", high_precision, "-q"]) == 0
        outputs.append(out)
    assert not (inside.parent / "m.qdq.onnx.data").exists()  # weights inside the source: inside the result
    data_file = outside.parent / "m.qdq.onnx.data"
    assert data_file.is_file()
    graph_only = onnx.load(outputs[1], load_external_data=False)
    external = {t.name for t in graph_only.graph.initializer if t.data_location == TensorProto.EXTERNAL}
    assert {"w1_int8", "gain"} <= external and "w2_int8" not in external  # under 1 KB (512 int8) stays inside
    assert all(e.key != FOLDER_KEY for t in graph_only.graph.initializer for e in t.external_data)
    onnx.checker.check_model(str(outputs[1]), full_check=True)
    # the two files hold the same model: same tensors, same values
    a, b = onnx.load(outputs[0]), onnx.load(outputs[1])
    assert [n.SerializeToString() for n in a.graph.node] == [n.SerializeToString() for n in b.graph.node]
    values_a = {t.name: numpy_helper.to_array(t) for t in a.graph.initializer}
    values_b = {t.name: numpy_helper.to_array(t) for t in b.graph.initializer}
    assert values_a.keys() == values_b.keys()
    assert all(np.array_equal(values_a[k], values_b[k]) for k in values_a)
    gain = values_b["gain"]
    assert gain.dtype == (np.float16 if high_precision == "fp16" else np.float32)
    x = np.load(data)[:4]
    assert np.array_equal(_session_output(outputs[0], x), _session_output(outputs[1], x))


def test_weights_are_mapped_not_loaded_and_shifts_match(models, monkeypatch):
    inside, outside, data = models
    proto = load_model(outside, load_external_data=False)
    w1 = next(t for t in proto.graph.initializer if t.name == "w1")
    assert not w1.raw_data and isinstance(tensor_array(w1), np.memmap)
    assert np.array_equal(tensor_array(w1), numpy_helper.to_array(onnx.load(inside).graph.initializer[0]))
    x = np.load(data)

    class Batch:
        feeds, n = {"x": x}, len(x)

    mapped = measure_shifts(proto, [Batch()], high_precision="fp16", ranges_of=["c1", "m"])
    loaded = measure_shifts(load_model(inside), [Batch()], high_precision="fp16", ranges_of=["c1", "m"])
    assert mapped.shifts.keys() == loaded.shifts.keys() == {"conv1", "conv2"}
    assert all(np.array_equal(mapped.shifts[k], loaded.shifts[k]) for k in mapped.shifts)
    assert mapped.ranges == loaded.ranges and mapped.ranges["m"] > 0
    # past SHIFT_GROUP_BYTES the layers are measured a group at a time: the same shifts
    monkeypatch.setattr("int8calib.passes.bias_correction.SHIFT_GROUP_BYTES", 1024)
    grouped = measure_shifts(proto, [Batch()], high_precision="fp16", ranges_of=["c1", "m"])
    assert all(np.array_equal(grouped.shifts[k], mapped.shifts[k]) for k in mapped.shifts)
    assert grouped.ranges == mapped.ranges and grouped.samples == mapped.samples == len(x)


def test_from_cache_on_an_external_data_model(models, tmp_path):
    _, outside, data = models
    cache = tmp_path / "c.cache"
    assert main(["calibrate", str(outside), "--data", str(data), "--method", "minmax", "--cache", str(cache), "-q"]) == 0
    out = tmp_path / "outside" / "from_cache.onnx"
    assert main(["calibrate", str(outside), "--from-cache", str(cache), "--qdq", str(out), "-q"]) == 0
    assert (tmp_path / "outside" / "from_cache.onnx.data").is_file()
    y = _session_output(out, np.load(data)[:2])
    assert y.shape == (2, 16, 6, 6) and np.isfinite(y).all()
