"""``int8calib build`` against the stand-in ``tensorrt`` (tests/fake_tensorrt.py): which
route, flags, calibrator and profiles each TensorRT version gets, and the layer summary."""

from __future__ import annotations

import json
import logging
import sys
from pathlib import Path

import numpy as np
import onnx
import pytest

sys.path.insert(0, str(Path(__file__).parent))
import fake_tensorrt  # noqa: E402
from test_tensorrt import relu_model  # noqa: E402

from int8calib.cli import main  # noqa: E402
from int8calib.errors import Int8CalibError  # noqa: E402
from int8calib.tensorrt.build import build_engine, parse_shapes, summarize_layers  # noqa: E402


@pytest.fixture
def model(tmp_path):
    return relu_model(tmp_path / "m.onnx", {"x": ["N", 4]})


@pytest.fixture
def npy(tmp_path):
    arr = (np.arange(24, dtype=np.float32).reshape(6, 4) - 10) / 4
    np.save(tmp_path / "x.npy", arr)
    return tmp_path / "x.npy"


@pytest.fixture
def matmul_model(tmp_path):
    """x [N, 4] @ W [4, 3] -> Relu: a weighted layer, so the Q/DQ model quantizes x."""
    from onnx import helper, numpy_helper

    w = numpy_helper.from_array(np.linspace(-1, 1, 12, dtype=np.float32).reshape(4, 3), "w")
    graph = helper.make_graph(
        [helper.make_node("MatMul", ["x", "w"], ["h"], "fc"), helper.make_node("Relu", ["h"], ["y"], "relu")], "g",
        [helper.make_tensor_value_info("x", onnx.TensorProto.FLOAT, ["N", 4])],
        [helper.make_tensor_value_info("y", onnx.TensorProto.FLOAT, ["N", 3])], [w])
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)], ir_version=8), tmp_path / "mm.onnx")
    return tmp_path / "mm.onnx"


def qdq_scale(network, tensor: str) -> np.ndarray:
    """The scale of ``tensor``'s QuantizeLinear in the model the (stand-in) parser was given."""
    from onnx import numpy_helper

    model = network.onnx_model
    inits = {i.name: numpy_helper.to_array(i) for i in model.graph.initializer}
    casts = {n.output[0]: n.input[0] for n in model.graph.node if n.op_type == "Cast"}
    q = next(n for n in model.graph.node if n.op_type == "QuantizeLinear" and casts.get(n.input[0], n.input[0]) == tensor)
    return inits[q.input[1]]


def build(trt, model, out, precision, **kw):
    kw.setdefault("backend", fake_tensorrt.FakeBackend())
    return build_engine(model, out, precision, trt=trt, **kw)


def test_trt8_int8_uses_flags_precision_constraints_and_a_calibrator(tmp_path, model, npy):
    trt = fake_tensorrt.make("8.6.1")
    cache = tmp_path / "c.cache"
    result = build(trt, model, tmp_path / "m.engine", "int8", data=str(npy), cache=cache, batch_size=4)
    network, config = trt.builds[-1]
    assert result.route == "calibrator"
    assert network.flags == 1 << int(trt.NetworkDefinitionCreationFlag.EXPLICIT_BATCH)
    assert config.flags == {trt.BuilderFlag.INT8, trt.BuilderFlag.PREFER_PRECISION_CONSTRAINTS}
    assert type(config.int8_calibrator).__name__ == "EntropyCalibrator2"
    # Dynamic batch: calibration at the data's shape, engine profile from 1 to the batch size.
    assert config.calibration_profile.shapes == {"x": ((4, 4), (4, 4), (4, 4))}
    assert config.profiles[0].shapes == {"x": ((1, 4), (4, 4), (4, 4))}
    assert config.int8_calibrator.samples_served == 6 and cache.is_file()
    assert result.layer_precisions == {"INT8": 1, "FP32": 1}
    assert json.loads((tmp_path / "m.engine").read_text())["Layers"][0]["Name"] == "conv"
    assert "on 6 samples" in result.calibration

    trt.builds.clear()
    again = build(trt, model, tmp_path / "m2.engine", "best", data=str(npy), cache=cache, batch_size=4)
    assert trt.builds[-1][1].flags == {trt.BuilderFlag.FP16, trt.BuilderFlag.INT8, trt.BuilderFlag.PREFER_PRECISION_CONSTRAINTS}
    assert "from the cache" in again.calibration


def test_trt10_1_int8_builds_the_int8_fp16_qdq_model_strongly_typed(tmp_path, matmul_model, npy):
    model = matmul_model
    trt = fake_tensorrt.make("10.1.0")
    result = build(trt, model, tmp_path / "m.engine", "int8", data=str(npy), method="minmax")
    network, config = trt.builds[-1]
    assert result.route == "qdq"
    assert network.flags == 1 << int(trt.NetworkDefinitionCreationFlag.STRONGLY_TYPED)
    assert config.flags == set() and config.int8_calibrator is None
    # minmax of the data, max |(i - 10) / 4| for i < 24 = 3.25, as a float16 scale: the model is INT8 + FP16
    scale = qdq_scale(network, "x")
    assert scale.dtype == np.float16 and scale == np.float16(3.25 / 127)
    assert result.layer_precisions["INT8"] == 1
    build(trt, model, tmp_path / "m32.engine", "int8", data=str(npy), method="minmax", high_precision="fp32")
    assert qdq_scale(trt.builds[-1][0], "x") == np.float32(3.25 / 127)


def test_trt10_best_builds_the_same_typed_qdq_model(tmp_path, matmul_model):
    model = matmul_model
    trt = fake_tensorrt.make("10.13.3")
    cache = tmp_path / "c.cache"
    cache.write_text("TRT-8601-EntropyCalibration2\nx: 3c010204\n")
    build(trt, model, tmp_path / "m.engine", "best", cache=cache, shapes={"x": (2, 4)})
    network, config = trt.builds[-1]
    assert network.flags == 1 << int(trt.NetworkDefinitionCreationFlag.STRONGLY_TYPED)  # the graph's types decide
    assert config.flags == set()
    assert qdq_scale(network, "x") == np.float16(float.fromhex("0x1.020408p-7"))


def test_explicit_and_implicit_override_the_version_default(tmp_path, model, npy):
    trt = fake_tensorrt.make("8.6.1")
    assert build(trt, model, tmp_path / "a.engine", "int8", data=str(npy), explicit=True).route == "qdq"
    trt10 = fake_tensorrt.make("10.4.0")
    assert build(trt10, model, tmp_path / "b.engine", "int8", data=str(npy), explicit=False).route == "calibrator"
    trt11 = fake_tensorrt.make("11.0.0", calibrators=False)
    with pytest.raises(Int8CalibError, match="no calibrators"):
        build(trt11, model, tmp_path / "c.engine", "int8", data=str(npy), explicit=False)
    with pytest.raises(Int8CalibError, match="method 'percentile' is computed by int8calib"):
        build(trt, model, tmp_path / "d.engine", "int8", data=str(npy), method="percentile", explicit=False)


def test_fp16_and_fp32_need_no_data_but_a_shape_for_dynamic_models(tmp_path, model):
    trt = fake_tensorrt.make("8.6.1")
    with pytest.raises(Int8CalibError, match=r"dynamic inputs \{'x': \[-1, 4\]\}.*--shapes"):
        build(trt, model, tmp_path / "a.engine", "fp16")
    result = build(trt, model, tmp_path / "a.engine", "fp16", shapes={"x": (8, 4)})
    network, config = trt.builds[-1]
    assert config.flags == {trt.BuilderFlag.FP16} and config.int8_calibrator is None
    assert config.profiles[0].shapes == {"x": ((1, 4), (8, 4), (8, 4))}
    assert result.layer_precisions == {"FP16": 1, "FP32": 1}
    build(trt, model, tmp_path / "b.engine", "fp32", shapes={"x": (8, 4)})
    assert trt.builds[-1][1].flags == set()
    with pytest.raises(Int8CalibError, match=r"shape \[8, 5\] do not fit"):
        build(trt, model, tmp_path / "c.engine", "fp32", shapes={"x": (8, 5)})


def test_gpu_without_fast_int8_is_reported_loudly(tmp_path, model, npy, caplog):
    trt = fake_tensorrt.make("8.6.1", fast_int8=False)
    with caplog.at_level(logging.WARNING, logger="int8calib"):
        build(trt, model, tmp_path / "m.engine", "int8", data=str(npy))
    assert "THIS GPU HAS NO FAST INT8" in caplog.text


def test_failed_calibration_writes_no_engine(tmp_path, npy, monkeypatch):
    trt = fake_tensorrt.make("8.6.1")
    other = relu_model(tmp_path / "o.onnx", {"images": [4, 4]})  # static: no profile check first
    # The data feeds 'x' only when the calibrator is built from a model whose input is 'x'.
    from int8calib.tensorrt import build as build_module

    real = build_module.get_class

    def mismatched(name, module):
        cls = real(name, module)
        return lambda data, model, **kw: cls(data, tmp_path / "m_x.onnx", **kw)

    relu_model(tmp_path / "m_x.onnx", {"x": ["N", 4]})
    monkeypatch.setattr(build_module, "get_class", mismatched)
    with pytest.raises(Int8CalibError, match="calibration failed.*'images'"):
        build(trt, other, tmp_path / "m.engine", "int8", data=str(npy))
    assert not (tmp_path / "m.engine").exists()


def test_summarize_layers_golden():
    info = {"Layers": [
        {"Name": "a", "Inputs": [{"Format/Datatype": "Thirty-two wide channel vectorized row major Int8 format"}]},
        {"Name": "b", "Inputs": [{"Format/Datatype": "Row major linear FP16 format"}]},
        {"Name": "c", "Inputs": [{"Format/Datatype": "Half"}]},
        {"Name": "d", "Inputs": [{"Format/Datatype": "Float"}], "Outputs": []},
        {"Name": "e", "Inputs": [], "Outputs": [{"Format/Datatype": "Int8"}]},
        {"Name": "f", "Inputs": [{"Format/Datatype": "N/A due to dynamic shapes"}]},
        "a layer name only",
    ]}
    assert summarize_layers(json.dumps(info)) == {"INT8": 2, "FP16": 2, "FP32": 1, "unknown": 1}
    assert summarize_layers("not json") == {}


def test_parse_shapes():
    assert parse_shapes("input:8x3x224x224, mask:8x128") == {"input": (8, 3, 224, 224), "mask": (8, 128)}
    for bad in ("input", "input:8xx3", "input:0x3", ":8"):
        with pytest.raises(Int8CalibError, match="--shapes"):
            parse_shapes(bad)


def test_cli_build(tmp_path, model, npy, monkeypatch, capsys):
    trt = fake_tensorrt.make("8.6.1")
    monkeypatch.setitem(sys.modules, "tensorrt", trt)
    from int8calib.tensorrt import calibrators

    monkeypatch.setattr(calibrators, "get_backend", lambda choice=None: fake_tensorrt.FakeBackend())
    out = tmp_path / "m.engine"
    code = main(["build", str(model), "--precision", "int8", "--data", str(npy), "--batch-size", "3",
                 "--cache", str(tmp_path / "c.cache"), "-o", str(out), "-q"])
    assert code == 0 and out.is_file()
    assert main(["build", str(model), "--precision", "int8", "-o", str(out)]) == 2
    assert "needs --cache FILE or --data" in capsys.readouterr().err
