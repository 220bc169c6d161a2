"""``complete-cache`` and the adapter's dynamic ranges, on a stand-in TensorRT whose parser names
layers as the public caches show (tests/fake_tensorrt.py): not run on a real TensorRT here."""

from __future__ import annotations

import struct
import sys

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

import fake_tensorrt
import int8calib
from int8calib.cli import main
from int8calib.tensorrt.complete import complete_cache, complete_ranges
from int8calib.writers.cache import read_cache
from trt_cookbook import COOKBOOK_8_6_CONSTANTS, cookbook_8_6_weights


def save(path, nodes, inputs, outputs, inits):
    model = helper.make_model(helper.make_graph(nodes, "m", inputs, outputs, inits), opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    onnx.save(model, str(path))
    return path


def hex_of(scale: float) -> str:
    return struct.pack(">f", scale).hex()


def test_tensorrt_8_6_cookbook_constant_lines(tmp_path):
    """The cookbook's 8.6 network as TensorRT numbered it (02-API/Int8-PTQ: conv, relu, pool twice, flatten,
    two fully connected layers): complete-cache names its four Constant layers 7, 9, 12 and 14 and writes
    the lines TensorRT 8.6 wrote, bit for bit; every other tensor has its line from calibrate."""
    weights = cookbook_8_6_weights()
    w7, b9, w12, b14 = (weights[:n] for _, n, _ in COOKBOOK_8_6_CONSTANTS)
    rng = np.random.default_rng(0)
    out = [f"(Unnamed Layer* {i}) [{kind}]_output" for i, kind in enumerate(
        ["Convolution", "Activation", "Pooling", "Convolution", "Activation", "Pooling", "Shuffle", "Constant",
         "Matrix Multiply", "Constant", "ElementWise", "Activation", "Constant", "Matrix Multiply", "Constant", "ElementWise"])]
    pool = dict(kernel_shape=[2, 2], strides=[2, 2])
    nodes = [
        helper.make_node("Conv", ["inputT0", "c1.w", "c1.b"], [out[0]], pads=[2, 2, 2, 2]),
        helper.make_node("Relu", [out[0]], [out[1]]), helper.make_node("MaxPool", [out[1]], [out[2]], **pool),
        helper.make_node("Conv", [out[2], "c2.w", "c2.b"], [out[3]], pads=[2, 2, 2, 2]),
        helper.make_node("Relu", [out[3]], [out[4]]), helper.make_node("MaxPool", [out[4]], [out[5]], **pool),
        helper.make_node("Reshape", [out[5], "shape"], [out[6]]),
        helper.make_node("MatMul", [out[6], "fc1.w"], [out[8]]), helper.make_node("Add", [out[8], "fc1.b"], [out[10]]),
        helper.make_node("Relu", [out[10]], [out[11]]),
        helper.make_node("MatMul", [out[11], "fc2.w"], [out[13]]), helper.make_node("Add", [out[13], "fc2.b"], [out[15]]),
    ]
    inits = [numpy_helper.from_array(a, n) for n, a in [
        ("c1.w", rng.normal(0, 0.2, (32, 1, 5, 5)).astype(np.float32)), ("c1.b", np.zeros(32, np.float32)),
        ("c2.w", rng.normal(0, 0.05, (64, 32, 5, 5)).astype(np.float32)), ("c2.b", np.zeros(64, np.float32)),
        ("shape", np.array([-1, 3136], np.int64)), ("fc1.w", w7.reshape(3136, 1024)), ("fc1.b", b9.reshape(1, 1024)),
        ("fc2.w", w12.reshape(1024, 10)), ("fc2.b", b14.reshape(1, 10))]]
    model = save(tmp_path / "mnist.onnx", nodes, [helper.make_tensor_value_info("inputT0", TensorProto.FLOAT, [1, 1, 28, 28])],
                 [helper.make_tensor_value_info(out[15], TensorProto.FLOAT, [1, 10])], inits)
    np.save(tmp_path / "x.npy", rng.uniform(0, 1, (2, 1, 28, 28)).astype(np.float32))
    cache = tmp_path / "model.INT8Cache"
    int8calib.calibrate(model, tmp_path / "x.npy", method="entropy2", batch_size=1, cache=cache, trt_version=8600)
    before = cache.read_text()
    assert "[Constant]" not in before  # 8.x: only TensorRT's parser knows these names
    completion = complete_cache(model, cache, trt=fake_tensorrt.make("8.6.0"))
    lines = read_cache(cache).scales
    assert {f"(Unnamed Layer* {layer}) [Constant]_output": hex_of(lines[f"(Unnamed Layer* {layer}) [Constant]_output"])
            for layer, _, _ in COOKBOOK_8_6_CONSTANTS} == {
        f"(Unnamed Layer* {layer}) [Constant]_output": written for layer, _, written in COOKBOOK_8_6_CONSTANTS}
    assert completion.unranged == {} and len(completion.added) == 4
    assert completion.sources["(Unnamed Layer* 12) [Constant]_output"] == (
        "constant layer '(Unnamed Layer* 12) [Constant]' (10240 values of the ONNX constant 'fc2.w')")
    assert cache.read_text().startswith(before)  # the cache's own lines kept byte for byte


@pytest.fixture
def bert_like(tmp_path):
    """x [N, 4, 8] -> MatMul W [8, 8] -> Add bias [8] -> Div by a scalar Constant node: TensorRT 10 broadcasts
    each constant to rank 3 (ONNXTRT_Broadcast_N), as in the MPNet cache."""
    rng = np.random.default_rng(1)
    nodes = [
        helper.make_node("MatMul", ["x", "onnx::MatMul_1347"], ["/q/MatMul_output_0"], name="/q/MatMul"),
        helper.make_node("Add", ["/q/MatMul_output_0", "q.bias"], ["/q/Add_output_0"], name="/q/Add"),
        helper.make_node("Constant", [], ["/Constant_9_output_0"], value=numpy_helper.from_array(np.array(8, np.float32))),
        helper.make_node("Div", ["/q/Add_output_0", "/Constant_9_output_0"], ["/Div_output_0"], name="/Div"),
    ]
    inits = [numpy_helper.from_array(rng.normal(0, 0.1, (8, 8)).astype(np.float32), "onnx::MatMul_1347"),
             numpy_helper.from_array(rng.normal(0, 0.02, 8).astype(np.float32), "q.bias")]
    model = save(tmp_path / "bert.onnx", nodes, [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", 4, 8])],
                 [helper.make_tensor_value_info("/Div_output_0", TensorProto.FLOAT, ["N", 4, 8])], inits)
    np.save(tmp_path / "x.npy", rng.normal(0, 1, (3, 4, 8)).astype(np.float32))
    cache = tmp_path / "calibration.cache"
    int8calib.calibrate(model, tmp_path / "x.npy", method="minmax", batch_size=1, cache=cache, trt_version=101303)
    return model, cache


def test_tensorrt_10_broadcast_copies_take_their_constant_range(bert_like, tmp_path, monkeypatch, capsys):
    model, cache = bert_like
    monkeypatch.setitem(sys.modules, "tensorrt", fake_tensorrt.make("10.13.3"))
    assert main(["complete-cache", str(model), str(cache), "-o", str(tmp_path / "complete.cache")]) == 0
    ours, completed = read_cache(cache).scales, read_cache(tmp_path / "complete.cache").scales
    assert list(completed) == list(ours) + ["ONNXTRT_Broadcast_output", "ONNXTRT_Broadcast_1_output", "ONNXTRT_Broadcast_2_output"]
    # MPNet: each ONNXTRT_Broadcast_N line equals the line of the constant it broadcasts
    assert [completed[f"ONNXTRT_Broadcast{k}_output"] for k in ("", "_1", "_2")] == [
        ours["onnx::MatMul_1347_output"], ours["q.bias_output"], ours["/Constant_9_output_0_output"]]
    assert ours["/Constant_9_output_0_output"] == struct.unpack(">f", bytes.fromhex("3d810204"))[0]  # MPNet's 8.0


def test_tensors_still_without_a_range_are_reported_with_the_reason(bert_like):
    model, cache = bert_like
    trt = fake_tensorrt.make("10.13.3")
    network = trt.Builder(trt.Logger()).create_network()
    trt.OnnxParser(network, None).parse(model.read_bytes())
    last = network.get_layer(network.num_layers - 1).get_output(0)
    network.add_layer(trt.LayerType.SOFTMAX, "Softmax", None, [last], [None])  # a layer TensorRT made
    amax = {n: a for n, a in read_cache(cache).amax.items() if n not in ("x", "/q/MatMul_output_0", "q.bias_output")}
    completion = complete_ranges(trt, network, amax, "minmax", onnx.load(str(model)))
    assert completion.unranged == {
        "x": "a network input the cache has no line for: calibrate with data",
        "/q/MatMul_output_0": "an activation of the ONNX model the cache has no line for: recalibrate (int8calib calibrate)",
        "(Unnamed Layer* 9) [Softmax]_output": "a softmax layer TensorRT made, neither a constant nor a copy: only "
                                                "running the network gives its range (TensorRT's own calibrator, or int8calib build --data)",
    }
    # the bias line was dropped: recomputed from its weights, and its broadcast copies it
    bias = numpy_helper.to_array(next(t for t in onnx.load(str(model)).graph.initializer if t.name == "q.bias"))
    assert completion.added["q.bias_output"] == float(np.abs(bias).max())
    assert completion.added["ONNXTRT_Broadcast_1_output"] == completion.added["q.bias_output"]


def test_the_adapter_sets_dynamic_ranges_the_cache_lacks(tmp_path, monkeypatch):
    """A cache int8calib wrote under an 8.6 header has no line for TensorRT 8.6's numbered constants:
    attaching the calibrator to the network gives them (and their broadcast copies) dynamic ranges."""
    from int8calib.tensorrt import get_class

    rng = np.random.default_rng(2)
    nodes = [helper.make_node("MatMul", ["x", "w"], ["mm"]), helper.make_node("Add", ["mm", "b"], ["y"])]
    model = save(tmp_path / "fc.onnx", nodes, [helper.make_tensor_value_info("x", TensorProto.FLOAT, [2, 4])],
                 [helper.make_tensor_value_info("y", TensorProto.FLOAT, [2, 3])],
                 [numpy_helper.from_array(rng.normal(size=(4, 3)).astype(np.float32), "w"),
                  numpy_helper.from_array(rng.normal(size=3).astype(np.float32), "b")])
    np.save(tmp_path / "x.npy", rng.normal(size=(4, 4)).astype(np.float32))
    cache = tmp_path / "c.cache"
    int8calib.calibrate(model, tmp_path / "x.npy", method="minmax", batch_size=2, cache=cache)
    trt = fake_tensorrt.make("8.6.1")
    monkeypatch.setitem(sys.modules, "tensorrt", trt)
    builder = trt.Builder(trt.Logger())
    network = builder.create_network()
    trt.OnnxParser(network, None).parse(model.read_bytes())
    calibrator = get_class("MinMaxCalibrator", trt)(str(tmp_path / "x.npy"), model=str(model), batch_size=2,
                                                    cache_file=cache, backend=fake_tensorrt.FakeBackend())
    calibrator.attach(builder.create_builder_config(), builder, network)
    ranges = {network.get_layer(i).get_output(0).name: network.get_layer(i).get_output(0).dynamic_range
              for i in range(network.num_layers)}
    w, b = (np.abs(numpy_helper.to_array(t)).max() for t in onnx.load(str(model)).graph.initializer)
    assert ranges == {
        "(Unnamed Layer* 0) [Constant]_output": (-w, w), "mm": None,  # mm's range is the cache's, read by TensorRT
        "(Unnamed Layer* 2) [Constant]_output": (-b, b), "(Unnamed Layer* 3) [Shuffle]_output": (-b, b), "y": None,
    }


def test_complete_cache_without_tensorrt_is_a_one_line_error(bert_like, monkeypatch, capsys):
    model, cache = bert_like
    monkeypatch.setitem(sys.modules, "tensorrt", None)
    assert main(["complete-cache", str(model), str(cache)]) == 2
    err = capsys.readouterr().err
    assert err.startswith("int8calib: error: int8calib complete-cache needs TensorRT's Python package") and err.count("\n") == 1
