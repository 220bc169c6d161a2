"""Exposing activations in ONNX Runtime's blocked channel layout (NCHWc), for statistics.

On x86 CPUs ONNX Runtime runs convolutions in a blocked layout (channels in blocks of
8 or 16, ``com.microsoft.nchwc`` ops). Every tensor made a graph output is reordered
back to NCHW first, and an activation that the layout code does not handle (Clip,
the ReLU6 of MobileNets and EfficientNets) is sandwiched between two reorders and no
longer fused into its convolution. On EfficientNet-Lite0 those reorders cost as much
as the convolutions themselves (docs/performance.md).

A histogram does not depend on the order of the values, so collection does not need
NCHW. This module lets ONNX Runtime optimize the exposed graph, then edits the
optimized graph: exposed tensors are taken before their ``ReorderOutput``, and an
element-wise op between a ``ReorderOutput`` and ``ReorderInput`` s runs on the blocked
tensor directly (ONNX Runtime does the same for Add). The values computed are the same
bits; only where they lie in memory changes. A blocked tensor whose channel count is
not a multiple of the block has padding lanes, so it stays exposed through its reorder.
"""

from __future__ import annotations

import tempfile
from pathlib import Path
from typing import Sequence

import onnx
import onnx.helper

_NCHWC = "com.microsoft.nchwc"

# Element-wise ops whose attributes and other inputs do not depend on the channel
# position, and which map finite values to finite values (padding lanes of a blocked
# tensor go through them too; the next blocked op gives those lanes zero weight).
_ELEMENTWISE = {
    "Clip", "Relu", "LeakyRelu", "HardSigmoid", "HardSwish", "Sigmoid", "Tanh",
    "Elu", "Selu", "Celu", "Abs", "Neg", "Softsign",
}


def _is_reorder(node: onnx.NodeProto, op: str) -> bool:
    channels_last = next((a.i for a in node.attribute if a.name == "channels_last"), 0)
    return node.domain == _NCHWC and node.op_type == op and channels_last == 0


def _channels(node: onnx.NodeProto) -> int | None:
    return next((a.i for a in node.attribute if a.name == "channels"), None)


class _Graph:
    """Producer / consumer lookups over an optimized graph, rebuilt after each edit."""

    def __init__(self, graph: onnx.GraphProto):
        self.outputs = {o.name for o in graph.output}
        self.initializers = {i.name: i for i in graph.initializer}
        self.producer = {o: n for n in graph.node for o in n.output}
        self.consumers: dict[str, list[onnx.NodeProto]] = {}
        for n in graph.node:
            for i in n.input:
                self.consumers.setdefault(i, []).append(n)

    def scalar_constant(self, name: str) -> bool:
        """An omitted optional input or a one-value initializer (broadcasts the same to every lane)."""
        if name == "":
            return True
        init = self.initializers.get(name)
        if init is None:
            return False
        size = 1
        for d in init.dims:
            size *= d
        return size == 1

    def padded_channels(self, blocked: str) -> int | None:
        """The channel count of a blocked tensor including padding, when its producer tells it."""
        node = self.producer.get(blocked)
        if node is None:
            return None
        if node.domain == _NCHWC and node.op_type == "Conv":
            weight = self.initializers.get(node.input[1])
            return int(weight.dims[0]) if weight is not None and weight.dims else None
        if node.domain == "" and (node.op_type in _ELEMENTWISE or node.op_type in ("Add", "Sum", "Mul")):
            return self.padded_channels(node.input[0])
        return None


def _run_elementwise_blocked(graph: onnx.GraphProto) -> None:
    """``ReorderOutput -> op -> ReorderInput`` becomes ``op`` on the blocked tensor.

    Where the op's NCHW output has other users too (a graph output, an NCHW op), a
    ``ReorderOutput`` of the blocked result still provides it: no worse than before.
    """
    g = _Graph(graph)
    replace: dict[str, str] = {}  # ReorderInput output -> the op's new blocked output
    dropped: set[int] = set()
    nodes: list[onnx.NodeProto] = []
    for node in graph.node:
        nodes.append(node)
        if node.domain != "" or node.op_type not in _ELEMENTWISE or len(node.output) != 1:
            continue
        source = g.producer.get(node.input[0])
        if source is None or not _is_reorder(source, "ReorderOutput"):
            continue
        if not all(g.scalar_constant(i) for i in node.input[1:]):
            continue
        out = node.output[0]
        users = g.consumers.get(out, [])
        reorders = [u for u in users if _is_reorder(u, "ReorderInput")]
        if not reorders:
            continue
        node.input[0] = source.input[0]
        node.output[0] = f"{out}__nchwc"
        for user in reorders:
            replace[user.output[0]] = node.output[0]
            dropped.add(id(user))
        if len(reorders) < len(users) or out in g.outputs:
            nodes.append(onnx.helper.make_node(
                "ReorderOutput", [node.output[0]], [out], domain=_NCHWC, channels=_channels(source), channels_last=0,
            ))
    kept = [n for n in nodes if id(n) not in dropped]
    for n in kept:
        for k, name in enumerate(n.input):
            if name in replace:
                n.input[k] = replace[name]
    del graph.node[:]
    graph.node.extend(kept)


def _expose_blocked(graph: onnx.GraphProto, exposed: Sequence[str]) -> dict[str, tuple[str, int]]:
    """Exposed tensors made by a ``ReorderOutput`` of an unpadded blocked tensor are taken
    before it; returns {exposed name: (blocked output name, channels)}."""
    g = _Graph(graph)
    mapping: dict[str, tuple[str, int]] = {}
    for name in exposed:
        node = g.producer.get(name)
        if node is None or not _is_reorder(node, "ReorderOutput"):
            continue
        blocked = node.input[0]
        if blocked in g.outputs or g.padded_channels(blocked) != _channels(node):
            continue
        mapping[name] = (blocked, _channels(node))
    outputs = [onnx.ValueInfoProto(name=mapping[o.name][0]) if o.name in mapping else o for o in graph.output]
    del graph.output[:]
    graph.output.extend(outputs)
    # Reorders left with no consumer and no graph output go.
    g = _Graph(graph)
    kept = [
        n for n in graph.node
        if not (_is_reorder(n, "ReorderOutput") and n.output[0] not in g.outputs and not g.consumers.get(n.output[0]))
    ]
    del graph.node[:]
    graph.node.extend(kept)
    return mapping


def blocked_model(model_bytes: bytes, exposed: Sequence[str]) -> tuple[onnx.ModelProto, dict[str, tuple[str, int]]] | None:
    """ONNX Runtime's optimized form of ``model_bytes`` (a model whose graph outputs include
    ``exposed``) with exposed tensors read in the blocked layout; None when ONNX Runtime
    did not use the blocked layout (not an x86 CPU, or no convolutions).

    The result is for this machine only (the block size is the CPU's) and must be loaded
    with graph optimizations off. Returns the model and {exposed name: (output name,
    channels)}: such an output has the tensor's shape and values, in another order.
    """
    import onnxruntime as ort

    with tempfile.TemporaryDirectory(prefix="int8calib-nchwc-") as tmp:
        path = Path(tmp) / "optimized.onnx"
        options = ort.SessionOptions()
        options.log_severity_level = 3
        options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        options.optimized_model_filepath = str(path)
        ort.InferenceSession(model_bytes, options, providers=["CPUExecutionProvider"])
        optimized = onnx.load(str(path))
    if not any(n.domain == _NCHWC for n in optimized.graph.node):
        return None
    _run_elementwise_blocked(optimized.graph)
    mapping = _expose_blocked(optimized.graph, exposed)
    return (optimized, mapping) if mapping else None
