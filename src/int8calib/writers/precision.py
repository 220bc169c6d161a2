"""INT8 + FP16 (or BF16): the Q/DQ model as strongly typed TensorRT builds it.

TensorRT 10.1+ with ``--stronglyTyped`` and TensorRT 11 (always strongly typed) run every layer
in the type the ONNX graph gives its tensors; no ``--fp16`` flag widens the choice. A Q/DQ model
whose float tensors are float32 therefore runs SiLU, Resize, Softmax, LayerNorm, residual Adds and
every layer left without Q/DQ in FP32. :func:`lower_precision` rewrites a float32 Q/DQ model so
that every float computation outside Q/DQ runs in float16 (or bfloat16), as ModelOpt's ONNX PTQ
does with ``--high_precision_dtype fp16``:

* Q/DQ scales in the low type (opset 19 QuantizeLinear / DequantizeLinear take a float16 or
  bfloat16 scale; the DequantizeLinear output has the scale's type), so the INT8 layers read and
  write FP16 tensors;
* float initializers and Constant values, ``Cast(to=float)`` and ``ConstantOfShape`` values in the
  low type; inputs an operator's schema fixes to float32 (Resize's ``scales``) stay float32;
* graph inputs and outputs keep float32, with a Cast at each edge (``keep_io_types=False``: they
  take the low type too);
* FP32 only where needed, each node kept with its reason (:class:`PrecisionSummary`): an output or
  input observed near or beyond FP16's range (``range_limit``) or inside its subnormal range, a
  constant FP16 cannot hold, an operator without a float16 / bfloat16 form, a sub-graph, or the
  user's choice. Casts go where an FP32 node meets the low-precision graph.

The decision reads only what calibration measured (``ranges``: max |x| per tensor over the
calibration data); nothing is run here.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass, field
from typing import Mapping

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

from ..errors import Int8CalibError
from ..util.log import logger
from .float_types import (  # noqa: F401 (re-exported: the precision API)
    DEFAULT_HIGH_PRECISION, FP16_MAX, FP16_MIN_NORMAL, FP16_RANGE_LIMIT, HIGH_PRECISIONS, LOW_TYPES,
    check_high_precision, tensor_of,
)
from ..runner.model import opset_of, tensor_array
from .qdq import drop_unused_initializers, _Names, at_opset, node_id

LOW_OPSET = 19  # float16 / bfloat16 scales of QuantizeLinear / DequantizeLinear
LOW_OPSET_HINT = "; --high-precision fp32 writes the model without them"

_SUBGRAPH_OPS = ("If", "Loop", "Scan")
# Ops that move or select data without arithmetic: they take float32 where all they move is float32.
_MOVEMENT_OPS = frozenset(("Identity", "Reshape", "Transpose", "Squeeze", "Unsqueeze", "Flatten", "Slice", "Gather",
                           "GatherElements", "GatherND", "Split", "Expand", "Tile", "Concat", "Pad",
                           "DepthToSpace", "SpaceToDepth"))
_SMALL_CONSTANT = 64  # constants of at most this many values are epsilons, bounds, scalars
# ... except the parameters of these layers (a dead channel's bias of 1e-37 is no epsilon)
_PARAMETRIC_OPS = ("Conv", "ConvTranspose", "Gemm", "MatMul", "BatchNormalization", "InstanceNormalization",
                   "LayerNormalization", "GroupNormalization")
_QDQ = ("QuantizeLinear", "DequantizeLinear")


@dataclass
class PrecisionOptions:
    """How float computation outside Q/DQ is typed (``calibrate --high-precision`` and its options)."""

    high_precision: str = DEFAULT_HIGH_PRECISION  # fp16 | bf16 | fp32
    fp32_nodes: str | None = None  # regular expression on node names forced to FP32
    fp32_op_types: tuple[str, ...] = ()
    low_nodes: str | None = None  # ... forced to the low type whatever the rules say
    low_op_types: tuple[str, ...] = ()
    keep_io_types: bool = True  # graph inputs / outputs stay float32
    ranges: dict[str, float] = field(default_factory=dict)  # observed max |x| per tensor (float model names)

    def __post_init__(self):
        check_high_precision(self.high_precision)

    @property
    def lowered(self) -> bool:
        return self.high_precision != "fp32"


@dataclass
class PrecisionSummary:
    """What :func:`lower_precision` did, for the log, the report, ``inspect`` and tests."""

    precision: str  # fp16 | bf16 | fp32
    low_nodes: int = 0  # float nodes computing in the low type
    fp32_nodes: dict[str, str] = field(default_factory=dict)  # node id -> why it stays FP32
    casts: int = 0  # Cast nodes added (graph edges and FP32 islands)

    def to_dict(self) -> dict:
        return {"high_precision": self.precision, "low_precision_nodes": self.low_nodes, "casts_added": self.casts,
                "fp32_nodes": dict(self.fp32_nodes)}

    @classmethod
    def from_dict(cls, record: dict) -> "PrecisionSummary":
        return cls(record.get("high_precision", "fp32"), int(record.get("low_precision_nodes", 0)),
                   dict(record.get("fp32_nodes") or {}), int(record.get("casts_added", 0)))

    def lines(self) -> list[str]:
        if self.precision == "fp32":
            return ["precision: INT8 where Q/DQ is, FP32 elsewhere (--high-precision fp32)"]
        low = self.precision.upper()
        out = [f"precision: INT8 where Q/DQ is, {low} elsewhere ({self.low_nodes} nodes), "
               f"FP32 kept for {len(self.fp32_nodes)} node(s), {self.casts} cast(s) added"]
        out += [f"  kept FP32: {node} ({why})" for node, why in self.fp32_nodes.items()]
        return out

    def log(self) -> None:
        for line in self.lines():
            logger.info("%s", line)


def _types(model: onnx.ModelProto) -> dict[str, int]:
    from ..runner.model import infer_types

    types = infer_types(model)
    for node in model.graph.node:  # Constant values shape inference may leave untyped
        if node.op_type == "Constant" and node.attribute and node.attribute[0].name == "value":
            types.setdefault(node.output[0], node.attribute[0].t.data_type)
    return types


class _Schemas:
    """Per (op, domain): the allowed types of each input / output (None: unknown op)."""

    def __init__(self, opset: int):
        self.opset = opset
        self.cache: dict[tuple[str, str], object] = {}

    def get(self, node: onnx.NodeProto):
        key = (node.op_type, node.domain)
        if key not in self.cache:
            try:
                self.cache[key] = onnx.defs.get_schema(node.op_type, self.opset, node.domain or "")
            except Exception:
                self.cache[key] = None
        return self.cache[key]

    @staticmethod
    def allowed(schema, formal) -> set[str]:
        constraints = {c.type_param_str: set(c.allowed_type_strs) for c in schema.type_constraints}
        return constraints.get(formal.type_str, {formal.type_str})

    @staticmethod
    def formal(schema, index: int):
        """The formal input parameter behind input ``index`` (a variadic last one repeats)."""
        params = schema.inputs
        if index < len(params):
            return params[index]
        if params and params[-1].option == onnx.defs.OpSchema.FormalParameterOption.Variadic:
            return params[-1]
        return None


def _float_constants(graph: onnx.GraphProto) -> dict[str, np.ndarray]:
    """Float32 initializers (in memory) and Constant-node values by tensor name."""
    out = {}
    for init in graph.initializer:
        if init.data_type == TensorProto.FLOAT and init.data_location != TensorProto.EXTERNAL:
            out[init.name] = numpy_helper.to_array(init)
    for node in graph.node:
        if node.op_type == "Constant" and node.attribute and node.attribute[0].name == "value" \
                and node.attribute[0].t.data_type == TensorProto.FLOAT:
            out[node.output[0]] = numpy_helper.to_array(node.attribute[0].t)
    return out


def _constant_problem(values: np.ndarray, precision: str, epsilons: bool = True) -> str | None:
    """Why FP16 cannot hold a constant (None: it can): a value beyond its range (AutoCast's
    ``init_max`` rule), or, in a small constant (an epsilon, a clamp bound), a non-zero value FP16
    rounds to zero, which would turn ``x / max(n, eps)`` into a division by zero."""
    if precision != "fp16" or values.size == 0:
        return None
    magnitudes = np.abs(values.astype(np.float32, copy=False))
    top = float(magnitudes.max())
    if top > FP16_MAX:
        return f"constant with |value| up to {top:.3g}, beyond FP16's {FP16_MAX:g}"
    if epsilons and values.size <= _SMALL_CONSTANT:
        nonzero = magnitudes[magnitudes > 0]
        if nonzero.size and (nonzero.astype(np.float16) == 0).any():
            return f"constant {float(nonzero.min()):.3g} would be 0 in FP16"
    return None


def lower_precision(model: onnx.ModelProto, options: PrecisionOptions | None = None) -> tuple[onnx.ModelProto, PrecisionSummary]:
    """``model`` (a float32 Q/DQ model, changed in place and returned) with its float computation
    in ``options.high_precision`` (fp16 / bf16; fp32 returns it as it is).

    ``options.ranges``: max |x| of tensors as calibration observed them (float model names).
    ``fp32_nodes`` / ``fp32_op_types`` force nodes (regular expression on node names, op types) to
    FP32; ``low_nodes`` / ``low_op_types`` force them to the low type whatever the rules say.
    """
    options = options or PrecisionOptions()
    precision, ranges, keep_io_types = options.high_precision, options.ranges, options.keep_io_types
    fp32_nodes, low_nodes, range_limit = options.fp32_nodes, options.low_nodes, FP16_RANGE_LIMIT
    summary = PrecisionSummary(precision)
    if precision == "fp32":
        return model, summary
    low_type = LOW_TYPES[precision]
    try:
        fp32_re = re.compile(fp32_nodes) if fp32_nodes else None
        low_re = re.compile(low_nodes) if low_nodes else None
    except re.error as exc:
        raise Int8CalibError(f"--fp32-nodes / --low-precision-nodes: invalid regular expression ({exc})") from None
    fp32_ops, low_ops = set(options.fp32_op_types), set(options.low_op_types)

    model = at_opset(model, LOW_OPSET, "float16 / bfloat16 Q/DQ scales", LOW_OPSET_HINT)
    graph = model.graph
    types = _types(model)
    schemas = _Schemas(opset_of(model))
    constants = _float_constants(graph)
    producer = {o: n for n in graph.node for o in n.output}
    consumers: dict[str, list[onnx.NodeProto]] = {}
    for n in graph.node:
        for t in n.input:
            consumers.setdefault(t, []).append(n)

    def is_float(name: str) -> bool:
        return bool(name) and types.get(name) == TensorProto.FLOAT

    def observed(name: str) -> float | None:
        value = ranges.get(name)
        return None if value is None else float(value)

    def why_fp32(node: onnx.NodeProto) -> str | None:
        nid = node_id(node)
        if low_re is not None and low_re.search(nid) or node.op_type in low_ops:
            return None
        if fp32_re is not None and fp32_re.search(nid):
            return f"name matches --fp32-nodes {fp32_nodes!r}"
        if node.op_type in fp32_ops:
            return f"op type {node.op_type} forced to FP32"
        if node.op_type in _SUBGRAPH_OPS:
            return "holds a sub-graph"
        schema = schemas.get(node)
        if schema is None:
            return f"no {precision} form of {node.domain or 'ai.onnx'}::{node.op_type} known"
        wanted = f"tensor({'float16' if precision == 'fp16' else 'bfloat16'})"
        for index, name in enumerate(node.input):
            formal = schemas.formal(schema, index)
            if is_float(name) and formal is not None and "tensor(float)" in schemas.allowed(schema, formal) \
                    and len(schemas.allowed(schema, formal)) > 1 and wanted not in schemas.allowed(schema, formal):
                return f"{node.op_type} has no {precision} form"
        if precision != "fp16":
            return None  # bf16 has float32's range
        if node.op_type == "DequantizeLinear":
            return None  # an activation's follows its QuantizeLinear, a weight's its reader
        if node.op_type == "QuantizeLinear":
            # the pair's output reaches 127 x scale, its input the observed range
            scale = constants.get(node.input[1])
            top = max(float(np.abs(scale).max()) * 127 if scale is not None else 0.0, observed(node.input[0]) or 0.0)
            if not math.isfinite(top) or top > range_limit:
                return f"'{node.input[0]}' quantized over +-{top:.4g}, near or beyond FP16's {FP16_MAX:g}"
            if scale is not None and float(np.abs(scale).min()) < FP16_MIN_NORMAL:
                return f"scale {float(np.abs(scale).min()):.3g} below FP16's normal range"
            return None
        values = [constants[name] for name in node.input if name in constants]
        values += [numpy_helper.to_array(a.t) for a in node.attribute
                   if node.op_type == "ConstantOfShape" and a.name == "value" and a.t.data_type == TensorProto.FLOAT]
        for value in values:
            problem = _constant_problem(value, precision, epsilons=node.op_type not in _PARAMETRIC_OPS)
            if problem:
                return problem
        for name in list(node.output) + [i for i in node.input if i not in constants]:
            top = observed(name) if is_float(name) else None
            if top is None:
                continue
            if not math.isfinite(top) or top > range_limit:
                return f"'{name}' observed up to {top:.4g}, near or beyond FP16's {FP16_MAX:g}"
            if 0 < top < FP16_MIN_NORMAL and name in node.output:
                return f"'{name}' observed only below {top:.3g}, in FP16's subnormal range"
        return None

    # 1. Each float node's precision.
    low: dict[int, bool] = {}
    initializer_names = {i.name for i in graph.initializer}
    fp32_tensors = {vi.name for vi in graph.input if is_float(vi.name)} if keep_io_types else set()
    for k, node in enumerate(graph.node):
        if not any(is_float(t) for t in list(node.input) + list(node.output)):
            continue
        if node.op_type == "Constant":
            continue  # its value follows its readers (step 2)
        why = why_fp32(node)
        low[k] = why is None
        if why:
            summary.fp32_nodes[node_id(node)] = why
        elif node.op_type in _MOVEMENT_OPS:
            # moving float32 data computes nothing: it stays float32 rather than be cast down and back up
            moved = [t for t in node.input if is_float(t) and t not in constants and t not in initializer_names]
            low[k] = not moved or not all(t in fp32_tensors for t in moved)
        if not low[k]:
            fp32_tensors.update(o for o in node.output if is_float(o))
    # An activation's DequantizeLinear has its QuantizeLinear's type (the pair shares a scale).
    index = {id(n): k for k, n in enumerate(graph.node)}
    for k, node in enumerate(graph.node):
        if node.op_type == "DequantizeLinear" and node.input[0] in producer and producer[node.input[0]].op_type == "QuantizeLinear":
            low[k] = low.get(index[id(producer[node.input[0]])], True)
            summary.fp32_nodes.pop(node_id(node), None)
    # A weight's DequantizeLinear has its reader's type (a strongly typed layer's inputs agree).
    for k, node in enumerate(graph.node):
        if node.op_type == "DequantizeLinear" and node.input[0] not in producer:
            readers = [index[id(c)] for c in consumers.get(node.output[0], [])]
            if readers and all(r in low for r in readers):
                low[k] = any(low[r] for r in readers)

    # 2. Rewrite: constants per reader type, node types, casts where types meet.
    fresh = _Names(graph)
    dtype_of: dict[str, int] = {}  # float activation -> its element type after the rewrite
    inputs = {vi.name for vi in graph.input}
    for vi in graph.input:
        if is_float(vi.name):
            dtype_of[vi.name] = TensorProto.FLOAT if keep_io_types else low_type
            if not keep_io_types:
                vi.type.tensor_type.elem_type = low_type
    constant_nodes = {n.output[0]: n for n in graph.node if n.op_type == "Constant" and is_float(n.output[0])}
    low_copies: dict[str, str] = {}
    new_inits: list[TensorProto] = []
    casts: dict[tuple[str, int], str] = {}
    cast_nodes: dict[str, list[onnx.NodeProto]] = {}  # placed after the tensor's producer
    head: list[onnx.NodeProto] = []
    initializers = {i.name: i for i in graph.initializer}

    def low_constant(name: str) -> str:
        """The low-type copy of a float constant (the initializer converted when nothing reads it in float32)."""
        if name not in low_copies:
            if name in constant_nodes:
                values = numpy_helper.to_array(constant_nodes[name].attribute[0].t)
            else:
                values = constants.get(name)
                if values is None:  # external data: read it now
                    values = tensor_array(initializers[name])
            copy = fresh(f"{name}_{precision}")
            new_inits.append(tensor_of(values, copy, precision))
            low_copies[name] = copy
        return low_copies[name]

    def cast(name: str, to: int) -> str:
        key = (name, to)
        if key not in casts:
            out = fresh(f"{name}_cast_{'fp32' if to == TensorProto.FLOAT else precision}")
            node = helper.make_node("Cast", [name], [out], fresh(f"{name}_Cast"), to=to)
            (cast_nodes.setdefault(name, []) if name in producer else head).append(node)
            casts[key] = out
            summary.casts += 1
        return casts[key]

    for k, node in enumerate(graph.node):
        if k not in low:
            continue
        node_low = low[k]
        target = low_type if node_low else TensorProto.FLOAT
        schema = schemas.get(node)
        for i, name in enumerate(node.input):
            if not is_float(name):
                continue
            formal = schemas.formal(schema, i) if schema is not None else None
            fixed_fp32 = formal is not None and schemas.allowed(schema, formal) == {"tensor(float)"}
            want = TensorProto.FLOAT if fixed_fp32 else target
            if name in constants or name in constant_nodes or (name in initializers and name not in inputs):
                if want != TensorProto.FLOAT:
                    node.input[i] = low_constant(name)
                continue
            have = dtype_of.get(name, TensorProto.FLOAT)
            if have != want:
                node.input[i] = cast(name, want)
        if node_low:
            summary.low_nodes += 1
            if node.op_type == "Cast":
                for a in node.attribute:
                    if a.name == "to" and a.i == TensorProto.FLOAT:
                        a.i = low_type
            elif node.op_type == "ConstantOfShape":
                for a in node.attribute:
                    if a.name == "value" and a.t.data_type == TensorProto.FLOAT:
                        a.t.CopyFrom(tensor_of(numpy_helper.to_array(a.t), a.t.name, precision))
        for o in node.output:
            if is_float(o):
                dtype_of[o] = target

    # Graph outputs keep float32 (or take the low type): a Cast under the output's own name.
    io_type = TensorProto.FLOAT if keep_io_types else low_type
    for vi in graph.output:
        name = vi.name
        if not is_float(name) or name in inputs:
            continue
        have = dtype_of.get(name, TensorProto.FLOAT)
        vi.type.tensor_type.elem_type = io_type
        if have == io_type:
            continue
        inner = fresh(f"{name}_{'fp32' if have == TensorProto.FLOAT else precision}")
        _rename(graph, name, inner)
        dtype_of[inner] = have
        cast_nodes.setdefault(inner, []).append(helper.make_node("Cast", [inner], [name], fresh(f"{name}_Cast"), to=io_type))
        summary.casts += 1

    nodes = list(head)
    for node in graph.node:
        nodes.append(node)
        for o in node.output:
            nodes.extend(cast_nodes.get(o, []))
    del graph.node[:]
    graph.node.extend(nodes)
    graph.initializer.extend(new_inits)
    _drop_unread(graph)
    # A constant now read only in the low type keeps its own name (weights stay recognisable).
    names = {i.name for i in graph.initializer} | {o for n in graph.node for o in n.output}
    back = {copy: orig for orig, copy in low_copies.items() if orig not in names}
    for init in graph.initializer:
        init.name = back.get(init.name, init.name)
    for node in graph.node:
        for i, t in enumerate(node.input):
            node.input[i] = back.get(t, t)
    del graph.value_info[:]  # float32 types recorded before the rewrite are stale
    return model, summary


def _rename(graph: onnx.GraphProto, old: str, new: str) -> None:
    """Every node output and input named ``old`` becomes ``new`` (graph outputs excepted)."""
    for node in graph.node:
        for i, o in enumerate(node.output):
            if o == old:
                node.output[i] = new
        for i, t in enumerate(node.input):
            if t == old:
                node.input[i] = new


def _drop_unread(graph: onnx.GraphProto) -> None:
    """Initializers and Constant nodes no node or graph output reads any more."""
    while True:
        read = {t for n in graph.node for t in n.input} | {o.name for o in graph.output}
        dead = [n for n in graph.node if n.op_type == "Constant" and n.output[0] not in read]
        if not dead:
            break
        for n in dead:
            graph.node.remove(n)
    drop_unused_initializers(graph)


def float32_compute_nodes(model: onnx.ModelProto) -> list[str]:
    """Nodes (ids) of ``model`` that compute float32 tensors, Casts, shape ops and data movement aside:
    what a strongly typed TensorRT build runs in FP32 (a DequantizeLinear feeding an FP32 layer counts)."""
    types = _types(model)
    passive = {"Cast", "Shape", "Size", "Constant", *_MOVEMENT_OPS}
    out = []
    for node in model.graph.node:
        if node.op_type in passive:
            continue
        if any(types.get(t) == TensorProto.FLOAT for t in node.output if t):
            out.append(node.name or node.output[0])
    return out


def observed_ranges(statistics) -> dict[str, float]:
    """max |x| of every tensor the calibration statistics hold (exact over all the data)."""
    return {name: h.amax for name, h in statistics.tensors.items()} if statistics is not None else {}


def unranged_tensors(model: onnx.ModelProto, options: PrecisionOptions) -> list[str]:
    """The float activations of the float ``model`` whose range the FP16 rules need and ``options.ranges``
    lacks (none for fp32 / bf16, whose range is float32's)."""
    from ..runner.model import calibratable_tensors

    if options.high_precision != "fp16":
        return []
    return [t for t in calibratable_tensors(model) if t not in options.ranges]


def model_precision(model: onnx.ModelProto, record: dict | None = None) -> PrecisionSummary:
    """How ``model`` types its float computation: from its int8calib record when it has one (the kept
    nodes' reasons), else read off the graph (the type of its Q/DQ scales, its FP32 compute nodes)."""
    if record and record.get("precision"):
        return PrecisionSummary.from_dict(record["precision"])
    scale_types = {i.data_type for i in model.graph.initializer
                   if i.name in {n.input[1] for n in model.graph.node if n.op_type in ("QuantizeLinear", "DequantizeLinear")}}
    low = next((name for name, t in LOW_TYPES.items() if t in scale_types), "fp32")
    summary = PrecisionSummary(low)
    if low != "fp32":
        summary.fp32_nodes = {n: "float32 in the graph (no int8calib record of why)" for n in float32_compute_nodes(model)}
    return summary


def describe_precision(summary: PrecisionSummary) -> str:
    """One line: ``INT8 + FP16; FP32 kept: a (why), b (why)``."""
    if summary.precision == "fp32":
        return "INT8 + FP32 (every float computation in FP32)"
    kept = "; ".join(f"{node} ({why})" for node, why in summary.fp32_nodes.items())
    return f"INT8 + {summary.precision.upper()}; FP32 kept: " + (f"{len(summary.fp32_nodes)} node(s): {kept}" if kept else "none")


def cast_source(name: str, producer: Mapping[str, onnx.NodeProto]) -> str:
    """The tensor ``name`` is a type cast of, when :func:`lower_precision` added that Cast (graph
    inputs, FP32 islands): what a Q/DQ pair quantizes, by the float model's name."""
    node = producer.get(name)
    while node is not None and node.op_type == "Cast" and name.startswith(node.input[0] + "_cast_"):
        name = node.input[0]
        node = producer.get(name)
    return name
