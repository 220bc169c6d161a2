"""Relu / Clip(0, hi) histograms derived from their input's equal the exposed tensors' bit for bit."""

from __future__ import annotations

import math
import platform
import struct

import numpy as np
import onnx
import pytest
from hypothesis import given, settings, strategies as st
from hypothesis.extra import numpy as hnp
from onnx import TensorProto, helper, numpy_helper

import int8calib.api as api
from int8calib.api import calibrate
from int8calib.calibrator import Calibrator
from int8calib.cli import main
from int8calib.collection import collect_statistics
from int8calib.runner import ActivationRunner
from int8calib.runner.model import derivable_tensors
from int8calib.stats import load
from int8calib.stats.derive import derive_clipped, on_bin_edge, unsigned_counts
from int8calib.stats.kernels import accumulate, accumulate_signed
from tinymodels import residual_cnn

BITS = 8


def _bits(x: float) -> bytes:
    return struct.pack("<d", x)  # tells -0.0 from 0.0


def _same(a, b, counts: bool = True, trt: bool = False):
    """Equal statistics: bit-pattern counts (``counts``), min and max, TensorRT's histograms
    (``trt``: they depend on the batch size)."""
    assert list(a.tensors) == list(b.tensors)
    for name in a.tensors:
        if counts:
            np.testing.assert_array_equal(a[name].counts, b[name].counts, err_msg=name)
        if trt and (a[name].trt is not None or b[name].trt is not None):
            np.testing.assert_array_equal(a[name].trt.counts, b[name].trt.counts, err_msg=name)
            assert a[name].trt.range == b[name].trt.range, name
        assert (_bits(a[name].min), _bits(a[name].max)) == (_bits(b[name].min), _bits(b[name].max)), name


def _clips_model(opset: int = 17) -> onnx.ModelProto:
    """Conv then five activations of it: Relu, Clip(0, 6) with a Constant max, Clip(0, 6.1)
    (not a bin edge), Clip(-1, 6) (min not 0), Clip(0) without max; and a Relu after the Relu."""
    rng = np.random.default_rng(1)
    inits = [
        numpy_helper.from_array(rng.normal(0, 1.5, (4, 3, 3, 3)).astype(np.float32), "w"),
        numpy_helper.from_array(np.array(0.0, np.float32), "zero"),
        numpy_helper.from_array(np.array(6.1, np.float32), "six_one"),
        numpy_helper.from_array(np.array(-1.0, np.float32), "minus_one"),
    ]
    six = numpy_helper.from_array(np.array(6.0, np.float32), "six_value")
    nodes = [
        helper.make_node("Conv", ["input", "w"], ["conv"], pads=[1, 1, 1, 1]),
        helper.make_node("Constant", [], ["six"], value=six),
        helper.make_node("Relu", ["conv"], ["relu"]),
        helper.make_node("Relu", ["relu"], ["relu_relu"]),
        helper.make_node("Clip", ["conv", "zero", "six"], ["clip6"]),
        helper.make_node("Clip", ["conv", "zero", "six_one"], ["clip6_1"]),
        helper.make_node("Clip", ["conv", "minus_one", "six"], ["clip_m1"]),
        helper.make_node("Clip", ["conv", "zero"], ["clip_nomax"]),
        helper.make_node("Sum", ["relu_relu", "clip6", "clip6_1", "clip_m1", "clip_nomax"], ["out"]),
    ]
    graph = helper.make_graph(
        nodes, "clips", [helper.make_tensor_value_info("input", TensorProto.FLOAT, ["N", 3, 8, 8])],
        [helper.make_tensor_value_info("out", TensorProto.FLOAT, ["N", 4, 8, 8])], inits,
    )
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", opset)])


def _opset6_model() -> onnx.ModelProto:
    """Clip with attribute bounds (opset < 11): (0, 6) derivable, (0, 6.1) and (-1, 6) not."""
    w = numpy_helper.from_array(np.random.default_rng(2).normal(0, 2, (4, 3, 1, 1)).astype(np.float32), "w")
    nodes = [
        helper.make_node("Conv", ["input", "w"], ["conv"]),
        helper.make_node("Clip", ["conv"], ["a"], min=0.0, max=6.0),
        helper.make_node("Clip", ["conv"], ["b"], min=0.0, max=6.1),
        helper.make_node("Clip", ["conv"], ["c"], min=-1.0, max=6.0),
        helper.make_node("Sum", ["a", "b", "c"], ["out"]),
    ]
    graph = helper.make_graph(
        nodes, "clips6", [helper.make_tensor_value_info("input", TensorProto.FLOAT, ["N", 3, 8, 8])],
        [helper.make_tensor_value_info("out", TensorProto.FLOAT, ["N", 4, 8, 8])], [w],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 6)])
    model.ir_version = 7
    return model


def test_which_tensors_are_derivable():
    model = _clips_model()
    everything = ["input", "conv", "relu", "relu_relu", "clip6", "clip6_1", "clip_m1", "clip_nomax", "out"]
    assert derivable_tensors(model, everything) == {
        "relu": ("conv", math.inf), "clip6": ("conv", 6.0), "clip_nomax": ("conv", math.inf),
    }  # relu_relu: its input is itself derived, so not run
    assert derivable_tensors(model, ["clip6", "relu", "out"]) == {}  # their input is not collected
    assert derivable_tensors(_opset6_model(), ["conv", "a", "b", "c"]) == {"a": ("conv", 6.0)}
    assert derivable_tensors(residual_cnn(), ["conv1", "relu1", "conv2", "clip2"]) == {
        "relu1": ("conv1", math.inf), "clip2": ("conv2", 6.0),
    }
    assert on_bin_edge(6.0, 8) and on_bin_edge(0.375, 8) and on_bin_edge(6.015625, 8)  # 6 + 4/256
    assert not on_bin_edge(6.1, 8) and not on_bin_edge(6.015625, 6) and not on_bin_edge(0.0, 8)


def _collect(model, data, derive: bool, tensors=None, batch_size=32, max_memory=None):
    runner = ActivationRunner(model, tensors=tensors, derive=derive)
    calibrator = Calibrator(str(data), runner.inputs, None, batch_size)
    return runner, collect_statistics(calibrator.loader, runner, max_memory=max_memory)


@pytest.fixture
def data(tmp_path):
    path = tmp_path / "data.npy"
    x = np.random.default_rng(3).standard_normal((23, 3, 8, 8)).astype(np.float32) * 2
    x[0, :, :4] = 0.0  # zero patches: Conv outputs exact zeros there
    np.save(path, x)
    return path


@pytest.mark.parametrize("build", [_clips_model, _opset6_model, residual_cnn])
def test_derived_statistics_equal_the_exposed_ones(build, data, tmp_path):
    model = tmp_path / "m.onnx"
    onnx.save(build(), str(model))
    exposed_runner, exposed = _collect(model, data, derive=False)
    runner, derived = _collect(model, data, derive=True, batch_size=5, max_memory=3 * 4 * 1400)  # sub-batches
    assert runner.derived and not set(runner.derived) & set(runner.exposed)
    assert not exposed_runner.derived and exposed_runner.exposed == exposed_runner.tensors
    _same(derived, exposed)
    assert derived.meta["samples"] == exposed.meta["samples"] == 23
    for name, (_, hi) in runner.derived.items():
        assert derived[name].max <= hi and derived[name].min == 0.0


def test_a_selection_without_the_input_exposes_the_clip(data, tmp_path):
    model = tmp_path / "m.onnx"
    onnx.save(_clips_model(), str(model))
    runner, part = _collect(model, data, derive=True, tensors=["clip6", "relu", "out"])
    assert runner.derived == {} and runner.exposed == ["clip6", "relu", "out"]
    runner, both = _collect(model, data, derive=True, tensors=["out", "clip6", "conv"])
    assert runner.derived == {"clip6": ("conv", 6.0)}
    assert list(both.tensors) == ["out", "clip6", "conv"]  # the order asked for
    _, exposed = _collect(model, data, derive=False, tensors=["out", "clip6", "conv"])
    _same(both, exposed)
    np.testing.assert_array_equal(part["clip6"].counts, both["clip6"].counts)


def test_caches_are_byte_identical_with_workers_and_shards(data, tmp_path, monkeypatch):
    model = tmp_path / "m.onnx"
    onnx.save(_clips_model(), str(model))
    on = calibrate(model, str(data), method="entropy2", cache=tmp_path / "on.cache", histograms=tmp_path / "on.npz")
    two = calibrate(model, str(data), method="entropy2", cache=tmp_path / "two.cache", workers=2)
    monkeypatch.setattr(api, "DERIVE_CLIPPED", False)
    off = calibrate(model, str(data), method="entropy2", cache=tmp_path / "off.cache", histograms=tmp_path / "off.npz")
    assert (tmp_path / "on.cache").read_bytes() == (tmp_path / "off.cache").read_bytes()
    assert (tmp_path / "two.cache").read_bytes() == (tmp_path / "off.cache").read_bytes()
    assert (tmp_path / "on.npz").read_bytes() == (tmp_path / "off.npz").read_bytes()
    _same(on.statistics, off.statistics, trt=True)
    _same(two.statistics, off.statistics, counts=False, trt=True)  # entropy2 alone: no bit-pattern counts
    assert two.statistics.meta["bit_histograms"] is False and not two.statistics["conv"].counts.any()
    monkeypatch.setattr(api, "DERIVE_CLIPPED", True)
    parts = [str(tmp_path / f"part{k}.npz") for k in (1, 2)]
    for k, part in enumerate(parts, 1):
        assert main(["collect", str(model), "--data", str(data), "--shard", f"{k}/2", "-o", part, "-q"]) == 0
    assert main(["merge", *parts, "-o", str(tmp_path / "merged.npz"), "-q"]) == 0
    _same(load(tmp_path / "merged.npz"), off.statistics)


def test_signed_kernel_halves_add_up_to_the_plain_kernel():
    x = np.random.default_rng(0).standard_normal(10_000).astype(np.float32)
    x[:10] = [0.0, -0.0, 6.0, -6.0, 1e-45, -1e-45, 3e38, -3e38, 0.5, -0.5]
    plain = np.zeros(256 << BITS, np.int64)
    signed = np.zeros(512 << BITS, np.int64)
    assert accumulate(x, plain, BITS) == accumulate_signed(x, signed, BITS)
    np.testing.assert_array_equal(unsigned_counts(signed), plain)
    assert signed[: 256 << BITS].sum() == (x >= 0).sum() - 1  # -0.0 >= 0, but its sign bit is set
    assert signed[256 << BITS :].sum() == (x < 0).sum() + 1


edge_values = st.sampled_from([0.0, -0.0, 6.0, -6.0, 6.015625, 5.9999995, 1e-45, -1e-45, 1e-39, 3e38, -3e38])
floats = st.one_of(edge_values, st.floats(-20, 20, width=32, allow_nan=False, allow_infinity=False))


@settings(max_examples=200, deadline=None)
@given(
    x=hnp.arrays(np.float32, st.integers(0, 300), elements=floats),
    hi=st.sampled_from([6.0, 0.5, 1e-39, 6.015625, math.inf]),
    bits=st.sampled_from([0, 3, 8]),
)
def test_derivation_equals_histogramming_the_clipped_values(x, hi, bits):
    if hi < math.inf and not on_bin_edge(hi, bits):
        hi = float(np.float32(2.0))  # a power of two is an edge at every resolution
    signed = np.zeros(512 << bits, np.int64)
    lo, top = accumulate_signed(x, signed, bits)
    derived = derive_clipped(signed, lo, top, hi, bits)
    clipped = np.minimum(np.maximum(x, np.float32(0)), np.float32(hi)) if hi < math.inf else np.maximum(x, np.float32(0))
    expected = np.zeros(256 << bits, np.int64)
    e_lo, e_hi = accumulate(clipped, expected, bits)
    np.testing.assert_array_equal(derived.counts, expected)
    # Equal as numbers; which zero numpy's maximum returns is its own choice (ORT's is tested above).
    assert (derived.min, derived.max) == (e_lo, e_hi)


@pytest.mark.acceptance
def test_efficientnet_cache_is_identical_with_derivation(effnet_model, even_images, tmp_path, monkeypatch):
    """Derived histograms and the blocked layout (runner.blocked) change no byte of the cache."""
    images = tmp_path / "calib.txt"
    images.write_text("\n".join(even_images[:12]) + "\n")  # in steps of 3 under the default --max-memory
    args = dict(preprocess="efficientnet-lite", batch_size=12, method="entropy2")
    on = calibrate(effnet_model, str(images), cache=tmp_path / "on.cache", **args)
    monkeypatch.setattr(api, "BLOCKED_LAYOUT", False)
    nchw = calibrate(effnet_model, str(images), cache=tmp_path / "nchw.cache", **args)
    monkeypatch.setattr(api, "DERIVE_CLIPPED", False)
    off = calibrate(effnet_model, str(images), cache=tmp_path / "off.cache", **args)
    assert (tmp_path / "on.cache").read_bytes() == (tmp_path / "off.cache").read_bytes()
    assert (tmp_path / "nchw.cache").read_bytes() == (tmp_path / "off.cache").read_bytes()
    _same(on.statistics, off.statistics, counts=False, trt=True)  # entropy2: min, max, TensorRT's histograms
    _same(nchw.statistics, off.statistics, counts=False, trt=True)
    assert len(on.statistics) == 97 and on.statistics.meta["constants"] == ["_fc.weight_output", "_fc.bias_output"]
    runner = ActivationRunner(effnet_model, derive=True, any_layout=True)
    assert len(runner.derived) == 33 and len(runner.exposed) == 62
    if platform.machine().lower() in ("x86_64", "amd64"):
        assert len(runner.blocked) == 52  # the six 24- and 40-channel tensors have padding lanes
