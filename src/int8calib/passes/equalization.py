"""Equalization: per-channel rescaling of the float model so that per-tensor activation ranges fit every channel.

A Q/DQ model quantizes weights per output channel but activations per tensor: one scale for all the
channels of a layer's input. Where those channels have very different ranges (the depthwise layers of
MobileNet-like backbones are the classic case), the small ones are left a few int8 steps. Scaling
channel ``c`` of such a tensor by ``1 / s_c`` where it is produced and by ``s_c`` where it is read keeps
the float function and evens out the ranges (cross-layer equalization, Nagel et al. 2019, with ``s``
from the activations' calibrated ranges as SmoothQuant, Xiao et al. 2022, chooses it).

* Readers (which absorb ``s_c``): 2-D Convs with a constant weight, depthwise (group = input channels:
  the weights of output channels ``c * m .. c * m + m - 1``) or, unless ``DEPTHWISE_ONLY``, dense
  (group 1: input column ``c`` of every output channel). Every reader of the tensor must be one; the
  tensor is not a graph output.
* Producers (which absorb ``1 / s_c``), walked back from the tensor over ops that commute with a
  positive per-channel scale and whose output nothing else reads: Relu, LeakyRelu, PRelu, MaxPool,
  Identity, and Add of a constant (the constant is divided too); the walk ends at a Conv (output
  channel ``c`` of its weights and bias), a BatchNormalization (its scale and bias) or a Mul by a
  constant (the constant becomes per channel). Hard-swish, sigmoid, clipping do not commute and stop it.
* ``s`` from the channels' ranges ``r_c`` (max |x| over calibration samples): a depthwise reader's
  per-channel int8 weights do not change with ``s`` (each output channel has its own weight scale),
  so its input is equalized fully, ``s_c = r_c / max r``; a dense reader's weight column ``c`` grows by
  ``s_c`` and can take over its output channels' weight scales, so ``s_c = r_c^a / w_c^(1-a)``
  (``w_c``: max |weight| of column ``c``), as SmoothQuant does, for ``a`` in ``ALPHAS``. Of those and
  no scaling, the pass keeps the one whose predicted rounding noise at the readers' outputs (input
  step and weight steps, from the channels' max and mean square) is least. A channel is scaled up at
  most ``MAX_GAIN`` times (dead channels would otherwise be blown up).

The pass returns a float model: statistics must be collected on it (its activations are not the
original model's), and only the Q/DQ route can use it (a TensorRT cache names the original model's
tensors and TensorRT quantizes the original weights): docs/qdq.md, "Equalization".
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Iterable, Mapping, Sequence

import numpy as np
import onnx
from onnx import helper, numpy_helper

from ..batching import first_samples
from ..util.log import logger
from ..writers.qdq import _constants, drop_unused_initializers

EQUALIZE_SAMPLES = 32  # calibration samples the channel ranges are measured on
ALPHAS = (0.25, 0.5, 0.75, 1.0)  # dense readers: weights of the activation ranges against the weight columns' in s
MAX_GAIN = 16.0  # at most this factor up for a channel (s >= 1 / MAX_GAIN)
# On by default where an int8 Q/DQ model is the only output, for tensors depthwise Convs alone read:
# +3.7 dB on the PP-OCRv4 detector, +1.9 dB on its recogniser, nothing to equalize on EfficientNet-Lite0 and
# MiniLM. Dense readers too gave the detector +1 to +3.6 dB more but cost the recogniser 0.4 to 0.6 dB
# (docs/qdq.md, "Equalization"): off unless asked for (``depthwise_only=False``).
DEFAULT = True
DEPTHWISE_ONLY = True

_PASS_THROUGH = {"Relu", "LeakyRelu", "PRelu", "MaxPool", "Identity"}


@dataclass
class Chain:
    """One tensor to equalize: its readers and the nodes from the producer that absorbs ``1 / s`` up to it."""

    tensor: str
    readers: list[onnx.NodeProto]
    path: list[onnx.NodeProto]  # producer first; its last node outputs ``tensor``

    @property
    def depthwise_only(self) -> bool:
        return all(_group(n) > 1 for n in self.readers)


@dataclass
class Equalized:
    model: onnx.ModelProto
    tensors: dict[str, float] = field(default_factory=dict)  # tensor -> largest factor a channel was scaled by
    samples: int = 0  # the channel ranges were measured on


def _attr(node: onnx.NodeProto, name: str, default):
    return next((helper.get_attribute_value(a) for a in node.attribute if a.name == name), default)


def _group(node: onnx.NodeProto) -> int:
    return int(_attr(node, "group", 1))


def _reader_ok(node: onnx.NodeProto, tensor: str, constants: dict) -> bool:
    """A 2-D Conv reading ``tensor`` as its input (not its weight), dense or depthwise, with a constant weight."""
    if node.op_type != "Conv" or node.domain not in ("", "ai.onnx") or node.input[0] != tensor or tensor in node.input[1:]:
        return False
    w = constants.get(node.input[1]) if len(node.input) > 1 else None
    if w is None or w.ndim != 4:
        return False
    group = _group(node)
    return group == 1 or (w.shape[1] == 1 and w.shape[0] % group == 0)


def find_chains(model: onnx.ModelProto) -> list[Chain]:
    """Every tensor that can be equalized, with its readers and producer path (module docstring)."""
    graph = model.graph
    constants = _constants(graph)
    producer = {o: n for n in graph.node for o in n.output}
    readers: dict[str, list[onnx.NodeProto]] = {}
    for n in graph.node:
        for t in set(n.input):
            readers.setdefault(t, []).append(n)
    outputs = {o.name for o in graph.output}

    def only_read_by(tensor: str, node: onnx.NodeProto) -> bool:
        return tensor not in outputs and [id(n) for n in readers.get(tensor, [])] == [id(node)]

    def const_input(node: onnx.NodeProto) -> int | None:
        """The index of the one constant input of a two-input Mul / Add, else None."""
        if len(node.input) != 2:
            return None
        flags = [t in constants for t in node.input]
        return flags.index(True) if flags.count(True) == 1 else None

    chains, used = [], set()  # a node is rescaled for one tensor only
    for tensor, reading in readers.items():
        if tensor in constants or tensor in outputs or tensor not in producer:
            continue
        if not all(_reader_ok(n, tensor, constants) for n in reading):
            continue
        path, node = [], producer[tensor]
        while True:
            path.insert(0, node)
            k = const_input(node) if node.op_type in ("Mul", "Add") else None
            if node.op_type == "Conv" and len(node.input) > 1 and node.input[1] in constants \
                    and constants[node.input[1]].ndim == 4:
                break  # the producers that absorb 1 / s
            if node.op_type == "BatchNormalization" and all(t in constants for t in node.input[1:3]):
                break
            if node.op_type == "Mul" and k is not None:
                break
            through = node.op_type in _PASS_THROUGH and (node.op_type != "PRelu" or node.input[1] in constants)
            if not through and not (node.op_type == "Add" and k is not None):
                path = []
                break
            nxt = node.input[1 - k] if node.op_type == "Add" else node.input[0]
            if nxt not in producer or not only_read_by(nxt, node):
                path = []
                break
            node = producer[nxt]
        if path and not any(id(n) in used for n in path):
            used.update(id(n) for n in path)
            chains.append(Chain(tensor, reading, path))
    return chains


@dataclass
class ChannelStats:
    """A tensor's channels (axis 1) over the calibration samples: max |x| and mean x^2."""

    max: np.ndarray
    mean_square: np.ndarray


def channel_ranges(model: onnx.ModelProto, loader, tensors: Sequence[str], providers=None,
                   max_samples: int | None = EQUALIZE_SAMPLES) -> tuple[dict[str, ChannelStats], int]:
    """(:class:`ChannelStats` of each of ``tensors``, samples read) over up to ``max_samples`` samples."""
    from ..runner import ActivationRunner

    runner = ActivationRunner(model, providers, list(tensors))
    peaks: dict[str, np.ndarray] = {}
    sums: dict[str, np.ndarray] = {}
    counts: dict[str, int] = {}
    seen = 0
    for batch, rows in first_samples(loader, max_samples, "equalization"):
        values = runner.run(batch.feeds)
        for t in tensors:
            x = np.asarray(values[t][:rows], np.float32)
            axes = tuple(i for i in range(x.ndim) if i != 1)
            peak, total = np.abs(x).max(axis=axes), np.square(x, dtype=np.float64).sum(axis=axes)
            peaks[t] = np.maximum(peaks[t], peak) if t in peaks else peak
            sums[t] = sums[t] + total if t in sums else total
            counts[t] = counts.get(t, 0) + x.size // x.shape[1]
        del values
        seen += rows
    logger.info("equalization: channel ranges of %d tensor(s) on %d sample(s)", len(peaks), seen)
    return {t: ChannelStats(peaks[t], sums[t] / max(counts[t], 1)) for t in peaks}, seen


def _column_max(node: onnx.NodeProto, w: np.ndarray, channels: int) -> np.ndarray:
    """max |w| over the weights that read each input channel."""
    if _group(node) == 1:
        return np.abs(w).max(axis=(0, 2, 3))
    return np.abs(w).reshape(channels, -1).max(axis=1)


def predicted_noise(readers: Sequence[tuple[onnx.NodeProto, np.ndarray]], stats: ChannelStats, s: np.ndarray) -> float:
    """The int8 rounding noise power the readers' outputs get with the tensor's channels divided by ``s``
    (uniform rounding, step^2 / 12): from the input (one per-tensor step, ``max r / s`` over 127, times
    each channel's weights scaled by ``s``) plus from the weights (per output channel, its largest
    weight times ``s`` over 127, on inputs of mean square ``mean x^2 / s^2``). Clipping is left out."""
    s = np.asarray(s, np.float64)
    step = float((stats.max / s).max()) / 127
    total = 0.0
    for node, w in readers:
        w = np.asarray(w, np.float64)
        if _group(node) == 1:
            column = np.square(w).sum(axis=(0, 2, 3))  # per input channel
            total += step ** 2 / 12 * float((column * s ** 2).sum())
            taps = w.shape[2] * w.shape[3]
            out_step = (np.abs(w) * s[None, :, None, None]).max(axis=(1, 2, 3)) / 127  # per output channel
            total += float((out_step ** 2 / 12).sum()) * taps * float((stats.mean_square / s ** 2).sum())
        else:
            c = np.repeat(np.arange(s.size), w.shape[0] // s.size)  # the input channel of each output channel
            rows = w.reshape(w.shape[0], -1)
            total += step ** 2 / 12 * float((np.square(rows).sum(axis=1) * s[c] ** 2).sum())
            out_step = np.abs(rows).max(axis=1) / 127  # scaled by s[c], its inputs by 1 / s[c]: unchanged
            total += float((out_step ** 2 / 12 * rows.shape[1] * stats.mean_square[c]).sum())
    return total


def choose_scales(ranges: np.ndarray, readers: Iterable[np.ndarray] | None, alpha: float = 0.5,
                  max_gain: float = MAX_GAIN) -> np.ndarray:
    """Per-channel ``s`` (channel ``c`` is divided by ``s_c``): ``r / max r`` for depthwise readers only
    (``readers`` None), else ``r^a / w^(1-a)`` with ``w`` the max of the readers' weight column maxima;
    scaled so that the largest channel after is as large as the largest before, and clamped so that no
    channel grows more than ``max_gain`` times."""
    r = np.asarray(ranges, np.float64)
    if readers is None:
        s = r.copy()
    else:
        w = np.max(np.stack([np.asarray(c, np.float64) for c in readers]), axis=0)
        s = np.power(np.maximum(r, 1e-30), alpha) / np.power(np.maximum(w, 1e-30), 1 - alpha)
        s[(r <= 0) | (w <= 0)] = 0
    peak = (r / np.where(s > 0, s, np.inf)).max()  # the largest channel after scaling, where it was r.max()
    if not np.isfinite(peak) or peak <= 0 or r.max() <= 0:
        return np.ones_like(r)
    s = s * peak / r.max()  # the largest channel after scaling is the largest before
    return np.clip(s, 1.0 / max_gain, None).astype(np.float32)


class _Writer:
    """Replaces constants by fresh initializers (a constant may be read by several nodes: never edited in place)."""

    def __init__(self, model: onnx.ModelProto):
        self.model, self.constants = model, _constants(model.graph)
        self.taken = {n for node in model.graph.node for n in list(node.input) + list(node.output)}
        self.taken |= {i.name for i in model.graph.initializer}

    def value(self, name: str) -> np.ndarray:
        return np.asarray(self.constants[name], np.float32)

    def set(self, node: onnx.NodeProto, index: int, value: np.ndarray) -> None:
        base, k = f"{node.input[index]}_equalized", 0
        name = base
        while name in self.taken:
            k += 1
            name = f"{base}_{k}"
        self.taken.add(name)
        self.model.graph.initializer.append(numpy_helper.from_array(np.asarray(value, np.float32), name))
        self.constants[name] = value
        node.input[index] = name


def _per_channel(value: np.ndarray, factor: np.ndarray, rank: int) -> np.ndarray:
    """``value`` (broadcast against a rank-``rank`` NCHW tensor) times ``factor`` along the channel axis."""
    shape = [1] * rank
    shape[1] = -1
    out = np.asarray(value, np.float32) * factor.reshape(shape)  # broadcasts to rank dims
    return out.reshape(out.shape[-(rank - 1):]) if out.ndim == rank and out.shape[0] == 1 else out


def apply_scales(writer: _Writer, chain: Chain, s: np.ndarray) -> None:
    """Divides channel ``c`` of ``chain.tensor`` by ``s_c`` where it is produced, multiplies it back where it is read."""
    inv = (1.0 / s).astype(np.float32)
    for node in chain.path:
        if node.op_type == "Conv":
            writer.set(node, 1, writer.value(node.input[1]) * inv[:, None, None, None])
            if len(node.input) > 2 and node.input[2]:
                writer.set(node, 2, writer.value(node.input[2]) * inv)
        elif node.op_type == "BatchNormalization":
            writer.set(node, 1, writer.value(node.input[1]) * inv)
            writer.set(node, 2, writer.value(node.input[2]) * inv)
        elif node.op_type in ("Mul", "Add"):
            k = 0 if node.input[0] in writer.constants else 1
            writer.set(node, k, _per_channel(writer.value(node.input[k]), inv, 4))
    for node in chain.readers:
        w = writer.value(node.input[1])
        if _group(node) == 1:
            writer.set(node, 1, w * s[None, :, None, None])
        else:
            writer.set(node, 1, w * np.repeat(s, w.shape[0] // s.size)[:, None, None, None])


def _drop_unused_constants(graph: onnx.GraphProto) -> None:
    read = {t for n in graph.node for t in n.input} | {o.name for o in graph.output}
    keep = [n for n in graph.node if n.op_type != "Constant" or n.output[0] in read]
    if len(keep) != len(graph.node):
        del graph.node[:]
        graph.node.extend(keep)
    drop_unused_initializers(graph)


def rescale(model: onnx.ModelProto, scales: Mapping[str, np.ndarray]) -> onnx.ModelProto:
    """A copy of ``model`` whose tensors ``scales`` names (of :func:`find_chains`) have channel ``c``
    divided by ``s_c``, the float function unchanged."""
    out = onnx.ModelProto()
    out.CopyFrom(model)
    writer = _Writer(out)
    for chain in find_chains(out):  # the copy's nodes: apply_scales edits them
        if chain.tensor in scales:
            apply_scales(writer, chain, np.asarray(scales[chain.tensor], np.float32))
    _drop_unused_constants(out.graph)
    return out


def equalize(model: onnx.ModelProto, loader, providers=None, max_samples: int | None = EQUALIZE_SAMPLES,
             alphas: Sequence[float] = ALPHAS, max_gain: float = MAX_GAIN,
             ranges: dict[str, ChannelStats] | None = None, depthwise_only: bool = DEPTHWISE_ONLY) -> Equalized:
    """A copy of ``model`` with every equalizable tensor's channels rescaled (module docstring); the
    channel ranges are measured on up to ``max_samples`` samples of ``loader`` (or given as ``ranges``).
    Per tensor, of no scaling and ``choose_scales`` with each of ``alphas``, the one with the least
    :func:`predicted_noise` (for the original weights) is applied. ``depthwise_only``: only tensors
    that depthwise Convs alone read."""
    chains = [c for c in find_chains(model) if c.depthwise_only or not depthwise_only]
    samples = 0
    if chains and ranges is None:
        ranges, samples = channel_ranges(model, loader, [c.tensor for c in chains], providers, max_samples)
    constants = _constants(model.graph)
    scales: dict[str, np.ndarray] = {}
    for chain in chains:
        stats = ranges.get(chain.tensor)
        if stats is None or stats.max.max() <= 0:
            continue
        readers = [(n, constants[n.input[1]]) for n in chain.readers]
        columns = None if chain.depthwise_only else [_column_max(n, w, stats.max.size) for n, w in readers]
        candidates = [np.ones(stats.max.size, np.float32)] + [
            choose_scales(stats.max, columns, a, max_gain) for a in ((1.0,) if columns is None else alphas)]
        best = int(np.argmin([predicted_noise(readers, stats, c) for c in candidates]))
        if best:
            scales[chain.tensor] = candidates[best]
    logger.info("equalization: %d of %d tensor(s) rescaled", len(scales), len(chains))
    return Equalized(rescale(model, scales), {t: float(1.0 / v.min()) for t, v in scales.items()}, samples)
