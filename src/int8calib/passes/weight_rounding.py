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

from concurrent.futures import ThreadPoolExecutor
from typing import Iterable, Sequence

import numpy as np
import onnx
from onnx import helper

from ..batching import BatchLoader, first_samples
from ..util.log import logger
from ..util.memory import cores
from ..writers.qdq import _constants, node_id, quantize_per_channel, weight_axis
from .bias_correction import BIAS_SAMPLES, spread

# samples the Gram matrices are gathered on: on EfficientNet-Lite0 (mse, bias correction, 500 unseen photos)
# 32 / 64 / 128 gave 21.98 / 22.02 / 22.04 dB against 21.24 dB with weights rounded to nearest, the Gram
# matrices costing 0.15 s a sample on this VM (docs/qdq.md, "Weight rounding")
ROUNDING_SAMPLES = 64
# On by default with bias correction: the default `calibrate --qdq` on unseen data gained 0.57 dB on
# EfficientNet-Lite0, 0.63 dB on the PP-OCRv4 detector, 1.1 dB on its recogniser and 0.01 dB on MiniLM
# (docs/qdq.md, "Weight rounding")
DEFAULT = True
ACT_ORDER = True  # round the most energetic inputs' columns first (GPTQ's act order)
DAMPING = 0.01  # of the mean diagonal, added to H: keeps the inverse stable where inputs are nearly collinear
# a Conv's Gram matrix takes at most this many output positions of a sample (an evenly strided grid): the
# neighbouring positions of a large feature map tell little more about E[x x^T], and cost in proportion
# (EfficientNet-Lite0 at 224 px, 12,544 positions at most, is unaffected; docs/qdq.md, "Weight rounding")
GRAM_POSITIONS = 16384
SOLVE_BLOCK = 64  # columns rounded between two updates of the columns after them (GPTQ's lazy batch)


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


def _grid_stride(rows: int, cols: int, max_positions: int | None) -> int:
    """The stride of the even grid of at most ``max_positions`` of a rows x cols map's positions."""
    if max_positions is None or rows * cols <= max_positions:
        return 1
    return int(np.ceil(np.sqrt(rows * cols / max_positions)))


def _conv_patches(x: np.ndarray, node: onnx.NodeProto, w: np.ndarray, max_positions: int | None = None) -> np.ndarray:
    """im2col of a Conv's input: [groups, positions, Cin/groups * kh * kw], in W's (cin, kh, kw) order;
    with ``max_positions``, an evenly strided grid of at most that many output positions per sample."""
    groups = int(_attr(node, "group", 1))
    kh, kw = w.shape[2:]
    sh, sw = _attr(node, "strides", [1, 1])
    dh, dw = _attr(node, "dilations", [1, 1])
    top, left, bottom, right = _attr(node, "pads", [0, 0, 0, 0])
    x = np.pad(x, ((0, 0), (0, 0), (top, bottom), (left, right)))
    span_h, span_w = (kh - 1) * dh + 1, (kw - 1) * dw + 1
    windows = np.lib.stride_tricks.sliding_window_view(x, (span_h, span_w), axis=(2, 3))[:, :, ::sh, ::sw, ::dh, ::dw]
    k = _grid_stride(windows.shape[2], windows.shape[3], max_positions)
    windows = windows[:, :, ::k, ::k]
    n, c, ho, wo = windows.shape[:4]
    per = c // groups
    # [n, groups, per, ho, wo, kh, kw] -> [groups, n * ho * wo, per * kh * kw]
    g = windows.reshape(n, groups, per, ho, wo, kh, kw).transpose(1, 0, 3, 4, 2, 5, 6)
    return g.reshape(groups, n * ho * wo, per * kh * kw)


def _sample_gram(x: np.ndarray, node: onnx.NodeProto, w: np.ndarray) -> np.ndarray:
    """``sum x x^T`` over one sample's input positions (``x``: [1, ...]): [groups, D, D] in float64."""
    if node.op_type != "Conv":
        p = x.reshape(-1, x.shape[-1])
        return (p.T @ p).astype(np.float64)[None]
    if w.shape[2:] == (1, 1) and int(_attr(node, "group", 1)) == 1 and not any(_attr(node, "pads", [0])):
        # a dense 1x1 Conv reads each position's channels as they are: the Gram matrix of [C, positions]
        # directly, without the copy im2col makes (a third of EfficientNet-Lite0's Gram time)
        sh, sw = _attr(node, "strides", [1, 1])
        grid = x[0, :, ::sh, ::sw]
        k = _grid_stride(grid.shape[1], grid.shape[2], GRAM_POSITIONS)
        p = np.ascontiguousarray(grid[:, ::k, ::k]).reshape(grid.shape[0], -1)
        return (p @ p.T).astype(np.float64)[None]
    p = _conv_patches(x, node, w, GRAM_POSITIONS)
    return np.matmul(p.transpose(0, 2, 1), p).astype(np.float64)


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

    def accumulate(node: onnx.NodeProto, values: dict, rows: int) -> None:
        w = constants[node.input[1]]
        total = grams.get(node_id(node))
        for r in range(rows):  # one sample at a time: a Conv's patches are k*k times its input
            g = _sample_gram(np.asarray(values[node.input[0]][r:r + 1], np.float32), node, w)
            total = g if total is None else total + g
        grams[node_id(node)] = total

    seen = 0
    # numpy's copies and products release the GIL: the layers of a step go to every core (one layer per task)
    with ThreadPoolExecutor(max_workers=cores()) as pool:
        for batch, rows in first_samples(loader, max_samples, "weight rounding"):
            values = runner.run(batch.feeds)
            for done in [pool.submit(accumulate, node, values, rows) for node in layers]:
                done.result()
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
    for start in range(0, d, SOLVE_BLOCK):  # GPTQ's lazy batch updates: the same sums, in blocks
        end = min(start + SOLVE_BLOCK, d)
        errors = np.empty(work.shape[:2] + (end - start,))
        for i in range(start, end):
            col = work[:, :, i]
            qi = np.clip(np.rint(col / s), -127, 127)
            q[:, :, i] = qi
            err = (col - qi * s) / u[:, i, i][:, None]
            errors[:, :, i - start] = err
            work[:, :, i + 1:end] -= err[:, :, None] * u[:, None, i, i + 1:end]
        if end < d:  # the block's errors onto the columns after it, in one matrix product
            work[:, :, end:] -= np.matmul(errors, u[:, start:end, end:])
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


def spread_batches(loader, count: int):
    """About ``count`` samples of ``loader`` spread evenly over it: a list of batches (auto's held-out
    samples) gives every k-th batch, a :class:`~int8calib.batching.BatchLoader` a loader of its samples
    spread out (``passes.spread``); anything else (a script's stream) its first samples."""
    if isinstance(loader, (list, tuple)) and loader:
        per = max(1, max(getattr(b, "n", 1) for b in loader))
        return spread(list(loader), -(-count // per))
    if isinstance(loader, BatchLoader) and len(loader.samples) > count:
        return BatchLoader(spread(loader.samples, count), loader.inputs, loader.preprocess, loader.batch_size,
                           loader.skip_bad)
    return loader


def measure_corrections(model: onnx.ModelProto, loader, providers=None, rounding: bool = False,
                        max_samples: int | None = BIAS_SAMPLES, high_precision: str = "fp32",
                        ranges_of=(), nodes: Iterable[str] | None = None):
    """Bias correction's shifts (:func:`~.bias_correction.measure_shifts`, on up to ``max_samples`` of
    ``loader``) of the weights the Q/DQ model will hold, for scales of ``high_precision``'s type: rounded
    by :func:`round_weights` first when ``rounding`` (on ``ROUNDING_SAMPLES`` of the same samples, spread
    over them), and carried in the result, which ``correct_biases`` writes with the biases. ``ranges_of``
    and ``nodes`` as ``measure_shifts`` takes them."""
    from .bias_correction import measure_shifts

    weights = None
    if rounding:
        count = ROUNDING_SAMPLES if max_samples is None else min(ROUNDING_SAMPLES, max_samples)
        weights = round_weights(model, spread_batches(loader, count), providers, max_samples=count,
                                high_precision=high_precision)
    return measure_shifts(model, loader, providers, nodes, max_samples=max_samples, high_precision=high_precision,
                          ranges_of=ranges_of, weights=weights)
