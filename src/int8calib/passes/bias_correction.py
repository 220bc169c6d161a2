"""Bias correction: undo the mean output shift that int8 weights cause.

Rounding a layer's weights to int8 (per output channel, as the Q/DQ model does) moves the mean
of its output: for output channel c the shift is ``E[layer(x, Wq - W)]_c`` over the data, a
systematic error that every later layer inherits. It is measured once, on the float model's own
inputs: one run over calibration samples of a copy of the float model in which every weighted
layer has a twin computing ``layer(x, Wq - W)`` (same op, attributes and input, no bias)
reduced to its per-channel mean. ONNX Runtime evaluates the twins exactly as the layers
(padding, strides, groups, transposes), so the shift is exact, not a first-order estimate.
Subtracting it from the layer's bias (one is added where the layer has none) restores each
layer's mean output.

The shifts are measured on float inputs, so each layer's correction does not depend on the
others': one pass gives all of them, and they hold whatever activation ranges are chosen later
(``--method auto`` corrects every candidate with the same shifts). Measuring on the quantized
model's inputs and correcting every layer at once over-corrects (each layer's shift then
includes its predecessors', corrected again downstream): the issue's prototype diverged that way.
Only float biases change; weights and scales are those of the uncorrected model.
"""

from __future__ import annotations

import tempfile
from dataclasses import dataclass, field
from typing import Iterable, Sequence

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

from ..batching import first_samples, row_steps
from ..runner.model import spill_tensor
from ..util.log import logger
from ..util.memory import per_core_pairs
from ..writers.qdq import _Names, _constants, drop_unused_initializers, node_id, quantize_per_channel, weight_axis

CORRECTED_OPS = ("Conv", "ConvTranspose", "Gemm", "MatMul")
BIAS_SAMPLES = 128  # samples the shifts are measured on (benchmarks/bias_correction.py: 128 vs all 400 within 0.05 dB)
# Samples per ONNX Runtime run, per pair of cores: the twin model's intermediate tensors of a whole
# batch of 32 made this pass the peak of `calibrate --qdq` (EfficientNet-Lite0 on the 2-core VM:
# 2.3 GB against 0.7 GB for collection); the shifts are sums, so steps change nothing but the
# memory and how busy the cores of a larger machine are.
BIAS_STEP = 4


@dataclass
class BiasShifts:
    """Per layer (node id): the mean output shift per output channel that its int8 weights cause."""

    shifts: dict[str, np.ndarray] = field(default_factory=dict)
    samples: int = 0
    high_precision: str = "fp32"  # the type the weight scales were rounded to (writers.float_types)
    # max |x| of float tensors on the same samples, asked for with ``ranges_of`` (the FP16 rules)
    ranges: dict[str, float] = field(default_factory=dict)
    # per layer (node id): the (int8 values, scales) the shifts were measured for, where not rounded to
    # nearest (passes.weight_rounding); correct_biases writes them into the Q/DQ model with the biases
    rounded: dict[str, tuple[np.ndarray, np.ndarray]] = field(default_factory=dict)

    def largest(self, count: int = 5) -> list[tuple[str, float]]:
        """The layers with the largest shift (max |shift| over channels), largest first."""
        ranked = sorted(((k, float(np.abs(v).max())) for k, v in self.shifts.items() if v.size), key=lambda kv: -kv[1])
        return ranked[:count]


def _channel_last(node: onnx.NodeProto) -> bool:
    """Whether the layer's output channels are its last axis (Gemm, MatMul) rather than axis 1 (Conv)."""
    return node.op_type in ("Gemm", "MatMul")


def correctable_layers(model: onnx.ModelProto, nodes: Iterable[str] | None = None) -> list[onnx.NodeProto]:
    """The weighted layers whose weight (input 1) is a float constant, in graph order; with ``nodes``
    only those node ids (the ones the Q/DQ model quantized)."""
    constants = _constants(model.graph)
    wanted = set(nodes) if nodes is not None else None
    out = []
    for node in model.graph.node:
        if node.op_type not in CORRECTED_OPS or node.domain not in ("", "ai.onnx") or len(node.input) < 2:
            continue
        if node.input[1] not in constants or not node.input[0] or node.input[0] in constants:
            continue
        if wanted is not None and node_id(node) not in wanted:
            continue
        if node.op_type == "Gemm" and _attr(node, "transA", 0):
            continue  # A' = A^T: its rows are not the batch's
        out.append(node)
    return out


def _attr(node: onnx.NodeProto, name: str, default):
    return next((helper.get_attribute_value(a) for a in node.attribute if a.name == name), default)


def weight_error(node: onnx.NodeProto, w: np.ndarray, high_precision: str = "fp32",
                 rounded: tuple[np.ndarray, np.ndarray] | None = None) -> np.ndarray:
    """Wq - W for the layer's weight, quantized exactly as :func:`~int8calib.writers.qdq.build_qdq` does
    (scales rounded to ``high_precision``'s type; ``rounded``: the (int8 values, scales) it is given
    instead, from ``passes.weight_rounding``)."""
    axis = weight_axis(node, 1, w.ndim)
    q, s = rounded if rounded is not None else quantize_per_channel(w, axis, high_precision)
    shape = [1] * w.ndim
    if axis is not None:
        shape[axis] = -1
    error = q.astype(np.float32)
    error *= s.reshape(shape)
    error -= w
    return error


def shift_model(model: onnx.ModelProto, layers: Sequence[onnx.NodeProto], high_precision: str = "fp32",
                spill: str | None = None, weights=None) -> tuple[onnx.ModelProto, dict[str, tuple[str, str, int]]]:
    """A copy of the float ``model`` with a twin per layer computing ``layer(x, Wq - W)``, averaged
    over every axis but the batch (0) and the channel: ``{node id: (mean [rows, C] output, shape of
    the averaged view [rows, C, P] or [rows, P, C] output, the view's positions axis)}``.
    With ``spill`` (a folder), the weight errors of weights that stay in external data files go to
    files there and are mapped, so the twins of a model over 2 GB do not hold a second copy in RAM."""
    out = onnx.ModelProto()
    out.CopyFrom(model)
    graph = out.graph
    constants = _constants(graph)
    fresh = _Names(graph)
    opset = next((o.version for o in out.opset_import if o.domain in ("", "ai.onnx")), 13)
    outputs: dict[str, tuple[str, str, int, np.ndarray | None]] = {}
    for node in layers:
        nid = node_id(node)
        w = constants[node.input[1]]
        error = weight_error(node, w, high_precision, (weights or {}).get(node.input[1]))
        matrix = None if isinstance(w, np.memmap) else _linear_matrix(node, error)
        if matrix is not None:
            # a linear map per position: the mean of its output is the map of the input's mean, so the
            # input is averaged and multiplied on the host instead of running a twin as costly as the layer
            averaged, channels = node.input[0], matrix.shape[0]
        else:
            name = fresh(f"{nid}_weight_error")
            dw = spill_tensor(error, name, spill) if spill is not None and isinstance(w, np.memmap) else numpy_helper.from_array(error, name)
            graph.initializer.append(dw)
            attrs = [a for a in node.attribute if not (node.op_type == "Gemm" and a.name == "beta")]
            averaged = fresh(f"{nid}_weight_error_out")
            twin = helper.make_node(node.op_type, [node.input[0], dw.name], [averaged], fresh(f"{nid}_weight_error_twin"))
            twin.attribute.extend(attrs)
            graph.node.append(twin)
            channels = w.shape[0 if node.op_type == "Gemm" and _attr(node, "transB", 0) else -1] if _channel_last(node) else None
        del error
        # [rows, C, positions] (channel axis 1) or [rows, positions, C] (channel last), then the mean over positions;
        # Reshape's 0 copies a dimension, so a last channel axis is given by its size
        dims, axis = ([0, -1, channels], 1) if _channel_last(node) else ([0, 0, -1], 2)
        view = numpy_helper.from_array(np.array(dims, np.int64), fresh(f"{nid}_view_shape"))
        graph.initializer.append(view)
        viewed, mean, shape = fresh(f"{nid}_view"), fresh(f"{nid}_shift"), fresh(f"{nid}_shift_shape")
        new = [helper.make_node("Reshape", [averaged, view.name], [viewed], fresh(f"{nid}_view_node"))]
        if opset >= 18:
            axes = numpy_helper.from_array(np.array([axis], np.int64), fresh(f"{nid}_mean_axes"))
            graph.initializer.append(axes)
            new.append(helper.make_node("ReduceMean", [viewed, axes.name], [mean], fresh(f"{nid}_mean"), keepdims=0))
        else:
            new.append(helper.make_node("ReduceMean", [viewed], [mean], fresh(f"{nid}_mean"), axes=[axis], keepdims=0))
        view_dims = fresh(f"{nid}_view_dims")
        new += [helper.make_node("Shape", [viewed], [view_dims], fresh(f"{nid}_shape_node")),
                helper.make_node("Cast", [view_dims], [shape], fresh(f"{nid}_shape_cast"), to=TensorProto.FLOAT)]
        graph.node.extend(new)
        outputs[nid] = (mean, shape, axis, matrix)
    return out, outputs


def _linear_matrix(node: onnx.NodeProto, error: np.ndarray) -> np.ndarray | None:
    """[C_in, C_out] matrix of a layer that maps each position's input channels linearly (a 1x1
    Conv with stride 1, no padding and one group; a Gemm or a MatMul with a 2-D weight), with its
    weight error ``error``; None for any other layer."""
    if node.op_type == "Conv":
        spatial = error.shape[2:]
        plain = (all(k == 1 for k in spatial) and _attr(node, "group", 1) == 1 and not any(_attr(node, "pads", []))
                 and all(v == 1 for v in _attr(node, "strides", [1])) and _attr(node, "auto_pad", b"NOTSET") in (b"NOTSET", "NOTSET", b"VALID", "VALID"))
        return np.ascontiguousarray(error.reshape(error.shape[0], error.shape[1]).T) if plain else None
    if node.op_type == "Gemm" and error.ndim == 2:
        return np.ascontiguousarray(np.float32(_attr(node, "alpha", 1.0)) * (error.T if _attr(node, "transB", 0) else error))
    if node.op_type == "MatMul" and error.ndim == 2:
        return error
    return None


def spread(samples: Sequence, count: int = BIAS_SAMPLES) -> list:
    """``count`` samples spread evenly over ``samples`` (data is often sorted by class: the first
    ``count`` would see few of them)."""
    if len(samples) <= count:
        return list(samples)
    return [samples[(i * len(samples)) // count] for i in range(count)]


def measure_shifts(
    model: onnx.ModelProto,
    loader,
    providers: Sequence[str] | None = None,
    nodes: Iterable[str] | None = None,
    max_samples: int | None = BIAS_SAMPLES,
    high_precision: str = "fp32",
    ranges_of: Sequence[str] = (),
    weights=None,
) -> BiasShifts:
    """The mean output shift of every correctable layer (or of ``nodes``; none with ``nodes=[]``)
    on ``loader``'s first ``max_samples`` samples, each position of each sample weighted alike,
    for weight scales rounded to ``high_precision``'s type. The same run records max |x| of the
    float tensors ``ranges_of`` (what the FP16 rules of writers.precision need beyond the statistics).
    ``weights``: the int8 weights ``build_qdq`` is given (``passes.weight_rounding``), where they are not
    rounded to nearest."""
    layers = correctable_layers(model, nodes)
    result = BiasShifts(high_precision=high_precision)
    if not layers and not ranges_of:
        return result
    result.rounded = {node_id(n): weights[n.input[1]] for n in layers if n.input[1] in (weights or {})}
    groups = _groups(model, layers)
    if len(groups) > 1:
        logger.info("bias correction: the weight errors of %d layers measured in %d runs of at most %.1f GB each",
                    len(layers), len(groups), SHIFT_GROUP_BYTES / 1e9)
    for k, group in enumerate(groups):
        with tempfile.TemporaryDirectory(prefix="int8calib-shifts-") as spill:
            part = _measure(model, loader, providers, group, max_samples, high_precision, ranges_of if k == 0 else (),
                            spill, BiasShifts(high_precision=high_precision), weights)
        result.shifts.update(part.shifts)
        result.samples = part.samples
        result.ranges.update(part.ranges)
    if layers:
        logger.info("bias correction: weight-rounding shifts of %d layer(s) measured on %d sample(s)",
                    len(result.shifts), result.samples)
    return result


# ONNX Runtime holds a copy of the weight errors its run computes with (as large as the weights): past
# this many bytes they are measured in several runs, a group of layers at a time (models over 2 GB).
SHIFT_GROUP_BYTES = 1 << 30


def _groups(model: onnx.ModelProto, layers: list[onnx.NodeProto]) -> list[list[onnx.NodeProto]]:
    """``layers`` in consecutive groups whose weights add up to at most SHIFT_GROUP_BYTES (one group at least)."""
    sizes = {t.name: 4 * int(np.prod(t.dims, dtype=np.int64)) for t in model.graph.initializer}
    groups: list[list[onnx.NodeProto]] = [[]]
    total = 0
    for node in layers:
        size = sizes.get(node.input[1], 0)
        if groups[-1] and total + size > SHIFT_GROUP_BYTES:
            groups.append([])
            total = 0
        groups[-1].append(node)
        total += size
    return groups


def _measure(model, loader, providers, layers, max_samples, high_precision, ranges_of, spill, result, weights=None) -> BiasShifts:
    from ..runner import ActivationRunner

    twins, names = shift_model(model, layers, high_precision, spill, weights)
    ranges_of = list(dict.fromkeys(ranges_of))
    runner = ActivationRunner(twins, providers, [t for mean, shape, _, _ in names.values() for t in (mean, shape)] + ranges_of)
    top = dict.fromkeys(ranges_of, 0.0)
    sums = {nid: None for nid in names}
    counts = dict.fromkeys(names, 0)
    for batch, rows in first_samples(loader, max_samples, "bias correction"):
        for feeds, n in row_steps(batch, rows, per_core_pairs(BIAS_STEP)):
            values = runner.run(feeds)
            for t in ranges_of:
                if values[t].size:
                    top[t] = max(top[t], float(np.abs(values[t][:n] if values[t].ndim else values[t]).max()))
            for nid, (mean, shape, axis, matrix) in names.items():
                per_row, positions = values[mean], int(values[shape][axis])
                if matrix is not None:  # the layer's input mean: its shift is the weight error's map of it
                    per_row = per_row @ matrix  # (float32, as the twin layer would compute it)
                # rows past the batch's real samples are padding (a fixed batch axis); a layer whose
                # axis 0 is not the batch's (rows differ) is averaged whole
                taken = per_row[:n] if per_row.shape[0] == len(next(iter(feeds.values()))) else per_row
                total = taken.astype(np.float64).sum(axis=0) * positions
                sums[nid] = total if sums[nid] is None else sums[nid] + total
                counts[nid] += taken.shape[0] * positions
        result.samples += rows
    result.shifts = {nid: (sums[nid] / counts[nid]).astype(np.float32) for nid in names if counts[nid]}
    result.ranges = top
    return result


def correct_biases(model: onnx.ModelProto, shifts: BiasShifts, nodes: Iterable[str] | None = None) -> list[str]:
    """Subtract each layer's shift from its bias in ``model``, in place; returns the node ids
    corrected. Only layers with quantized weights are corrected (a layer kept in float has no
    rounding to undo): by default those whose weight is read through a DequantizeLinear, or the
    node ids in ``nodes`` (to correct a float model for a route that quantizes its weights
    later). A Conv / ConvTranspose / Gemm without a bias gets one; a MatMul gets its following
    bias Add's constant corrected, or a new Add. Where the shifts were measured for weights not
    rounded to nearest (``shifts.rounded``), those int8 values replace the DequantizeLinear's."""
    graph = model.graph
    if shifts.rounded:
        _write_rounded(graph, shifts.rounded)
    if nodes is None:
        dequantized = {o for n in graph.node if n.op_type == "DequantizeLinear" for o in n.output}
        nodes = [node_id(n) for n in graph.node if len(n.input) > 1 and n.input[1] in dequantized]
    wanted = set(nodes)
    inits = _constants(graph)  # initializers and Constant nodes (PaddlePaddle exports keep biases in the latter)
    fresh = _Names(graph)
    consumers: dict[str, list[onnx.NodeProto]] = {}
    for n in graph.node:
        for t in n.input:
            consumers.setdefault(t, []).append(n)
    corrected = []
    nodes = list(graph.node)
    for node in nodes:
        nid = node_id(node)
        shift = shifts.shifts.get(nid)
        if shift is None or node.op_type not in CORRECTED_OPS or nid not in wanted:
            continue
        if node.op_type == "MatMul":
            _correct_matmul(graph, node, shift, inits, consumers, fresh)
        else:
            scale = float(_attr(node, "beta", 1.0)) if node.op_type == "Gemm" else 1.0
            if scale == 0.0:
                continue  # beta 0 ignores the bias input
            bias_name = node.input[2] if len(node.input) > 2 and node.input[2] else None
            if bias_name is not None and bias_name not in inits:
                continue  # a computed bias: nothing constant to correct
            old = inits[bias_name].astype(np.float32) if bias_name else np.zeros(shift.shape, np.float32)
            if old.shape != shift.shape:
                continue  # a broadcast bias (Gemm C of another shape): left alone
            new = numpy_helper.from_array((old - shift / np.float32(scale)).astype(np.float32), fresh(f"{nid}_bias_corrected"))
            graph.initializer.append(new)
            while len(node.input) < 3:
                node.input.append("")
            node.input[2] = new.name
        corrected.append(nid)
    drop_unused_initializers(graph)  # biases replaced by their corrected copies
    read = {t for n in graph.node for t in n.input} | {o.name for o in graph.output}
    dead = [n for n in graph.node if n.op_type == "Constant" and n.output[0] not in read]
    for n in dead:  # Constant-node biases replaced likewise
        graph.node.remove(n)
    return corrected


def _write_rounded(graph: onnx.GraphProto, rounded: dict[str, tuple[np.ndarray, np.ndarray]]) -> None:
    """Replace the int8 weights of the layers in ``rounded`` (read through a DequantizeLinear with the
    same scales) by the rounded ones."""
    producer = {o: n for n in graph.node for o in n.output}
    inits = {i.name: i for i in graph.initializer}
    for node in graph.node:
        q_s = rounded.get(node_id(node))
        dq = producer.get(node.input[1]) if q_s is not None and len(node.input) > 1 else None
        if dq is None or dq.op_type != "DequantizeLinear" or dq.input[0] not in inits or dq.input[1] not in inits:
            continue
        q, s = q_s
        old = inits[dq.input[0]]
        if tuple(old.dims) == q.shape and np.array_equal(numpy_helper.to_array(inits[dq.input[1]]).reshape(-1), s.reshape(-1)):
            old.CopyFrom(numpy_helper.from_array(q.astype(np.int8), old.name))


def _correct_matmul(graph, node, shift, inits, consumers, fresh) -> None:
    out = node.output[0]
    users = consumers.get(out, [])
    if len(users) == 1 and users[0].op_type == "Add" and out not in {o.name for o in graph.output}:
        add = users[0]
        other = add.input[1] if add.input[0] == out else add.input[0]
        if other in inits and inits[other].shape == shift.shape:
            bias = inits[other].astype(np.float32)
            new = numpy_helper.from_array((bias - shift).astype(np.float32), fresh(f"{node_id(node)}_bias_corrected"))
            graph.initializer.append(new)
            add.input[list(add.input).index(other)] = new.name
            return
    # No constant bias Add to fold into: a new Add after the MatMul produces the old output name.
    raw = fresh(f"{out}_uncorrected")
    node.output[0] = raw
    neg = numpy_helper.from_array((-shift).astype(np.float32), fresh(f"{node_id(node)}_bias_correction"))
    graph.initializer.append(neg)
    add = helper.make_node("Add", [raw, neg.name], [out], fresh(f"{node_id(node)}_bias_correction_add"))
    graph.node.insert(list(graph.node).index(node) + 1, add)
