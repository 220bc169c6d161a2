"""EfficientNet-Lite0 as an ONNX graph built with onnx.helper from a PyTorch state dict.

Architecture facts (EfficientNet-Lite, as in the TensorFlow reference and its PyTorch port):

* stem: 3x3 conv stride 2 to 32 channels, batch norm, ReLU6;
* seven stages of MBConv blocks (no squeeze-excite in the Lite variants): an optional
  1x1 expansion conv + BN + ReLU6, a depthwise kxk conv + BN + ReLU6, a 1x1 projection
  conv + BN (linear), and a residual add when the block keeps stride 1 and channels;
* head: 1x1 conv to 1280 channels, BN, ReLU6, global average pool, fully connected 1000;
* batch norm epsilon 1e-3; every conv pads like TensorFlow's "SAME" for a 224x224 input.

Batch norm is folded into the preceding conv, ReLU6 is ``Clip(0, 6)``, and the
asymmetric "same" padding is written into each Conv's ``pads``, so the graph has
only Conv, Clip, Add, GlobalAveragePool, Flatten and Gemm: what TensorRT fuses.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

from ..errors import Int8CalibError

IMAGE_SIZE = 224
BN_EPSILON = 1e-3
OPSET = 17


@dataclass(frozen=True)
class Stage:
    repeats: int
    kernel: int
    stride: int
    expand: int
    channels_in: int
    channels_out: int


# efficientnet-lite0: width and depth multipliers 1.0, so the base table is the network.
LITE0_STAGES = (
    Stage(1, 3, 1, 1, 32, 16),
    Stage(2, 3, 2, 6, 16, 24),
    Stage(2, 5, 2, 6, 24, 40),
    Stage(3, 3, 2, 6, 40, 80),
    Stage(3, 5, 1, 6, 80, 112),
    Stage(4, 5, 2, 6, 112, 192),
    Stage(1, 3, 1, 6, 192, 320),
)
STEM_CHANNELS = 32
HEAD_CHANNELS = 1280


def same_pads(size: int, kernel: int, stride: int) -> tuple[int, int]:
    """TensorFlow "SAME" padding (before, after) along one axis of length ``size``.

    The output has ceil(size / stride) positions; any odd total padding goes after,
    which ONNX's symmetric auto_pad cannot express for stride 2.
    """
    out = math.ceil(size / stride)
    total = max((out - 1) * stride + kernel - size, 0)
    return total // 2, total - total // 2


class _GraphBuilder:
    def __init__(self, weights: dict[str, np.ndarray]):
        self.weights = weights
        self.nodes: list[onnx.NodeProto] = []
        self.initializers: list[onnx.TensorProto] = []
        self.used: set[str] = set()

    def take(self, key: str, shape: tuple[int, ...] | None = None) -> np.ndarray:
        if key not in self.weights:
            raise Int8CalibError(f"state dict has no tensor '{key}': not EfficientNet-Lite0 weights")
        value = self.weights[key]
        if shape is not None and value.shape != shape:
            raise Int8CalibError(f"state dict tensor '{key}' has shape {list(value.shape)}, expected {list(shape)}")
        self.used.add(key)
        return value

    def constant(self, name: str, value: np.ndarray) -> str:
        self.initializers.append(numpy_helper.from_array(np.require(value, requirements="C"), name))
        return name

    def conv_bn(
        self, x: str, name: str, conv: str, bn: str, c_in: int, c_out: int, kernel: int, stride: int,
        size: int, groups: int = 1,
    ) -> tuple[str, int]:
        """Conv with its batch norm folded in; returns the output name and spatial size."""
        w = self.take(f"{conv}.weight", (c_out, c_in // groups, kernel, kernel)).astype(np.float64)
        gamma = self.take(f"{bn}.weight", (c_out,)).astype(np.float64)
        beta = self.take(f"{bn}.bias", (c_out,)).astype(np.float64)
        mean = self.take(f"{bn}.running_mean", (c_out,)).astype(np.float64)
        var = self.take(f"{bn}.running_var", (c_out,)).astype(np.float64)
        self.used.add(f"{bn}.num_batches_tracked")
        scale = gamma / np.sqrt(var + BN_EPSILON)
        weight = self.constant(f"{name}.weight", (w * scale[:, None, None, None]).astype(np.float32))
        bias = self.constant(f"{name}.bias", (beta - mean * scale).astype(np.float32))
        before, after = same_pads(size, kernel, stride)
        self.nodes.append(
            helper.make_node(
                "Conv", [x, weight, bias], [name], name=name, kernel_shape=[kernel, kernel],
                strides=[stride, stride], pads=[before, before, after, after], group=groups,
            )
        )
        return name, math.ceil(size / stride)

    def relu6(self, x: str) -> str:
        out = f"{x}.relu6"
        self.nodes.append(helper.make_node("Clip", [x, "relu6.min", "relu6.max"], [out], name=out))
        return out

    def mbconv(self, x: str, index: int, stage: Stage, c_in: int, stride: int, size: int) -> tuple[str, int]:
        prefix = f"_blocks.{index}"
        name = f"blocks.{index}"
        hidden = c_in * stage.expand
        h = x
        if stage.expand != 1:
            h, _ = self.conv_bn(h, f"{name}.expand", f"{prefix}._expand_conv", f"{prefix}._bn0", c_in, hidden, 1, 1, size)
            h = self.relu6(h)
        h, out_size = self.conv_bn(
            h, f"{name}.depthwise", f"{prefix}._depthwise_conv", f"{prefix}._bn1", hidden, hidden,
            stage.kernel, stride, size, groups=hidden,
        )
        h = self.relu6(h)
        h, _ = self.conv_bn(h, f"{name}.project", f"{prefix}._project_conv", f"{prefix}._bn2", hidden, stage.channels_out, 1, 1, out_size)
        if stride == 1 and c_in == stage.channels_out:
            out = f"{name}.add"
            self.nodes.append(helper.make_node("Add", [h, x], [out], name=out))
            h = out
        return h, out_size


def build_efficientnet_lite0(weights: dict[str, np.ndarray], num_classes: int = 1000) -> onnx.ModelProto:
    """The Lite0 network with ``weights`` (a PyTorch state dict as numpy arrays).

    Input ``input`` float32 [N, 3, 224, 224] (preprocessing: (pixel - 127) / 128, RGB),
    output ``logits`` float32 [N, ``num_classes``]. Every tensor of the state dict must
    be used, so weights of another variant fail loudly instead of converting wrongly.
    """
    b = _GraphBuilder(weights)
    b.constant("relu6.min", np.array(0.0, np.float32))
    b.constant("relu6.max", np.array(6.0, np.float32))
    x, size = b.conv_bn("input", "stem", "_conv_stem", "_bn0", 3, STEM_CHANNELS, 3, 2, IMAGE_SIZE)
    x = b.relu6(x)
    index, channels = 0, STEM_CHANNELS
    for stage in LITE0_STAGES:
        for repeat in range(stage.repeats):
            stride = stage.stride if repeat == 0 else 1
            x, size = b.mbconv(x, index, stage, channels, stride, size)
            channels = stage.channels_out
            index += 1
    x, _ = b.conv_bn(x, "head", "_conv_head", "_bn1", channels, HEAD_CHANNELS, 1, 1, size)
    x = b.relu6(x)
    b.nodes.append(helper.make_node("GlobalAveragePool", [x], ["pool"], name="pool"))
    b.nodes.append(helper.make_node("Flatten", ["pool"], ["features"], name="flatten", axis=1))
    fc_w = b.constant("fc.weight", b.take("_fc.weight", (num_classes, HEAD_CHANNELS)))
    fc_b = b.constant("fc.bias", b.take("_fc.bias", (num_classes,)))
    b.nodes.append(helper.make_node("Gemm", ["features", fc_w, fc_b], ["logits"], name="fc", transB=1))
    unused = sorted(set(weights) - b.used)
    if unused:
        raise Int8CalibError(f"state dict has tensors the Lite0 graph does not use: {unused[:5]}")
    graph = helper.make_graph(
        b.nodes,
        "efficientnet_lite0",
        [helper.make_tensor_value_info("input", TensorProto.FLOAT, ["batch", 3, IMAGE_SIZE, IMAGE_SIZE])],
        [helper.make_tensor_value_info("logits", TensorProto.FLOAT, ["batch", num_classes])],
        b.initializers,
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", OPSET)], producer_name="int8calib.zoo")
    model.ir_version = 8  # readable by ONNX Runtime >= 1.12 and TensorRT 8.x
    onnx.checker.check_model(model)
    return model
