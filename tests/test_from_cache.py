"""Calibration cache -> Q/DQ model (calibrate --from-cache), evaluate --cache, inspect --compare (issue 17).

The TensorRT-written caches are NVIDIA's, from NVIDIA/trt-samples-for-hackathon-cn, quoted
byte for byte; the networks are ONNX stand-ins with the same inputs.
"""

from __future__ import annotations

import json
import struct

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper
from tinymodels import residual_cnn

import int8calib
from int8calib.cli import main
from int8calib.errors import Int8CalibError
from int8calib.evaluate import evaluate
from int8calib.cachefiles.to_qdq import needed_tensors, quantize_from_cache
from int8calib.cachefiles.compare import compare_ranges
from int8calib.cachefiles.read import match_names
from int8calib.routes import next_steps
from int8calib.runner import calibratable_tensors
from int8calib.writers.cache import write_cache
from int8calib.writers.precision import PrecisionOptions
from int8calib.writers.qdq import build_qdq

FP32 = PrecisionOptions("fp32")  # float32 scales: a cache's bits kept exactly

# TensorRT 7.0.0: NVIDIA/trt-samples-for-hackathon-cn, commit 481e0e40189f098b4d517a382a68ebd43b81af4c,
# cookbook/old-cookbook/TRT-DynamicShape/02-int8/calibration.cache. Network: input 'inputTensor'
# [N, 3, 4, 5] -> 3x3 convolution of ones (3 -> 2 channels, pad 1, zero bias), unnamed in TensorRT.
TRT7_CACHE = b"TRT-7000-EntropyCalibration2\ninputTensor: 3c00e995\n(Unnamed Layer* 0) [Convolution]_output: 3e0a9eac\n"
# TensorRT 10.6: the same repository, commit 918c3b0e51563b9fdc76c5da6f19b428eea465b2,
# cookbook/05-Plugin/UseINT8-PTQ-V2-deprecated/model.int8cache (a plugin network: inputT0 -> plugin -> outputT0).
TRT10_CACHE = (
    b"TRT-100600-EntropyCalibration2\ninputT0: 3ebfcfb9\n"
    b"(Unnamed Layer* 0) [PluginV2DynamicExt]_output: 3ec3d80a\noutputT0: 3ec3d80a\n"
)


def scale_bits(model: onnx.ModelProto, tensor: str) -> str:
    """The hex of the float32 scale of ``tensor``'s QuantizeLinear, as TensorRT writes it in a cache."""
    inits = {i.name: numpy_helper.to_array(i) for i in model.graph.initializer}
    casts = {n.output[0]: n.input[0] for n in model.graph.node if n.op_type == "Cast"}  # FP16 models cast their inputs
    q = next(n for n in model.graph.node if n.op_type == "QuantizeLinear" and casts.get(n.input[0], n.input[0]) == tensor)
    scale = inits[q.input[1]]
    assert scale.size == 1
    return struct.pack(">f", np.float32(scale.reshape(()))).hex()


def conv_model(path, input_name: str, output_name: str, channels=(3, 2), shape=(4, 5)):
    c_in, c_out = channels
    graph = helper.make_graph(
        [helper.make_node("Conv", [input_name, "w", "b"], [output_name], name="conv", pads=[1, 1, 1, 1])],
        "conv",
        [helper.make_tensor_value_info(input_name, TensorProto.FLOAT, ["N", c_in, *shape])],
        [helper.make_tensor_value_info(output_name, TensorProto.FLOAT, ["N", c_out, *shape])],
        [numpy_helper.from_array(np.ones((c_out, c_in, 3, 3), np.float32), "w"),
         numpy_helper.from_array(np.zeros(c_out, np.float32), "b")],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    onnx.save(model, str(path))
    return path


def test_tensorrt_7_cache_becomes_a_qdq_model_with_its_scale_bit_for_bit(tmp_path):
    model = conv_model(tmp_path / "conv.onnx", "inputTensor", "conv_out")
    cache = tmp_path / "calibration.cache"
    cache.write_bytes(TRT7_CACHE)
    out = tmp_path / "conv.qdq.onnx"
    result = quantize_from_cache(model, cache, out, lowering=FP32)  # bit for bit: scales kept float32
    written = onnx.load(str(out))
    onnx.checker.check_model(written, full_check=True)
    assert scale_bits(written, "inputTensor") == "3c00e995"
    assert result.missing == [] and result.needed == ["inputTensor"]
    # TensorRT named the convolution's output itself: listed, never matched to 'conv_out' by position
    assert list(result.match.unmatched) == ["(Unnamed Layer* 0) [Convolution]_output"]
    assert "Convolution layer TensorRT created" in result.match.unmatched["(Unnamed Layer* 0) [Convolution]_output"]


def test_tensorrt_10_6_cache_header_and_scales(tmp_path):
    # The sample's plugin is replaced by a convolution reading the same input: the input's scale is what is checked.
    model = conv_model(tmp_path / "m.onnx", "inputT0", "outputT0", channels=(1, 1))
    cache = tmp_path / "model.int8cache"
    cache.write_bytes(TRT10_CACHE)
    result = quantize_from_cache(model, cache, tmp_path / "m.qdq.onnx", lowering=FP32)
    assert result.source.header == "TRT-100600-EntropyCalibration2"
    assert scale_bits(result.model, "inputT0") == "3ebfcfb9"
    assert set(result.match.scales) == {"inputT0", "outputT0"}
    assert list(result.match.unmatched) == ["(Unnamed Layer* 0) [PluginV2DynamicExt]_output"]


def test_our_cache_round_trips_bit_for_bit_on_a_residual_cnn(tmp_path, rng):
    model = residual_cnn(tmp_path / "model.onnx")
    amax = {t: float(rng.uniform(0.1, 50)) for t in calibratable_tensors(model)}
    cache = tmp_path / "c.cache"
    write_cache(cache, amax, "EntropyCalibration2", trt_version=100900)
    result = quantize_from_cache(tmp_path / "model.onnx", cache, lowering=FP32)
    read = int8calib.read_cache(cache).scales
    assert result.summary.activations == needed_tensors(model)
    for t in result.summary.activations:
        assert scale_bits(result.model, t) == struct.pack(">f", read[t]).hex()
    same, summary = build_qdq(model, amax)  # what --qdq writes from these ranges
    assert (summary.activations, summary.weights, summary.residual_adds) == (
        result.summary.activations, result.summary.weights, result.summary.residual_adds)
    assert all(scale_bits(same, t) == scale_bits(result.model, t) for t in summary.activations)


def test_names_tensorrt_writes_are_tolerated_and_listed():
    tensors, constants = ["input", "conv1", "relu1"], {"w1"}
    scales = {
        "input": 0.01,
        "conv1 output reformatter 0": 0.5,  # a reformat copy stands for its tensor when it has no own line
        "relu1": 0.25,
        "relu1 output to be reformatted 0": 0.25,  # agrees with relu1's own line
        "w1_output": 0.1,  # TensorRT 10: a constant
        "ONNXTRT_Broadcast_3_output": 0.1,
        "(Unnamed Layer* 7) [Constant]_output": 0.1,
        "(Unnamed Layer* 9) [Shuffle]_output": 0.2,
        "other": 1.0,
    }
    m = match_names(scales, tensors, constants)
    assert m.scales == {"input": 0.01, "conv1": 0.5, "relu1": 0.25}
    assert m.copies == {"conv1 output reformatter 0": "conv1", "relu1 output to be reformatted 0": "relu1"}
    assert m.constants == ["w1_output"]
    assert set(m.unmatched) == {"ONNXTRT_Broadcast_3_output", "(Unnamed Layer* 7) [Constant]_output",
                                "(Unnamed Layer* 9) [Shuffle]_output", "other"}
    assert "constant layer" in m.unmatched["(Unnamed Layer* 7) [Constant]_output"]


def test_copies_that_disagree_are_never_chosen_between():
    m = match_names({"a output reformatter 0": 0.5, "a output to be reformatted 1": 0.6}, ["a"])
    assert "a" not in m.scales and len(m.conflicts) == 1 and len(m.unmatched) == 2
    m = match_names({"a": 0.5, "a output reformatter 0": 0.6}, ["a"])
    assert m.scales == {"a": 0.5} and "its own line used" in m.conflicts[0]


@pytest.fixture
def tiny(tmp_path, rng):
    """residual_cnn, a cache of all its tensors (minmax over data), and the data."""
    residual_cnn(tmp_path / "model.onnx")
    data = tmp_path / "x.npy"
    np.save(data, rng.normal(0, 1, (12, 3, 8, 8)).astype(np.float32))
    cache = tmp_path / "c.cache"
    int8calib.calibrate(tmp_path / "model.onnx", data, method="minmax", batch_size=4, cache=cache)
    return tmp_path / "model.onnx", cache, data


def _cache_without(cache, path, tensor):
    lines = [line for line in cache.read_text().splitlines() if not line.startswith(f"{tensor}:")]
    path.write_text("\n".join(lines) + "\n")
    return path


def test_missing_ranges_fail_float_or_calibrate(tiny, tmp_path, capsys):
    model, cache, data = tiny
    partial = _cache_without(cache, tmp_path / "partial.cache", "relu1")
    with pytest.raises(Int8CalibError, match=r"1 tensor\(s\) need a range .*'relu1'"):
        quantize_from_cache(model, partial)
    floated = quantize_from_cache(model, partial, missing="float")
    assert floated.missing == ["relu1"] and "conv2" in floated.summary.excluded
    assert "relu1" not in floated.summary.activations
    filled = quantize_from_cache(model, partial, missing="calibrate", data=data, method="minmax", batch_size=4)
    assert set(filled.calibrated) == {"relu1"}
    direct = quantize_from_cache(model, cache)
    # the one calibrated tensor gets the range calibration gives it; the others keep the file's bits
    for t in direct.summary.activations:
        assert scale_bits(filled.model, t) == scale_bits(direct.model, t)


def test_ranges_json_and_cli_end_to_end(tiny, tmp_path, capsys):
    model, cache, data = tiny
    ranges = tmp_path / "r.json"
    assert main(["calibrate", str(model), "--data", str(data), "--method", "minmax", "--batch-size", "4",
                 "--ranges", str(ranges), "--qdq", str(tmp_path / "direct.onnx"), "-q"]) == 0
    for source, out in ((ranges, "from_json.onnx"), (cache, "from_cache.onnx")):
        assert main(["calibrate", str(model), "--from-cache", str(source), "--qdq", str(tmp_path / out), "-q"]) == 0
    direct, a, b = (onnx.load(str(tmp_path / n)) for n in ("direct.onnx", "from_json.onnx", "from_cache.onnx"))
    for t in needed_tensors(onnx.load(str(model))):
        assert scale_bits(direct, t) == scale_bits(a, t) == scale_bits(b, t)


def test_evaluate_cache_equals_evaluating_the_written_model(tiny, tmp_path, capsys):
    model, cache, data = tiny
    quantize_from_cache(model, cache, tmp_path / "q.onnx")
    expected = evaluate(model, tmp_path / "q.onnx", data, per_layer=True).to_dict()
    assert int8calib.evaluate_cache(model, cache, data, per_layer=True).to_dict() == expected
    assert main(["evaluate", "--fp32", str(model), "--cache", str(cache), "--data", str(data), "--per-layer",
                 "--json", str(tmp_path / "e.json"), "-q"]) == 0
    assert json.loads((tmp_path / "e.json").read_text()) == json.loads(json.dumps(expected))
    assert "per-layer SQNR" in capsys.readouterr().out


def test_inspect_compare_worst_first(tiny, tmp_path, capsys):
    model, cache, _ = tiny
    text = cache.read_text().replace("relu1: ", "relu1 output reformatter 0: ")  # TensorRT-style copy
    scales = int8calib.read_cache(cache).scales
    other = tmp_path / "other.cache"
    lines = [line for line in text.splitlines() if not line.startswith("conv2:")]
    lines = [f"add: {struct.pack('>f', np.float32(scales['add'] * 2)).hex()}" if line.startswith("add:") else line for line in lines]
    other.write_text("\n".join(lines) + "\nextra_output: 3f800000\n")
    comparison = compare_ranges(cache, other)
    assert comparison.rows[0][0] == "add" and comparison.rows[0][3] == pytest.approx(2.0)
    assert all(r == 1.0 for *_, r in comparison.rows[1:])
    assert "relu1" in [t for t, *_ in comparison.rows]  # the copy stands for its tensor
    assert comparison.only_a == ["conv2"] and comparison.only_b == ["extra_output"]
    assert main(["inspect", str(cache), "--compare", str(other), "--json"]) == 0
    printed = json.loads(capsys.readouterr().out)
    assert printed["tensors"][0]["tensor"] == "add" and printed["only_b"] == ["extra_output"]
    assert main(["inspect", str(cache), "--compare", str(other)]) == 0
    assert "only in B: extra_output" in capsys.readouterr().out


def test_zero_and_infinite_scales(tmp_path):
    model = conv_model(tmp_path / "conv.onnx", "x", "y")
    cache = tmp_path / "c.cache"
    cache.write_text("TRT-8601-EntropyCalibration2\nx: 0\ny: 7f800000\n")  # TensorRT writes all-zero as 0
    zero = quantize_from_cache(model, cache)
    assert zero.missing == [] and "all zero" in zero.summary.excluded["conv"]
    cache.write_text("TRT-8601-EntropyCalibration2\nx: 7f800000\n")
    with pytest.raises(Int8CalibError, match="need a range"):
        quantize_from_cache(model, cache)


def _stale(tmp_path, tiny):
    model, cache, _ = tiny
    other = residual_cnn(tmp_path / "other.onnx", seed=1)  # same names, other weights
    assert other is not None
    return tmp_path / "other.onnx", cache


BAD = {
    "corrupt": b"TRT-8601-EntropyCalibration2\ninput: 3c0g0000\n",
    "binary": b"\x08\x07\x12\x04\xff\xfe garbage",
    "truncated mid-line": b"TRT-8601-EntropyCalibration2\ninput: 3c00e9",
    "truncated header": b"TRT-86",
    "empty": b"",
    "subnormal": b"TRT-8601-EntropyCalibration2\ninput: 3c00e\n",
    "foreign": b"TRT-8601-EntropyCalibration2\nencoder/attn:0: 3f800000\n",
}


@pytest.mark.parametrize("case", [*BAD, "stale model", "edited after its sidecar", "onnx model as cache"])
def test_bad_caches_exit_2_with_one_line(case, tiny, tmp_path, capsys):
    model, cache, _ = tiny
    source = tmp_path / "bad.cache"
    if case in BAD:
        source.write_bytes(BAD[case])
    elif case == "stale model":
        model, source = _stale(tmp_path, tiny)
    elif case == "edited after its sidecar":
        source = cache
        cache.write_text(cache.read_text().replace("input:", "input :"))
    else:
        source = tmp_path / "model.cache"
        source.write_bytes(model.read_bytes())
    capsys.readouterr()
    code = main(["calibrate", str(model), "--from-cache", str(source), "--qdq", str(tmp_path / "o.onnx"), "-q"])
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2 and len(err) == 1 and err[0].startswith("int8calib: error: "), err
    assert not (tmp_path / "o.onnx").exists()


def test_from_cache_options_are_checked(tiny, tmp_path, capsys):
    model, cache, data = tiny
    for extra in (["--cache", "x.cache"], ["--data", str(data)], ["--missing-ranges", "calibrate"], []):
        argv = ["calibrate", str(model), "--from-cache", str(cache), *extra]
        if extra:
            argv += ["--qdq", str(tmp_path / "o.onnx")]
        assert main([*argv, "-q"]) == 2
    with pytest.raises(SystemExit) as refused:  # argparse: evaluate cannot calibrate
        main(["evaluate", "--fp32", str(model), "--cache", str(cache), "--data", str(data), "--missing-ranges", "calibrate"])
    assert refused.value.code == 2


def test_next_steps_name_the_route_per_tensorrt_version():
    both = next_steps("m.onnx", "c.cache", "m.qdq.onnx")
    assert any("--int8 --calib=c.cache" in line and "8.x-10.0" in line for line in both)
    assert any("--onnx=m.qdq.onnx --stronglyTyped" in line and "10.1" in line for line in both)
    assert any(line.startswith("TensorRT 11") and "--int8" not in line and "--stronglyTyped" not in line for line in both)
    assert next_steps("m.onnx", "c.cache", None, trt=(8, 6)) == [
        "TensorRT 8.x-10.0, the cache: trtexec --onnx=m.onnx --int8 --calib=c.cache --saveEngine=m.engine"
    ]
    only_cache = next_steps("m.onnx", "c.cache", None, trt=(10, 8))
    assert only_cache == ["TensorRT 10.1 and 11 need a Q/DQ model: int8calib calibrate m.onnx --from-cache c.cache --qdq m.qdq.onnx"]
    assert next_steps("m.onnx", None, "q.onnx", trt=(11, 0)) == [
        "TensorRT 11, the Q/DQ model (always strongly typed): trtexec --onnx=q.onnx --saveEngine=m.engine"
    ]
