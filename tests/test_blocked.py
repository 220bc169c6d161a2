"""Reading activations in ONNX Runtime's blocked layout (runner.blocked) changes no statistic."""

from __future__ import annotations

import platform

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

from int8calib.calibrator import Calibrator
from int8calib.collection import collect_statistics
from int8calib.runner import ActivationRunner
from int8calib.runner.blocked import blocked_model
from int8calib.runner.onnxrt import _expose

X86 = platform.machine().lower() in ("x86_64", "amd64")


def _mbconv_model() -> onnx.ModelProto:
    """A MobileNet-like stack: Conv + ReLU6 pairs, a depthwise conv, a residual Add and
    channel counts that are (32) and are not (24, 40) multiples of the CPU's block."""
    rng = np.random.default_rng(0)
    inits, nodes = [], []

    def conv(x, out, cin, cout, k=1, group=1):
        w = (rng.standard_normal((cout, cin // group, k, k)) / np.sqrt(cin // group * k * k)).astype(np.float32)
        b = rng.standard_normal(cout).astype(np.float32) * 0.5
        inits.extend([numpy_helper.from_array(w, f"{out}.w"), numpy_helper.from_array(b, f"{out}.b")])
        nodes.append(helper.make_node("Conv", [x, f"{out}.w", f"{out}.b"], [out], group=group, pads=[k // 2] * 4))
        return out

    def relu6(x, out):
        nodes.append(helper.make_node("Clip", [x, "zero", "six"], [out]))
        return out

    inits += [numpy_helper.from_array(np.array(0, np.float32), "zero"), numpy_helper.from_array(np.array(6, np.float32), "six")]
    a = relu6(conv("input", "stem", 3, 32, k=3), "stem_act")
    b = relu6(conv(a, "dw", 32, 32, k=3, group=32), "dw_act")
    c = conv(b, "project", 32, 32)
    nodes.append(helper.make_node("Add", [c, a], ["residual"]))
    d = relu6(conv("residual", "expand24", 32, 24), "act24")
    e = relu6(conv(d, "expand40", 24, 40), "act40")
    f = conv(e, "head", 40, 32)
    nodes.append(helper.make_node("Relu", [f], ["head_act"]))
    nodes.append(helper.make_node("GlobalAveragePool", ["head_act"], ["pool"]))
    graph = helper.make_graph(
        nodes, "mbconv", [helper.make_tensor_value_info("input", TensorProto.FLOAT, ["N", 3, 16, 16])],
        [helper.make_tensor_value_info("pool", TensorProto.FLOAT, None)], inits,
    )
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)])


def _yolo_like_model() -> onnx.ModelProto:
    """LeakyRelu (sandwiched between reorders like Clip), MaxPool, Concat, Resize and Sigmoid:
    ops whose blocked forms the runner does not read directly must still give the same statistics."""
    rng = np.random.default_rng(4)
    inits, nodes = [], []

    def conv(x, out, cin, cout, k=3):
        w = (rng.standard_normal((cout, cin, k, k)) / np.sqrt(cin * k * k)).astype(np.float32)
        inits.append(numpy_helper.from_array(w, f"{out}.w"))
        nodes.append(helper.make_node("Conv", [x, f"{out}.w"], [out], pads=[k // 2] * 4))
        return out

    nodes.append(helper.make_node("LeakyRelu", [conv("input", "c1", 3, 32)], ["a1"], alpha=0.1))
    nodes.append(helper.make_node("MaxPool", ["a1"], ["p1"], kernel_shape=[2, 2], strides=[2, 2]))
    nodes.append(helper.make_node("LeakyRelu", [conv("p1", "c2", 32, 32)], ["a2"], alpha=0.1))
    nodes.append(helper.make_node("Concat", ["p1", "a2"], ["cat"], axis=1))
    inits.append(numpy_helper.from_array(np.array([1, 1, 2, 2], np.float32), "scales"))
    nodes.append(helper.make_node("Resize", ["cat", "", "scales"], ["up"], mode="nearest"))
    nodes.append(helper.make_node("Sigmoid", [conv("up", "c3", 64, 16, k=1)], ["out"]))
    graph = helper.make_graph(
        nodes, "yolo_like", [helper.make_tensor_value_info("input", TensorProto.FLOAT, ["N", 3, 16, 16])],
        [helper.make_tensor_value_info("out", TensorProto.FLOAT, None)], inits,
    )
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)])


@pytest.mark.skipif(not X86, reason="ONNX Runtime's blocked layout (NCHWc) is x86-only")
def test_other_blocked_ops_give_the_same_statistics(tmp_path, data):
    path = tmp_path / "yolo_like.onnx"
    onnx.save(_yolo_like_model(), str(path))
    blocked_runner, blocked = _statistics(path, data, any_layout=True)
    _, nchw = _statistics(path, data, any_layout=False)
    assert {"c1", "c2"} <= set(blocked_runner.blocked)  # conv outputs before their LeakyRelu
    _assert_same(blocked, nchw)
    assert len(blocked.tensors) == 10  # input, c1, a1, p1, c2, a2, cat, up, c3, out


@pytest.fixture
def model(tmp_path):
    path = tmp_path / "mbconv.onnx"
    onnx.save(_mbconv_model(), str(path))
    return path


@pytest.fixture
def data(tmp_path):
    path = tmp_path / "data.npy"
    np.save(path, np.random.default_rng(1).standard_normal((21, 3, 16, 16)).astype(np.float32) * 3)
    return path


def _statistics(model, data, any_layout: bool, tamper=None):
    runner = ActivationRunner(model, derive=True, any_layout=any_layout)
    if tamper:
        tamper(runner)
    calibrator = Calibrator(str(data), runner.inputs, None, 8)
    return runner, collect_statistics(calibrator.loader, runner, max_memory=3 * 4 * 9000)  # sub-batches too


def _assert_same(a, b):
    assert list(a.tensors) == list(b.tensors)
    for name in a.tensors:
        np.testing.assert_array_equal(a[name].counts, b[name].counts, err_msg=name)
        assert (a[name].min, a[name].max) == (b[name].min, b[name].max), name


@pytest.mark.skipif(not X86, reason="ONNX Runtime's blocked layout (NCHWc) is x86-only")
def test_blocked_statistics_equal_nchw_ones(model, data):
    blocked_runner, blocked = _statistics(model, data, any_layout=True)
    nchw_runner, nchw = _statistics(model, data, any_layout=False)
    assert nchw_runner.blocked == {}
    # 32-channel conv outputs are read blocked; 24 and 40 channels have padding lanes, and
    # the Add of a blocked tensor and an NCHW one runs (and is read) in NCHW.
    assert set(blocked_runner.blocked) == {"stem", "dw", "project", "head"}
    _assert_same(blocked, nchw)
    assert blocked.meta["samples"] == 21


@pytest.mark.skipif(not X86, reason="ONNX Runtime's blocked layout (NCHWc) is x86-only")
def test_clip_runs_on_the_blocked_tensor_without_reorders(model):
    runner = ActivationRunner(model, derive=True)
    optimized, mapping = blocked_model(_expose(onnx.load(str(model)), runner.exposed).SerializeToString(), runner.exposed)
    producer = {o: n for n in optimized.graph.node for o in n.output}
    clips = [n for n in optimized.graph.node if n.op_type == "Clip"]
    assert len(clips) == 4
    # Each Clip reads a blocked Conv output directly, not a ReorderOutput of it, and no
    # ReorderInput follows it; the stem's ReLU6 also feeds the NCHW Add: one ReorderOutput.
    assert all(producer[c.input[0]].op_type == "Conv" and producer[c.input[0]].domain for c in clips)
    assert not any(n.op_type == "ReorderInput" and producer.get(n.input[0]) in clips for n in optimized.graph.node)
    assert sorted(n.op_type for n in optimized.graph.node if clips[0].output[0] in n.input) == ["Conv", "ReorderOutput"]
    assert mapping["stem"] == (producer[clips[0].input[0]].output[0], 32)


@pytest.mark.skipif(not X86, reason="ONNX Runtime's blocked layout (NCHWc) is x86-only")
def test_unexpected_blocked_shapes_fall_back_to_nchw(model, data):
    def tamper(runner):
        name, (output, channels) = next(iter(runner.blocked.items()))
        runner.blocked[name] = (output, channels + 1)  # as if the CPU padded it

    runner, fallen = _statistics(model, data, any_layout=True, tamper=tamper)
    assert runner.blocked == {}
    _, nchw = _statistics(model, data, any_layout=False)
    _assert_same(fallen, nchw)


@pytest.mark.skipif(not X86, reason="ONNX Runtime's blocked layout (NCHWc) is x86-only")
def test_only_any_layout_runners_change_the_order(model):
    from onnx.reference import ReferenceEvaluator

    x = np.random.default_rng(2).standard_normal((2, 3, 16, 16)).astype(np.float32)
    proto = onnx.load(str(model))
    del proto.graph.output[:]
    proto.graph.output.append(helper.make_tensor_value_info("stem", TensorProto.FLOAT, None))
    reference = ReferenceEvaluator(proto).run(None, {"input": x})[0]  # independent of ONNX Runtime
    nchw = ActivationRunner(model, tensors=["stem", "pool"]).run({"input": x})["stem"]
    blocked = ActivationRunner(model, tensors=["stem", "pool"], any_layout=True).run({"input": x})["stem"]
    np.testing.assert_allclose(nchw, reference, rtol=1e-5, atol=1e-5)
    assert blocked.shape == nchw.shape and not np.array_equal(blocked, nchw)
    np.testing.assert_array_equal(np.sort(blocked, axis=None), np.sort(nchw, axis=None))


@pytest.mark.skipif(not X86, reason="ONNX Runtime's blocked layout (NCHWc) is x86-only")
def test_a_failing_blocked_session_falls_back_to_nchw(model, data, monkeypatch):
    import int8calib.runner.onnxrt as onnxrt

    _, nchw = _statistics(model, data, any_layout=False)

    class Failing:  # a blocked-layout session that ONNX Runtime cannot run
        def run(self, *args):
            raise RuntimeError("[ONNXRuntimeError] : 6 : RUNTIME_EXCEPTION : broken")

    def tamper(runner):
        assert runner.blocked
        runner.session = Failing()

    runner, fallen = _statistics(model, data, any_layout=True, tamper=tamper)
    assert runner.blocked == {}
    _assert_same(fallen, nchw)

    def broken(*args):
        raise RuntimeError("cannot optimize")

    monkeypatch.setattr(onnxrt, "blocked_model", broken)  # the optimisation itself fails: never used
    runner, plain = _statistics(model, data, any_layout=True)
    assert runner.blocked == {}
    _assert_same(plain, nchw)
