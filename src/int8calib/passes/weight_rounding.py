"""Weight rounding: int8 weights chosen to minimise each layer's output error on calibration data.

Rounding every weight to the nearest int8 step (``quantize_per_channel``) minimises the error of each
weight alone, not of the layer's output. AdaRound (Nagel et al. 2020) learns, per weight, whether to
round up or down so that ``E ||(W - Wq) x||^2`` over calibration inputs ``x`` is smallest. This pass
solves the same per-layer objective in closed form, one input column at a time, as GPTQ / OBQ
(Frantar et al. 2022) do: column i is rounded, and its rounding error, weighted by the inverse of the
layer's input Gram matrix ``H = E[x x^T]``, is pushed onto the columns not yet rounded, which absorb
it. No gradient descent, no PyTorch: numpy on ``H``, gathered in one float run over the samples.

* Scales stay those of :func:`~int8calib.writers.qdq.quantize_per_channel` (max |w| per output
  channel / 127); only which int8 value each weight gets changes (clipped to [-127, 127]).
* ``H`` comes from the float model's inputs to the layer (im2col of the Conv's input, honouring pads,
  strides, dilations and groups; the rows of a Gemm / MatMul input). A depthwise Conv has one small
  ``H`` per channel, a grouped one per group.
* The result is ``{weight initializer: (int8 values, scales)}``, which ``build_qdq(weights=...)``
  writes as the INT8 initializers it writes anyway, and which bias correction (``measure_shifts``
  ``weights=``) corrects for.
"""

from __future__ import annotations

from typing import Iterable, Sequence

import numpy as np
import onnx
from onnx import helper

from ..batching import first_samples
from ..util.log import logger
from ..writers.qdq import _constants, node_id, quantize_per_channel, weight_axis

ROUNDING_SAMPLES = 128  # samples the Gram matrices are gathered on
# Off by default: measured to help on EfficientNet-Lite0 (+0.8 dB on unseen photos) but not on the PP-OCRv4
# detector (-0.04 dB), at minutes of calibration time (docs/qdq.md, "Weight rounding")
DEFAULT = False
ACT_ORDER = True  # round the most energetic inputs' columns first (GPTQ's act order)
DAMPING = 0.01  # of the mean diagonal, added to H: keeps the inverse stable where inputs are nearly collinear


def _attr(node: onnx.NodeProto, name: str, default):
    return next((helper.get_attribute_value(a) for a in node.attribute if a.name == name), default)


def roundable_layers(model: onnx.ModelProto, nodes: Iterable[str] | None = None) -> list[onnx.NodeProto]:
    """2-D Convs and Gemm / MatMul with a constant float weight (input 1) and a computed input 0."""
    constants = _constants(model.graph)
    wanted = set(nodes) if nodes is not None else None
    out = []
    for node in model.graph.node:
        if node.domain not in ("", "ai.onnx") or len(node.input) < 2 or node.input[1] not in constants:
            continue
        if not node.input[0] or node.input[0] in constants or (wanted is not None and node_id(node) not in wanted):
            continue
        w = constants[node.input[1]]
        if node.op_type == "Conv" and w.ndim == 4 and _attr(node, "auto_pad", b"NOTSET") in (b"NOTSET", "NOTSET"):
            out.append(node)
        elif node.op_type == "Gemm" and w.ndim == 2 and not _attr(node, "transA", 0):
            out.append(node)
        elif node.op_type == "MatMul" and w.ndim == 2:
            out.append(node)
    return out


def _conv_patches(x: np.ndarray, node: onnx.NodeProto, w: np.ndarray) -> np.ndarray:
    """im2col of a Conv's input: [groups, positions, Cin/groups * kh * kw], in W's (cin, kh, kw) order."""
    groups = int(_attr(node, "group", 1))
    kh, kw = w.shape[2:]
    sh, sw = _attr(node, "strides", [1, 1])
    dh, dw = _attr(node, "dilations", [1, 1])
    top, left, bottom, right = _attr(node, "pads", [0, 0, 0, 0])
    x = np.pad(x, ((0, 0), (0, 0), (top, bottom), (left, right)))
    span_h, span_w = (kh - 1) * dh + 1, (kw - 1) * dw + 1
    windows = np.lib.stride_tricks.sliding_window_view(x, (span_h, span_w), axis=(2, 3))[:, :, ::sh, ::sw, ::dh, ::dw]
    n, c, ho, wo = windows.shape[:4]
    per = c // groups
    # [n, groups, per, ho, wo, kh, kw] -> [groups, n * ho * wo, per * kh * kw]
    g = windows.reshape(n, groups, per, ho, wo, kh, kw).transpose(1, 0, 3, 4, 2, 5, 6)
    return g.reshape(groups, n * ho * wo, per * kh * kw)


def _rows(node: onnx.NodeProto, w: np.ndarray) -> tuple[np.ndarray, int]:
    """The weight as [output channels, inputs] (Conv: [Cout, Cin/g * kh * kw]) and its output-channel axis."""
    axis = weight_axis(node, 1, w.ndim)
    if node.op_type == "Conv":
        return w.reshape(w.shape[0], -1), axis
    return (w if axis == 0 else w.T), axis


def gram_matrices(model: onnx.ModelProto, loader, layers: Sequence[onnx.NodeProto], providers=None,
                  max_samples: int | None = ROUNDING_SAMPLES) -> dict[str, np.ndarray]:
    """Per layer, ``H`` = sum of x x^T over its inputs' positions: [groups, D, D] (Gemm / MatMul: groups 1)."""
    from ..runner import ActivationRunner

    constants = _constants(model.graph)
    inputs = sorted({n.input[0] for n in layers})
    runner = ActivationRunner(model, providers, inputs)
    grams: dict[str, np.ndarray] = {}
    seen = 0
    for batch, rows in first_samples(loader, max_samples, "weight rounding"):
        values = runner.run(batch.feeds)
        for node in layers:
            w = constants[node.input[1]]
            total = grams.get(node_id(node))
            for r in range(rows):  # one sample at a time: a Conv's patches are k*k times its input
                x = np.asarray(values[node.input[0]][r:r + 1], np.float32)
                p = _conv_patches(x, node, w) if node.op_type == "Conv" else x.reshape(1, -1, x.shape[-1])
                g = np.matmul(p.transpose(0, 2, 1), p).astype(np.float64)  # [groups, D, D]
                total = g if total is None else total + g
            grams[node_id(node)] = total
        del values
        seen += rows
    logger.info("weight rounding: input Gram matrices of %d layer(s) on %d sample(s)", len(grams), seen)
    return grams


def round_layer(w: np.ndarray, node: onnx.NodeProto, gram: np.ndarray, damping: float = DAMPING,
                act_order: bool = ACT_ORDER, high_precision: str = "fp32") -> tuple[np.ndarray, np.ndarray]:
    """(int8 weights in ``w``'s shape, per-channel scales) minimising the layer's output error for ``gram``.

    ``act_order`` rounds the columns of the most energetic inputs (largest diagonal of H) first, while
    the most columns are left to absorb their error (GPTQ's "act order"). The scales are those
    ``quantize_per_channel`` gives for ``high_precision`` (rounded to the type the model stores)."""
    _, scale = quantize_per_channel(w, weight_axis(node, 1, w.ndim), high_precision)
    rows, _ = _rows(node, np.asarray(w, np.float64))
    groups, d = gram.shape[0], gram.shape[1]
    cout = rows.shape[0]
    work = rows.reshape(groups, cout // groups, d).copy()
    s = scale.astype(np.float64).reshape(groups, cout // groups)
    diag = np.einsum("gii->gi", gram)
    order = np.argsort(-diag, axis=1, kind="stable") if act_order else np.tile(np.arange(d), (groups, 1))
    h = np.take_along_axis(np.take_along_axis(gram, order[:, :, None], axis=1), order[:, None, :], axis=2)
    work = np.take_along_axis(work, order[:, None, :], axis=2)
    diag = np.einsum("gii->gi", h)
    dead = diag <= 0  # inputs always zero: any weight gives the same output
    mean = np.maximum(diag.mean(axis=1, keepdims=True), 1e-12)
    h[:, np.arange(d), np.arange(d)] += damping * mean + dead
    # U = upper Cholesky factor of H^-1: row i holds how column i's rounding error spreads over later columns
    u = np.linalg.cholesky(np.linalg.inv(h)).transpose(0, 2, 1)
    q = np.empty_like(work)
    for i in range(d):
        col = work[:, :, i]
        qi = np.clip(np.rint(col / s), -127, 127)
        q[:, :, i] = qi
        err = (col - qi * s) / u[:, i, i][:, None]
        work[:, :, i + 1:] -= err[:, :, None] * u[:, None, i, i + 1:]
    restored = np.empty_like(q)
    np.put_along_axis(restored, np.broadcast_to(order[:, None, :], q.shape), q, axis=2)
    q = restored.reshape(cout, d)
    if node.op_type == "Conv":
        return q.reshape(w.shape).astype(np.int8), scale
    return (q if weight_axis(node, 1, w.ndim) == 0 else q.T).astype(np.int8), scale


def round_weights(model: onnx.ModelProto, loader, providers=None, nodes: Iterable[str] | None = None,
                  max_samples: int | None = ROUNDING_SAMPLES, high_precision: str = "fp32") -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """``{weight initializer: (int8 values, scales)}`` of every roundable layer (or of ``nodes``), for
    ``build_qdq(weights=...)``. A weight shared by several layers keeps round-to-nearest."""
    layers = roundable_layers(model, nodes)
    readers: dict[str, int] = {}
    for node in layers:
        readers[node.input[1]] = readers.get(node.input[1], 0) + 1
    layers = [n for n in layers if readers[n.input[1]] == 1]
    if not layers:
        return {}
    grams = gram_matrices(model, loader, layers, providers, max_samples)
    constants = _constants(model.graph)
    out = {}
    for node in layers:
        if node_id(node) in grams:
            out[node.input[1]] = round_layer(constants[node.input[1]], node, grams[node_id(node)],
                                             high_precision=high_precision)
    return out


def measure_corrections(model: onnx.ModelProto, loader, providers=None, rounding: bool = False,
                        max_samples: int | None = ROUNDING_SAMPLES, high_precision: str = "fp32",
                        ranges_of=(), nodes: Iterable[str] | None = None):
    """Bias correction's shifts (:func:`~.bias_correction.measure_shifts`) of the weights the Q/DQ model
    will hold, for scales of ``high_precision``'s type: rounded by :func:`round_weights` first when
    ``rounding`` (both on the same samples), and carried in the result, which ``correct_biases`` writes
    with the biases. ``ranges_of`` and ``nodes`` as ``measure_shifts`` takes them."""
    from .bias_correction import measure_shifts

    weights = round_weights(model, loader, providers, max_samples=max_samples, high_precision=high_precision) if rounding else None
    return measure_shifts(model, loader, providers, nodes, max_samples=max_samples, high_precision=high_precision,
                          ranges_of=ranges_of, weights=weights)
