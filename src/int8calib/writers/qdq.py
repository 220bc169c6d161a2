"""The Q/DQ model: explicit INT8 quantization following TensorRT's placement rules.

* INT8 symmetric: zero points are 0, scales strictly positive.
* Activations: one scale per tensor, amax / 127, from the calibration method.
* Weights: one scale per output channel from that channel's max |w| (Conv axis 0,
  ConvTranspose axis 1, Gemm/MatMul the weight's output axis, honouring transB),
  stored as int8 initializers with a DequantizeLinear; biases stay float.
* Q/DQ goes on the inputs of Conv, ConvTranspose, Gemm and MatMul (both inputs of an
  activation x activation MatMul) and on the residual input of an Add whose other
  input comes from a quantized Conv, so TensorRT can fuse the Add into that Conv.
  Outputs of weighted ops are never quantized: BatchNormalization / Relu / Clip that
  follow are left to TensorRT's fusion, and a Conv output feeding a Clip is not
  quantized with a range the Clip would mostly cut away.
* Transformers (docs/qdq.md, "Transformers", gives the sources): the same rules place Q/DQ on
  the inputs of the Q/K/V, output and feed-forward projections (MatMul/Gemm with a constant
  weight) and on both inputs of the attention MatMuls (Q x K^T and softmax x V). Softmax,
  LayerNormalization (the op or its ReduceMean/Sub/Pow/Sqrt/Div decomposition), GELU (Erf or
  Tanh form), the attention-mask Add, the scaling Div/Mul and the residual Adds have no Q/DQ
  of their own: they read float tensors. A tensor quantized for a MatMul and also read by a
  residual Add or a LayerNormalization is quantized on the MatMul's edge only, so the residual
  stream stays float.
* A tensor read by several quantized nodes gets one Q/DQ pair that they share.
  Graph input and output names do not change.
"""

from __future__ import annotations

import math
import re
import warnings
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterable, Mapping

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

from ..errors import Int8CalibError
from ..util.atomic import write_bytes
from ..util.log import logger
from ..runner.model import FOLDER_KEY, opset_of, tensor_array
from .float_types import scale_values

WEIGHTED_OPS = ("Conv", "ConvTranspose", "Gemm", "MatMul")
PRECISIONS = ("fp32", "fp16", "int8")
MIN_OPSET = 13  # per-axis QuantizeLinear / DequantizeLinear
_PROTOBUF_LIMIT = 2**31 - 1


@dataclass
class QdqSummary:
    """What :func:`build_qdq` did, for the log and for tests."""

    activations: list[str] = field(default_factory=list)  # tensors given a per-tensor Q/DQ pair
    weights: dict[str, int] = field(default_factory=dict)  # weight initializer -> channel axis
    quantized_nodes: dict[str, str] = field(default_factory=dict)  # node id -> op type
    residual_adds: list[str] = field(default_factory=list)  # Add nodes whose residual input is quantized
    excluded: dict[str, str] = field(default_factory=dict)  # node id -> why it stays float

    def log(self) -> None:
        ops = Counter(self.quantized_nodes.values())
        logger.info(
            "Q/DQ: %d activation tensors per tensor, %d weights per channel; quantized nodes %s; %d residual Add(s)",
            len(self.activations), len(self.weights),
            ", ".join(f"{op} {n}" for op, n in sorted(ops.items())) or "none", len(self.residual_adds),
        )
        for node, why in self.excluded.items():
            logger.info("  kept in float: %s (%s)", node, why)


def node_id(node: onnx.NodeProto) -> str:
    """The name TensorRT gives the layer: the node name, or its first output when unnamed."""
    return node.name or node.output[0]


def weight_axis(node: onnx.NodeProto, input_index: int, rank: int) -> int | None:
    """The output-channel axis of a constant input of a weighted node (None: per tensor)."""
    attrs = {a.name: helper.get_attribute_value(a) for a in node.attribute}
    if node.op_type == "Conv":
        return 0
    if node.op_type == "ConvTranspose":
        return 1
    if rank < 2:
        return None
    if node.op_type == "Gemm":  # Y = A' B': A' is [M, K], B' is [K, N]
        if input_index == 0:
            return 1 if attrs.get("transA", 0) else 0
        return 0 if attrs.get("transB", 0) else 1
    # MatMul: constant B [..., K, N] -> N; constant A [..., M, K] -> M
    return rank - 1 if input_index == 1 else rank - 2


def quantize_per_channel(w: np.ndarray, axis: int | None, high_precision: str = "fp32") -> tuple[np.ndarray, np.ndarray]:
    """(int8 weights, float32 scales) with scale = max |w| / 127 over each channel of ``axis``.

    An all-zero channel gets scale 1 (any positive scale reproduces zeros exactly). The scales
    are rounded to the type ``high_precision`` stores them in (:func:`float_types.scale_values`)
    before the weights are rounded with them, so the int8 values fit the scales written.
    """
    w = np.asarray(w, dtype=np.float32)
    # max |w| as max(max w, -min w), and the rounding in place: one float temporary the size of w
    # (a weight of a model over 2 GB is a memory map read once here)
    if axis is None:
        amax = np.array(max(w.max(), -w.min()) if w.size else 0.0, dtype=np.float32)
    else:
        other = tuple(i for i in range(w.ndim) if i != axis)
        amax = np.maximum(w.max(axis=other), -w.min(axis=other)).astype(np.float32)
    scale = (amax / np.float32(127)).astype(np.float32)
    scale = np.where(scale > 0, scale, np.float32(1.0)).astype(np.float32)
    scale = scale_values(scale, high_precision, weights=True)
    shape = [1] * w.ndim
    if axis is not None:
        shape[axis] = -1
    q = w / scale.reshape(shape)
    np.rint(q, out=q)
    np.clip(q, -127, 127, out=q)
    return q.astype(np.int8), scale


class _Names:
    """Fresh tensor / node names that collide with nothing in the graph."""

    def __init__(self, graph: onnx.GraphProto):
        self.used = {i.name for i in graph.initializer} | {v.name for v in graph.input} | {v.name for v in graph.output}
        for n in graph.node:
            self.used.update(n.output)
            self.used.update(n.input)
            self.used.add(n.name)

    def __call__(self, base: str) -> str:
        name, k = base, 1
        while name in self.used:
            name, k = f"{base}_{k}", k + 1
        self.used.add(name)
        return name


def _constants(graph: onnx.GraphProto) -> dict[str, np.ndarray]:
    """Float initializers and Constant-node values by tensor name (graph inputs excluded: they can be fed)."""
    fed = {v.name for v in graph.input}
    out = {}
    for init in graph.initializer:
        if init.name not in fed and init.data_type == TensorProto.FLOAT:
            out[init.name] = tensor_array(init)  # a memory map where the weights stay in an external file
    for node in graph.node:
        if node.op_type == "Constant" and node.attribute and node.attribute[0].name == "value":
            value = numpy_helper.to_array(node.attribute[0].t)
            if value.dtype == np.float32:
                out[node.output[0]] = value
    return out


def _quantized_inputs(node: onnx.NodeProto) -> list[int]:
    """Indices of the inputs TensorRT wants quantized (never the bias)."""
    return [i for i in (0, 1) if i < len(node.input) and node.input[i]]


def activation_tensors(model: onnx.ModelProto) -> list[str]:
    """The tensors a Q/DQ model can take a range from: activation inputs of weighted ops and of Adds fed by a Conv.

    When only a Q/DQ model is asked for, collecting statistics for these alone lets ONNX Runtime
    keep Conv+Clip fused and skips the rest of the histograms (docs/performance.md).
    """
    constants = _constants(model.graph)
    convs = {o for n in model.graph.node if n.op_type == "Conv" for o in n.output}
    names: list[str] = []
    for node in model.graph.node:
        if node.op_type in WEIGHTED_OPS:
            names += [node.input[i] for i in _quantized_inputs(node)]
        elif node.op_type == "Add" and any(t in convs for t in node.input):
            # only an Add fed by a Conv can get its residual input quantized (build_qdq);
            # the Adds of a transformer (bias, residual, mask, LayerNorm, GELU) never do
            names += list(node.input)
    return list(dict.fromkeys(n for n in names if n and n not in constants))


def at_opset(model: onnx.ModelProto, minimum: int = MIN_OPSET, needs: str = "per-channel Q/DQ", hint: str = "") -> onnx.ModelProto:
    """``model`` at opset >= ``minimum`` (``needs`` says why), converted with onnx's version converter if older."""
    opset = opset_of(model)
    if opset >= minimum:
        return model
    try:
        return onnx.version_converter.convert_version(model, minimum)
    except Exception as exc:  # the converter raises assorted errors for unsupported ops
        raise Int8CalibError(
            f"the model uses opset {opset}; {needs} needs opset >= {minimum} and converting failed ({exc}){hint}"
            .splitlines()[0]
        ) from None


def build_qdq(
    model: onnx.ModelProto,
    amax: Mapping[str, float],
    exclude_nodes: str | None = None,
    exclude_op_types: Iterable[str] = (),
    keep_float: Iterable[str] = (),
    scales: Mapping[str, float] | None = None,
    high_precision: str = "fp32",
    weights: Mapping[str, tuple[np.ndarray, np.ndarray]] | None = None,
) -> tuple[onnx.ModelProto, QdqSummary]:
    """A copy of ``model`` with Q/DQ nodes, and what was done.

    ``exclude_nodes`` is a regular expression searched in node names; ``exclude_op_types``
    op types kept in float; ``keep_float`` node ids kept in float by mixed precision.
    ``scales`` gives float32 activation scales to write as they are, bit for bit, instead
    of ``amax / 127`` (a calibration cache's own numbers); ``amax`` must still hold those tensors.
    Every scale is rounded to the type ``high_precision`` (fp32, fp16, bf16) will store it in, so
    :func:`writers.precision.lower_precision` converts them exactly; the model is still float32.
    ``weights`` gives, per weight initializer, the (int8 values, per-channel scales) to write instead
    of rounding to nearest (``passes.weight_rounding``, with scales of that same type).
    """
    weights = weights or {}
    scales = scales or {}
    try:
        pattern = re.compile(exclude_nodes) if exclude_nodes else None
    except re.error as exc:
        raise Int8CalibError(f"--exclude-nodes: invalid regular expression {exclude_nodes!r} ({exc})") from None
    skip_ops, keep = set(exclude_op_types), set(keep_float)
    out = onnx.ModelProto()
    out.CopyFrom(at_opset(model))
    graph = out.graph
    constants = _constants(graph)
    producer = {o: n for n in graph.node for o in n.output}
    consumers: dict[str, list[onnx.NodeProto]] = {}
    for n in graph.node:
        for t in n.input:
            consumers.setdefault(t, []).append(n)
    summary = QdqSummary()

    def usable_range(tensor: str) -> str | None:
        """None when ``tensor`` has a usable range, else why not."""
        value = amax.get(tensor)
        if value is None:
            return f"no range for tensor '{tensor}'"
        if not math.isfinite(value) or value < 0:
            raise Int8CalibError(f"tensor '{tensor}': amax must be finite and >= 0, got {value}")
        if np.float32(value) / np.float32(127) <= 0:
            return f"tensor '{tensor}' was all zero in calibration"
        return None

    def excluded(node: onnx.NodeProto) -> str | None:
        if node_id(node) in keep:
            return "kept in float for accuracy"
        if node.op_type in skip_ops:
            return f"op type {node.op_type} excluded"
        if pattern is not None and pattern.search(node_id(node)):
            return f"name matches --exclude-nodes {exclude_nodes!r}"
        return None

    # 1. Which node inputs get Q/DQ: {(node index, input index): ("act", None) | ("weight", axis)}
    plan: dict[tuple[int, int], tuple[str, int | None]] = {}
    quantized_convs: set[str] = set()
    for k, node in enumerate(graph.node):
        if node.op_type not in WEIGHTED_OPS:
            continue
        why = excluded(node)
        entries = {}
        for i in _quantized_inputs(node):
            name = node.input[i]
            if name in constants:
                entries[(k, i)] = ("weight", weight_axis(node, i, constants[name].ndim))
            else:
                why = why or usable_range(name)
                entries[(k, i)] = ("act", None)
        if why:
            summary.excluded[node_id(node)] = why
            continue
        plan.update(entries)
        summary.quantized_nodes[node_id(node)] = node.op_type
        if node.op_type == "Conv":
            quantized_convs.add(node.output[0])
    for k, node in enumerate(graph.node):
        if node.op_type != "Add" or len(node.input) != 2:
            continue
        why = excluded(node)
        if why:
            summary.excluded[node_id(node)] = why
            continue
        # The fusable side: a quantized Conv whose output only this Add reads.
        fusable = [i for i in (0, 1) if node.input[i] in quantized_convs and len(consumers[node.input[i]]) == 1]
        if not fusable:
            continue
        residual = 1 - fusable[0]
        name = node.input[residual]
        if name in constants or usable_range(name):
            continue
        plan[(k, residual)] = ("act", None)
        summary.residual_adds.append(node_id(node))

    # 2. Rewrite: one Q/DQ per activation tensor, one int8 weight + DQ per (weight, axis).
    fresh = _Names(graph)
    new_inits: list[TensorProto] = []
    head: list[onnx.NodeProto] = []  # DQ of weights and Q/DQ of graph inputs
    after: dict[str, list[onnx.NodeProto]] = {}  # producer output -> Q/DQ nodes to place after it
    replaced: dict[tuple[str, str, int | None], str] = {}

    scalar_zero = numpy_helper.from_array(np.array(0, np.int8), fresh("zero_point_int8"))

    for (k, i), (kind, axis) in sorted(plan.items()):
        node = graph.node[k]
        tensor = node.input[i]
        key = (kind, tensor, axis)
        if key not in replaced:
            if kind == "act":
                value = scales[tensor] if tensor in scales else amax[tensor] / 127.0
                value = scale_values(np.array(value, np.float32), high_precision)
                scale = numpy_helper.from_array(value, fresh(f"{tensor}_scale"))
                zp = scalar_zero
                q_out, dq_out = fresh(f"{tensor}_QuantizeLinear"), fresh(f"{tensor}_DequantizeLinear")
                pair = [
                    helper.make_node("QuantizeLinear", [tensor, scale.name, zp.name], [q_out], fresh(f"{tensor}_QuantizeLinear")),
                    helper.make_node("DequantizeLinear", [q_out, scale.name, zp.name], [dq_out], fresh(f"{tensor}_DequantizeLinear")),
                ]
                new_inits.append(scale)
                (after.setdefault(tensor, []) if tensor in producer else head).extend(pair)
                summary.activations.append(tensor)
            else:
                q, s = weights[tensor] if tensor in weights else quantize_per_channel(constants[tensor], axis, high_precision)
                qw = numpy_helper.from_array(q, fresh(f"{tensor}_int8"))
                scale = numpy_helper.from_array(s if axis is not None else s.reshape(()), fresh(f"{tensor}_scale"))
                zp = scalar_zero if axis is None else numpy_helper.from_array(np.zeros(s.size, np.int8), fresh(f"{tensor}_zero_point"))
                dq_out = fresh(f"{tensor}_DequantizeLinear")
                attrs = {"axis": axis} if axis is not None else {}
                head.append(helper.make_node("DequantizeLinear", [qw.name, scale.name, zp.name], [dq_out], dq_out, **attrs))
                new_inits += [qw, scale] + ([zp] if zp is not scalar_zero else [])
                summary.weights[tensor] = -1 if axis is None else axis
            replaced[key] = dq_out
        node.input[i] = replaced[key]

    nodes: list[onnx.NodeProto] = list(head)
    for node in graph.node:
        nodes.append(node)
        for o in node.output:
            nodes.extend(after.get(o, []))
    del graph.node[:]
    graph.node.extend(nodes)
    graph.initializer.extend([scalar_zero, *new_inits])
    drop_unused_initializers(graph)
    return out, summary


def drop_unused_initializers(graph: onnx.GraphProto) -> None:
    """Initializers nothing reads, deleted in place (re-adding the kept ones would copy every weight
    again: protobuf frees a graph's memory only with the whole graph)."""
    used = {t for n in graph.node for t in n.input} | {o.name for o in graph.output} | {i.name for i in graph.input}
    for i in reversed(range(len(graph.initializer))):
        if graph.initializer[i].name not in used:
            del graph.initializer[i]


def to_fp16(model: onnx.ModelProto, keep_io_types: bool = True) -> onnx.ModelProto:
    """float16 weights and activations; graph inputs and outputs stay float32 unless ``keep_io_types`` is False."""
    from onnxconverter_common import float16

    with warnings.catch_warnings():  # it warns for every weight below float16's range
        warnings.simplefilter("ignore")
        return float16.convert_float_to_float16(model, keep_io_types=keep_io_types)


def insert_qdq(
    model: onnx.ModelProto,
    amax: Mapping[str, float],
    exclude_nodes: str | None = None,
    exclude_op_types: Iterable[str] = (),
    precision: str = "int8",
    keep_float: Iterable[str] = (),
    scales: Mapping[str, float] | None = None,
) -> onnx.ModelProto:
    """The model TensorRT should build at ``precision``: a Q/DQ model for int8, float16 for fp16, the input for fp32."""
    if precision not in PRECISIONS:
        raise Int8CalibError(f"--precision must be one of {', '.join(PRECISIONS)}, got {precision!r}")
    if precision == "fp32":
        return model
    if precision == "fp16":
        return to_fp16(model)
    qdq, summary = build_qdq(model, amax, exclude_nodes, exclude_op_types, keep_float, scales)
    summary.log()
    return qdq


def check(model: "onnx.ModelProto | str") -> None:
    """The full ONNX check (with shape inference) of a model or a model file; raises Int8CalibError on failure."""
    try:
        onnx.checker.check_model(model, full_check=True)
    except Exception as exc:
        raise Int8CalibError(f"the written model fails the ONNX check: {str(exc).splitlines()[0]}") from None


def write_model(path: str | Path, model: onnx.ModelProto, external_data: bool = False) -> None:
    """Check ``model`` and write it atomically: one file, or the graph plus ``<name>.data`` beside it
    when ``external_data`` is asked for (the source model had it), any weight still lies in an
    external file or the model is over protobuf's 2 GB."""
    from ..runner.model import uses_external_data

    if not external_data and not uses_external_data(model) and model.ByteSize() <= _PROTOBUF_LIMIT:
        check(model)
        write_bytes(path, model.SerializeToString())
        return
    write_with_external_data(path, model)


EXTERNAL_MIN_BYTES = 1024  # smaller tensors stay in the graph (scales, zero points, shapes)
_ALIGN = 4096  # tensor offsets on page boundaries, so readers can map them
_CHUNK = 16 << 20


def write_with_external_data(path: str | Path, model: onnx.ModelProto) -> None:
    """The graph to ``path`` and every initializer of ``EXTERNAL_MIN_BYTES`` or more to ``<name>.data``,
    streamed one tensor at a time: those still in the source model's data file are copied from it
    in chunks, never loaded. ``model`` is changed in place (its tensors now refer to the new file).
    The data file is written (atomically) before the graph, so the graph never names missing data."""
    from ..runner.model import refer_to_file
    from ..util.atomic import atomic_open

    path = Path(path)
    data_name = path.name + ".data"
    with atomic_open(path.with_name(data_name), "wb") as out:
        for t in model.graph.initializer:
            info = {e.key: e.value for e in t.external_data}
            if t.data_location == TensorProto.EXTERNAL:
                if FOLDER_KEY not in info:
                    raise Int8CalibError(f"{path}: initializer '{t.name}' refers to external data of unknown origin")
                source, start, length = Path(info[FOLDER_KEY]) / info["location"], int(info.get("offset", 0)), info.get("length")
                length = int(length) if length is not None else source.stat().st_size - start
                offset = _pad(out)
                with open(source, "rb") as f:
                    f.seek(start)
                    left = length
                    while left:
                        chunk = f.read(min(_CHUNK, left))
                        if not chunk:
                            raise Int8CalibError(f"{source}: external data of '{t.name}' ends early")
                        out.write(chunk)
                        left -= len(chunk)
            else:
                data = numpy_helper.to_array(t)
                if data.nbytes < EXTERNAL_MIN_BYTES or t.data_type == TensorProto.STRING:
                    continue
                offset, length = _pad(out), data.nbytes
                out.write(np.ascontiguousarray(data).tobytes())
            refer_to_file(t, data_name, offset, length)
    # onnx checks external tensors against their files, so the graph is checked where it will lie
    with atomic_open(path, "wb", check=check) as out:
        out.write(model.SerializeToString())


def _pad(f) -> int:
    """Pad ``f`` to the next ``_ALIGN`` boundary; returns the offset."""
    here = f.tell()
    gap = -here % _ALIGN
    if gap:
        f.write(b"\0" * gap)
    return here + gap
