"""Completing a calibration cache on TensorRT's own network (``int8calib complete-cache``, ``build``).

A cache written without TensorRT has a line for every ONNX activation and, under a
TensorRT 10 header, for every constant TensorRT 10 names after its initializer
(:mod:`int8calib.stats.constants`). What only TensorRT's parser knows are the names of the
layers it makes: 8.x's numbered constants (``(Unnamed Layer* N) [Constant]_output``) and the
shuffles that broadcast or reshape a tensor (``ONNXTRT_Broadcast_N_output``, ``(Unnamed Layer*
N) [Shuffle]_output``). A tensor without a range keeps its layer out of INT8.

:func:`complete_ranges` walks the network TensorRT's parser built, layer by layer, and gives
each float tensor the cache lacks a range from its source:

* a Constant layer: its weights, through the cache's method, as TensorRT calibrates a
  constant (the statistics of its values); with the ONNX model at hand, the ONNX constant
  holding the same values is named as its source;
* a Shuffle or Identity layer (a broadcast, reshape or transpose: the same values) of a
  tensor that has a range: that range.

Every tensor still without one is reported with the reason. :func:`set_dynamic_ranges`
hands the ranges to TensorRT (``ITensor.set_dynamic_range``), which takes them over its
calibrator's. Checked against a stand-in network shaped like TensorRT's
(tests/fake_tensorrt.py); it has not run on a real TensorRT here.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Mapping

import numpy as np

from ..util.log import logger

COPY_LAYERS = ("SHUFFLE", "IDENTITY")  # layers whose output holds the values of their first input
_ALGORITHM_METHODS = {"EntropyCalibration2": "entropy2", "EntropyCalibration": "entropy", "MinMaxCalibration": "minmax",
                      "LegacyCalibration": "legacy"}


@dataclass
class Completion:
    """What :func:`complete_ranges` added, from where, and what is still without a range."""

    added: dict[str, float] = field(default_factory=dict)  # TensorRT tensor -> amax
    sources: dict[str, str] = field(default_factory=dict)  # TensorRT tensor -> where its range came from
    unranged: dict[str, str] = field(default_factory=dict)  # TensorRT tensor -> why it still has none

    def log(self) -> None:
        logger.info("%d tensor(s) of TensorRT's network given a range", len(self.added))
        for name, source in self.sources.items():
            logger.debug("  '%s': %s", name, source)
        if self.unranged:
            logger.warning("%d tensor(s) still without a range (their layers stay out of INT8):", len(self.unranged))
            for name, why in self.unranged.items():
                logger.warning("  '%s': %s", name, why)


def method_of_algorithm(algorithm: str) -> str:
    """The int8calib method that computes what a cache header's algorithm computes."""
    return _ALGORITHM_METHODS.get(algorithm, "entropy2")


def complete_ranges(trt, network, amax: Mapping[str, float], method: str = "entropy2", model=None, **method_params) -> Completion:
    """Ranges for the float tensors of ``network`` that ``amax`` (a cache's, {name: amax}) lacks.

    ``model``: the ONNX model (a ``ModelProto``) the network was parsed from, to name the
    ONNX constant behind each Constant layer."""
    floats = {getattr(trt.DataType, n) for n in ("FLOAT", "HALF", "BF16") if hasattr(trt.DataType, n)}
    known = dict(amax)
    out = Completion()
    sources = _OnnxConstants(model)
    for i in range(network.num_inputs):
        tensor = network.get_input(i)
        if tensor.dtype in floats and tensor.name not in known:
            out.unranged[tensor.name] = "a network input the cache has no line for: calibrate with data"
    for i in range(network.num_layers):
        layer = network.get_layer(i)
        kind = str(layer.type).rsplit(".", 1)[-1]
        for j in range(layer.num_outputs):
            tensor = layer.get_output(j)
            if tensor.dtype not in floats or tensor.name in known:
                continue
            if kind == "CONSTANT":
                values = _weights(layer)
                known[tensor.name] = out.added[tensor.name] = constant_amax(values, method, **method_params)
                out.sources[tensor.name] = f"constant layer '{layer.name}' ({values.size} values{sources.describe(values)})"
            elif kind in COPY_LAYERS and layer.num_inputs and layer.get_input(0) is not None and layer.get_input(0).name in known:
                source = layer.get_input(0).name
                known[tensor.name] = out.added[tensor.name] = known[source]
                out.sources[tensor.name] = f"a copy of '{source}' ({kind.lower()} layer '{layer.name}')"
            else:
                out.unranged[tensor.name] = _why_unranged(tensor.name, kind, model)
    return out


def constant_amax(values: np.ndarray, method: str, **method_params) -> float:
    """amax of a constant's values as ``method`` computes it for a tensor seen in one batch."""
    from ..methods import compute_amax
    from ..stats.collector import StatsCollector

    collector = StatsCollector()
    collector.collect({"constant": np.asarray(values, np.float32).reshape(-1)})
    return float(compute_amax(method, collector.result()["constant"], **method_params))


def set_dynamic_ranges(network, amax: Mapping[str, float]) -> int:
    """``tensor.set_dynamic_range(-amax, amax)`` for each tensor of ``network`` named in ``amax``; how many."""
    tensors = {}
    for i in range(network.num_inputs):
        tensors[network.get_input(i).name] = network.get_input(i)
    for i in range(network.num_layers):
        layer = network.get_layer(i)
        for j in range(layer.num_outputs):
            tensors[layer.get_output(j).name] = layer.get_output(j)
    count = 0
    for name, a in amax.items():
        if name in tensors:
            tensors[name].set_dynamic_range(-float(a), float(a))
            count += 1
    return count


def _weights(layer) -> np.ndarray:
    weights = layer.weights
    return np.asarray(weights.numpy() if hasattr(weights, "numpy") else weights, np.float32).reshape(-1)


def _why_unranged(name: str, kind: str, model) -> str:
    if model is not None and any(name in node.output for node in model.graph.node):
        return "an activation of the ONNX model the cache has no line for: recalibrate (int8calib calibrate)"
    if kind in COPY_LAYERS:
        return f"a {kind.lower()} of a tensor that has no range itself"
    return (f"a {kind.lower()} layer TensorRT made, neither a constant nor a copy: only running the network gives "
            "its range (TensorRT's own calibrator, or int8calib build --data)")


class _OnnxConstants:
    """The ONNX float constants by size, to find the one a Constant layer holds (same values, any layout)."""

    def __init__(self, model):
        self.by_size: dict[int, list[tuple[str, object]]] = {}
        if model is None:
            return
        from ..stats.constants import float_constants

        for name, tensor in float_constants(model).items():
            size = int(np.prod(tensor.dims)) if tensor.dims else 1
            self.by_size.setdefault(size, []).append((name, tensor))

    def describe(self, values: np.ndarray) -> str:
        from ..runner.model import tensor_array

        candidates = self.by_size.get(values.size, [])
        if not candidates:
            return ""
        ordered = np.sort(values)
        for name, tensor in candidates:
            if np.array_equal(np.sort(np.asarray(tensor_array(tensor), np.float32).reshape(-1)), ordered):
                return f" of the ONNX constant '{name}'"
        return ""


def complete_cache(model, cache, output=None, method: str | None = None, trt=None, **method_params) -> Completion:
    """Parse ``model`` with TensorRT's ONNX parser and write ``cache`` with a line for every tensor of
    TensorRT's network it can give a range (to ``output``, default ``cache`` itself); ``method``
    defaults to the one the cache's algorithm names. The cache's own lines are kept byte for byte."""
    from pathlib import Path

    from ..runner.model import load_model
    from ..util.atomic import write_bytes
    from ..writers.cache import read_cache, safe_scale, scale_to_hex
    from ..writers.provenance import read_sidecar, write_with_sidecar
    from . import _trt

    trt = trt or _trt.import_tensorrt("int8calib complete-cache")
    cache, model = Path(cache), Path(model)
    parsed = read_cache(cache)
    method = method or method_of_algorithm(parsed.algorithm)
    trt_logger = trt.Logger(trt.Logger.WARNING)
    network, parser = _trt.parse_onnx(trt, trt.Builder(trt_logger), trt_logger, model.read_bytes(), model)  # noqa: F841
    completion = complete_ranges(trt, network, parsed.amax, method, load_model(model, load_external_data=False), **method_params)
    completion.log()
    text = cache.read_bytes()
    text += b"" if text.endswith(b"\n") else b"\n"
    text += "".join(f"{name}: {scale_to_hex(safe_scale(a))}\n" for name, a in completion.added.items()).encode()
    output = Path(output) if output is not None else cache
    record = read_sidecar(cache)
    if record is not None:
        write_with_sidecar(output, text, record | {"completed_with_tensorrt": str(trt.__version__)})
    else:
        write_bytes(output, text)
    logger.info("wrote %s: %d line(s) added with TensorRT %s's names (%s)", output, len(completion.added), trt.__version__, method)
    return completion
