"""entropy2 against calibration caches that real TensorRT wrote in NVIDIA's public samples.

Each case regenerates the sample's data exactly (its seed, shapes, arithmetic) and network
(an ONNX stand-in with TensorRT's tensor names), calibrates with the same batches in the same
order, and compares the cache lines TensorRT wrote: bit for bit where the network's
arithmetic is exact (inputs, x + 1), within 1 float32 ULP where the sample's layer sums
in an order ONNX Runtime need not share (a convolution).
"""

from __future__ import annotations

import struct

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

import int8calib
from int8calib.methods import compute_amax
from int8calib.stats import StatsCollector
from int8calib.writers.cache import read_cache
from trt_cookbook import COOKBOOK_8_6_CONSTANTS, cookbook_8_6_weights, glibc_rand

COOKBOOK = "NVIDIA/trt-samples-for-hackathon-cn"


def bits(hex_scale: str) -> int:
    return int(hex_scale, 16)


def scale_hex(amax: float) -> str:
    return struct.pack(">f", np.float32(np.float32(amax) / np.float32(127))).hex()


def save_model(path, nodes, inputs, outputs, inits=()):
    graph = helper.make_graph(nodes, "golden", inputs, outputs, list(inits))
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    onnx.checker.check_model(model)
    onnx.save(model, str(path))
    return path


def calibrate(tmp_path, model, batches: np.ndarray, version: int):
    """One TensorRT batch per row of ``batches`` (batch size 1), in order."""
    data = tmp_path / "batches.npy"
    np.save(data, batches)
    cache = tmp_path / "calibration.cache"
    int8calib.calibrate(model, data, method="entropy2", batch_size=1, cache=cache, trt_version=version)
    return cache


def test_tensorrt_7_0_convolution_of_ones(tmp_path):
    """TensorRT 7.0.0, cookbook/old-cookbook/TRT-DynamicShape/02-int8/calibration.cache (commit 481e0e4),
    written by test.py: np.random.seed(97), 10 batches of np.random.rand(60) as float32 [1, 3, 4, 5],
    a 3x3 convolution of ones (3 -> 2 channels, pad 1, zero bias). The convolution's first batch sets
    the range (14.436), a later batch doubles it; the input keeps all 2048 bins."""
    np.random.seed(97)
    batches = np.stack([np.random.rand(60).astype(np.float32).reshape(3, 4, 5) for _ in range(10)])
    conv = "(Unnamed Layer* 0) [Convolution]_output"
    model = save_model(
        tmp_path / "conv.onnx",
        [helper.make_node("Conv", ["inputTensor", "w", "b"], [conv], pads=[1, 1, 1, 1])],
        [helper.make_tensor_value_info("inputTensor", TensorProto.FLOAT, ["N", 3, 4, 5])],
        [helper.make_tensor_value_info(conv, TensorProto.FLOAT, ["N", 2, 4, 5])],
        [numpy_helper.from_array(np.ones((2, 3, 3, 3), np.float32), "w"),
         numpy_helper.from_array(np.zeros(2, np.float32), "b")],
    )
    cache = read_cache(calibrate(tmp_path, model, batches, 7000))
    assert (cache.version, cache.algorithm) == (7000, "EntropyCalibration2")
    written = {"inputTensor": "3c00e995", conv: "3e0a9eac"}
    assert scale_hex(cache.amax["inputTensor"]) == written["inputTensor"]
    # TensorRT's convolution sums 27 values in float32 in its own order; its first-batch max
    # is 2 ULP above the correctly rounded sum, which moves the scale by 1 ULP at most.
    assert abs(bits(scale_hex(cache.amax[conv])) - bits(written[conv])) <= 1


def test_tensorrt_7_0_convolution_with_its_float32_summation_is_bit_exact():
    """The same case with the convolution summed in float32 channel by channel, row by row
    (what TensorRT 7.0 did on that GPU): every line bit for bit."""
    np.random.seed(97)
    batches = [np.random.rand(60).astype(np.float32).reshape(3, 4, 5) for _ in range(10)]

    def conv(x):
        padded = np.pad(x, ((0, 0), (1, 1), (1, 1)))
        out = np.zeros((4, 5), np.float32)
        for y in range(4):
            for x_ in range(5):
                acc = np.float32(0)
                for c in range(3):
                    for dy in range(3):
                        for dx in range(3):
                            acc = np.float32(acc + padded[c, y + dy, x_ + dx])
                out[y, x_] = acc
        return np.stack([out, out])

    collector = StatsCollector()
    for b in batches:
        collector.collect({"input": b, "conv": conv(b)})
    stats = collector.result()
    assert scale_hex(compute_amax("entropy2", stats["input"])) == "3c00e995"
    assert scale_hex(compute_amax("entropy2", stats["conv"])) == "3e0a9eac"


def add_scalar_model(path, scalar: float, shape, plugin_output: str, output: str | None):
    """The cookbook's AddScalar plugin (x + scalar in float32) followed by a cast to float32."""
    nodes = [helper.make_node("Add", ["inputT0", "scalar"], [plugin_output])]
    last = plugin_output
    if output is not None:
        nodes.append(helper.make_node("Identity", [plugin_output], [output]))
        last = output
    return save_model(
        path, nodes,
        [helper.make_tensor_value_info("inputT0", TensorProto.FLOAT, shape)],
        [helper.make_tensor_value_info(last, TensorProto.FLOAT, shape)],
        [numpy_helper.from_array(np.array(scalar, np.float32), "scalar")],
    )


def test_tensorrt_8_2_one_batch_of_32_values(tmp_path):
    """TensorRT 8.2.4, cookbook/05-Plugin/useINT8-PTQ/int8.cache (commit 481e0e4): np.random.seed(97),
    calibrator.py's one batch np.random.rand(32).astype(np.float32) * 200 - 100. Only the input
    line is data: TensorRT 8.2 gave the plugin's int8 output the input's scale without calibrating it."""
    np.random.seed(97)
    x = np.random.rand(32).astype(np.float32) * 200 - 100
    model = add_scalar_model(tmp_path / "m.onnx", 0.1, ["N", 32], "(Unnamed Layer* 0) [PluginV2DynamicExt]_output_0", None)
    cache = read_cache(calibrate(tmp_path, model, x[None], 8204))
    assert scale_hex(cache.amax["inputT0"]) == "3f4014c9"


@pytest.mark.parametrize(
    "version, commit, plugin",
    [
        (100001, "30f6e92", "(Unnamed Layer* 0) [PluginV2DynamicExt]_output"),  # UseINT8-PTQ-V2-deprecated
        (100600, "918c3b0", "(Unnamed Layer* 0) [PluginV2DynamicExt]_output"),  # the same, TensorRT 10.6
        (100001, "c9baa1a", "(Unnamed Layer* 0) [PluginV3_V3ONE]_output"),  # UseINT8-PTQ (PluginV3)
    ],
)
def test_tensorrt_10_add_scalar_plugin(tmp_path, version, commit, plugin):
    """TensorRT 10.0.1 / 10.6, cookbook/05-Plugin/UseINT8-PTQ*/model.int8cache at the commit given:
    the cookbook's utils seed numpy with 31193 on import; MyCalibratorV1 gives one batch of
    np.random.rand(48) as float32 [1, 8, 2, 3], * 96 - 48 (float32); the plugin adds 1.0."""
    np.random.seed(31193)
    x = np.random.rand(48).astype(np.float32) * np.float32(96) - np.float32(48)
    model = add_scalar_model(tmp_path / "m.onnx", 1.0, ["N", 8, 2, 3], plugin, "outputT0")
    text = calibrate(tmp_path, model, x.reshape(1, 8, 2, 3), version).read_text()
    lines = text.splitlines()
    assert lines[0] == f"TRT-{version}-EntropyCalibration2"
    for line in ("inputT0: 3ebfcfb9", f"{plugin}: 3ec3d80a", "outputT0: 3ec3d80a"):
        assert line in lines


def test_glibc_rand_matches_the_c_library():
    assert glibc_rand(1, 5).tolist() == [1804289383, 846930886, 1681692777, 1714636915, 1957747793]


@pytest.mark.parametrize("layer, count, written", COOKBOOK_8_6_CONSTANTS[1:])
def test_tensorrt_8_6_constant_layers(layer, count, written):
    """TensorRT calibrates constants like activations (one batch). The 10-value tensor keeps all 2048 bins too."""
    collector = StatsCollector()
    collector.collect({f"(Unnamed Layer* {layer}) [Constant]_output": cookbook_8_6_weights()[:count]})
    stats = collector.result()
    assert scale_hex(compute_amax("entropy2", stats[f"(Unnamed Layer* {layer}) [Constant]_output"])) == written


def test_tensorrt_8_6_constant_lines_from_calibrate(tmp_path):
    """``calibrate`` computes every Constant line of the 8.6 cookbook cache bit for bit from the weights.
    Under a 10.x header they are named ``<initializer>_output``; TensorRT 8.6 numbered them, which only
    its parser knows (``complete-cache`` writes those names: tests/test_complete_cache.py). The data is
    the stand-in's own (the cookbook's activations come from its random convolutions)."""
    w7, b9, w12, b14 = (cookbook_8_6_weights()[:n] for _, n, _ in COOKBOOK_8_6_CONSTANTS)
    model = save_model(
        tmp_path / "fc.onnx",
        [helper.make_node("MatMul", ["flat", "fc1.w"], ["mm8"]), helper.make_node("Add", ["mm8", "fc1.b"], ["add10"]),
         helper.make_node("Relu", ["add10"], ["relu11"]), helper.make_node("MatMul", ["relu11", "fc2.w"], ["mm13"]),
         helper.make_node("Add", ["mm13", "fc2.b"], ["add15"])],
        [helper.make_tensor_value_info("flat", TensorProto.FLOAT, ["N", 3136])],
        [helper.make_tensor_value_info("add15", TensorProto.FLOAT, ["N", 10])],
        [numpy_helper.from_array(w7.reshape(3136, 1024), "fc1.w"), numpy_helper.from_array(b9, "fc1.b"),
         numpy_helper.from_array(w12.reshape(1024, 10), "fc2.w"), numpy_helper.from_array(b14, "fc2.b")],
    )
    x = np.random.default_rng(1).uniform(0, 1, (3, 3136)).astype(np.float32)
    scales = read_cache(calibrate(tmp_path, model, x, 100600)).scales
    lines = {name: struct.pack(">f", scales[f"{name}_output"]).hex() for name in ("fc1.w", "fc1.b", "fc2.w", "fc2.b")}
    assert list(lines.values()) == [written for _, _, written in COOKBOOK_8_6_CONSTANTS]
    assert not any("_output" in n for n in read_cache(calibrate(tmp_path, model, x, 8600)).scales)  # 8.x: no such names


# isaid22/TensorRT-Optimization-MPNet calibration.cache @a0c04d9 (TensorRT 10.13.3, MinMaxCalibration):
# the lines of all-mpnet-base-v2's graph constants, whose values the graph fixes (its weights are not here).
MPNET_CONSTANT_LINES = {
    "/Constant_2_output_0_output": "3c010204",  # 1.0 - attention mask
    "/Constant_3_output_0_output": "7c010204",  # * float32 min
    "/encoder/Constant_10_output_0_output": "3d810204",  # relative position buckets: / 8
    "/encoder/Constant_11_output_0_output": "3cb2d7c8",  # / ln 16
    "/encoder/Constant_12_output_0_output": "3d810204",  # * 8
    "/encoder/layer.0/attention/attn/Constant_9_output_0_output": "3d810204",  # scores / sqrt(64)
    "/encoder/layer.0/intermediate/intermediate_act_fn/Constant_output_0_output": "3c3671d7",  # GELU: / sqrt 2
    "/encoder/layer.0/intermediate/intermediate_act_fn/Constant_1_output_0_output": "3c010204",  # + 1
    "/encoder/layer.0/intermediate/intermediate_act_fn/Constant_2_output_0_output": "3b810204",  # * 0.5
}


def test_tensorrt_10_13_constant_lines_of_mpnet(tmp_path):
    """A stand-in with MPNet's constant nodes (names, values and the ops reading them): ``calibrate``
    with minmax writes each of their lines as TensorRT 10.13 did, bit for bit, under the same names;
    a MatMul weight and a bias (random here) get lines named as MPNet's (``onnx::MatMul_1347_output``,
    ``encoder.layer.0.attention.attn.q.bias_output``) holding f32(max |w|) / 127."""
    f32 = np.float32
    c = {name[: -len("_output")]: value for name, value in [
        ("/Constant_2_output_0_output", f32(1)), ("/Constant_3_output_0_output", np.finfo(f32).min),
        ("/encoder/Constant_10_output_0_output", f32(8)), ("/encoder/Constant_11_output_0_output", np.log(f32(16))),
        ("/encoder/Constant_12_output_0_output", f32(8)), ("/encoder/layer.0/attention/attn/Constant_9_output_0_output", f32(8)),
        ("/encoder/layer.0/intermediate/intermediate_act_fn/Constant_output_0_output", np.sqrt(f32(2))),
        ("/encoder/layer.0/intermediate/intermediate_act_fn/Constant_1_output_0_output", f32(1)),
        ("/encoder/layer.0/intermediate/intermediate_act_fn/Constant_2_output_0_output", f32(0.5))]}
    [mask_one, f32_min, by8, ln16, times8, sqrt_dim, sqrt2, one, half] = list(c)
    act = "/encoder/layer.0/intermediate/intermediate_act_fn/"
    rng = np.random.default_rng(5)
    weight, bias = rng.standard_normal((8, 8)).astype(f32) * f32(0.05), rng.standard_normal(8).astype(f32) * f32(0.02)
    nodes = [helper.make_node("Constant", [], [name], value=numpy_helper.from_array(np.array(v, f32))) for name, v in c.items()]
    nodes += [
        helper.make_node("Div", ["h", "h"], ["/Cast_output_0"]),  # the attention mask: all ones
        helper.make_node("Sub", [mask_one, "/Cast_output_0"], ["/Sub_output_0"]),
        helper.make_node("Mul", ["/Sub_output_0", f32_min], ["/Mul_output_0"]),
        helper.make_node("Div", ["h", by8], ["/encoder/Div_output_0"]),
        helper.make_node("Log", ["/encoder/Div_output_0"], ["/encoder/Log_output_0"]),
        helper.make_node("Div", ["/encoder/Log_output_0", ln16], ["/encoder/Div_1_output_0"]),
        helper.make_node("Mul", ["/encoder/Div_1_output_0", times8], ["/encoder/Mul_1_output_0"]),
        helper.make_node("MatMul", ["h", "onnx::MatMul_1347"], ["/encoder/layer.0/attention/attn/q/MatMul_output_0"]),
        helper.make_node("Add", ["/encoder/layer.0/attention/attn/q/MatMul_output_0", "encoder.layer.0.attention.attn.q.bias"],
                         ["/encoder/layer.0/attention/attn/q/Add_output_0"]),
        helper.make_node("Div", ["/encoder/layer.0/attention/attn/q/Add_output_0", sqrt_dim], ["/encoder/layer.0/attention/attn/Div_output_0"]),
        helper.make_node("Div", ["h", sqrt2], [act + "Div_output_0"]),
        helper.make_node("Erf", [act + "Div_output_0"], [act + "Erf_output_0"]),
        helper.make_node("Add", [act + "Erf_output_0", one], [act + "Add_output_0"]),
        helper.make_node("Mul", ["h", act + "Add_output_0"], [act + "Mul_output_0"]),
        helper.make_node("Mul", [act + "Mul_output_0", half], [act + "Mul_1_output_0"]),
    ]
    outputs = ["/Mul_output_0", "/encoder/Mul_1_output_0", "/encoder/layer.0/attention/attn/Div_output_0", act + "Mul_1_output_0"]
    model = save_model(
        tmp_path / "mpnet_constants.onnx", nodes, [helper.make_tensor_value_info("h", TensorProto.FLOAT, ["N", 8])],
        [helper.make_tensor_value_info(o, TensorProto.FLOAT, ["N", 8]) for o in outputs],
        [numpy_helper.from_array(weight, "onnx::MatMul_1347"), numpy_helper.from_array(bias, "encoder.layer.0.attention.attn.q.bias")],
    )
    np.save(tmp_path / "h.npy", rng.uniform(0.5, 4, (4, 8)).astype(f32))
    cache = tmp_path / "mpnet.cache"
    int8calib.calibrate(model, tmp_path / "h.npy", method="minmax", batch_size=1, cache=cache, trt_version=101303)
    lines = dict(line.split(": ") for line in cache.read_text().splitlines()[1:])
    assert {name: lines.get(name) for name in MPNET_CONSTANT_LINES} == MPNET_CONSTANT_LINES
    assert lines["/Cast_output_0"] == "3c010204"  # and MPNet's mask line too
    assert lines["onnx::MatMul_1347_output"] == scale_hex(np.abs(weight).max())
    assert lines["encoder.layer.0.attention.attn.q.bias_output"] == scale_hex(np.abs(bias).max())


@pytest.mark.parametrize(
    "value, written",
    [
        # nt4sth/Torch-TensorRT-VGG16 calibration.cache @717618f, TensorRT 8.4.0 (TRT-8400-MinMaxCalibration):
        # input_0 of CIFAR-10 normalised by transforms.Normalize(..., 0.4465, ..., 0.2010) on the blue channel,
        # whose max is a pixel of 255: (1 - 0.4465) / 0.2010 in float32.
        ((np.float32(1) - np.float32(0.4465)) / np.float32(0.2010), "3cb1a063"),
        # isaid22/TensorRT-Optimization-MPNet calibration.cache @a0c04d9, TensorRT 10.13.3
        # (TRT-101303-MinMaxCalibration): constants of all-mpnet-base-v2's graph.
        (1.0, "3c010204"),
        (0.5, "3b810204"),
        (np.sqrt(np.float32(2)), "3c3671d7"),
        (8.0, "3d810204"),
        (np.log(np.float32(16)), "3cb2d7c8"),
        (np.finfo(np.float32).max, "7c010204"),
    ],
)
def test_minmax_is_the_exact_max(tmp_path, value, written):
    rng = np.random.default_rng(0)
    x = rng.uniform(-1, 1, (4, 64)).astype(np.float32) * np.float32(value)
    x[1, 7] = -np.float32(value)  # the max |x| is value exactly, on the negative side
    model = save_model(
        tmp_path / "id.onnx",
        [helper.make_node("Identity", ["x"], ["y"])],
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", 64])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["N", 64])],
    )
    np.save(tmp_path / "x.npy", x)
    cache = tmp_path / "c.cache"
    int8calib.calibrate(model, tmp_path / "x.npy", method="minmax", batch_size=2, cache=cache, trt_version=8400)
    assert f"x: {written}" in cache.read_text().splitlines()
