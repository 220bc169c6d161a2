"""Running the float and the quantized model over the same data and comparing them."""

from __future__ import annotations

import json
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterable, Sequence

import numpy as np
import onnx

from ..batching import Batch, BatchLoader
from ..errors import Int8CalibError
from ..preprocess import Preprocess
from ..runner import ActivationRunner, load_model
from ..sources import resolve
from ..util.atomic import write_text
from ..writers.precision import cast_source
from ..writers.provenance import model_record
from ..util.log import progress_bar
from .labels import read_labels
from .metrics import OutputComparison, PowerSum
from .outputs import choose_output


def quantized_tensors(model: onnx.ModelProto) -> dict[str, str]:
    """{float tensor: its DequantizeLinear output} for every activation behind a Q/DQ pair."""
    producer = {o: n for n in model.graph.node for o in n.output}
    pairs = {}
    for node in model.graph.node:
        if node.op_type != "DequantizeLinear":
            continue
        q = producer.get(node.input[0])
        if q is not None and q.op_type == "QuantizeLinear":
            pairs[cast_source(q.input[0], producer)] = node.output[0]
    return pairs


@dataclass
class Evaluation:
    """Output metrics, and the SQNR of every quantized tensor (worst first) when asked."""

    output: OutputComparison
    output_name: str
    layers: list[tuple[str, PowerSum]] = field(default_factory=list)
    calibration: dict | None = None  # the int8 model's provenance: method, auto's choice, bias correction

    def to_dict(self) -> dict:
        out = {"output": self.output_name, **self.output.to_dict()}
        if self.calibration is not None:
            out["calibration"] = self.calibration
        if self.layers:
            out["per_layer"] = [
                {"tensor": name, "sqnr_db": _finite(p.sqnr_db), "max_abs_error": p.max_abs_error} for name, p in self.layers
            ]
        return out


def _finite(x: float) -> float | None:
    return round(x, 4) if math.isfinite(x) else None


def _model(model) -> onnx.ModelProto:
    return model if isinstance(model, onnx.ModelProto) else load_model(model, load_external_data=False)


def compare_models(
    fp32: "str | Path | onnx.ModelProto",
    int8: "str | Path | onnx.ModelProto",
    batches: Iterable[tuple[dict[str, np.ndarray], int, np.ndarray | None]],
    output: str | None = None,
    per_layer: bool = False,
    providers: Sequence[str] | None = None,
    reference: list[np.ndarray] | None = None,
) -> Evaluation:
    """Compare the two models over ``batches`` of (feeds, real rows, labels or None).

    ``reference``, when given, holds the float model's outputs of the same batches
    (so repeated comparisons against one float model run it only once).
    """
    fp32_proto, int8_proto = _model(fp32), _model(int8)
    output = _check_output(fp32_proto, int8_proto, output)
    layers = {}
    if per_layer:
        fp32_names = _all_tensors(fp32_proto)
        layers = {t: dq for t, dq in quantized_tensors(int8_proto).items() if t in fp32_names and t != output}
    ref_runner = None if reference is not None else ActivationRunner(fp32_proto, providers, [output, *layers])
    test_runner = ActivationRunner(int8_proto, providers, [output, *layers.values()])
    comparison = OutputComparison()
    powers = {t: PowerSum() for t in layers}
    for k, (feeds, n, labels) in enumerate(batches):
        test = test_runner.run(feeds)
        if reference is not None:
            ref = {output: reference[k]}
        else:
            ref = ref_runner.run(feeds)
        comparison.add(ref[output][:n], test[output][:n], labels)
        for t, dq in layers.items():
            powers[t].add(ref[t][:n], test[dq][:n])
    worst_first = sorted(powers.items(), key=lambda kv: kv[1].sqnr_db)
    return Evaluation(comparison, output, worst_first)


def _check_output(fp32: onnx.ModelProto, int8: onnx.ModelProto, output: str | None) -> str:
    """The output to compare (default: the first float one), present in both models."""
    name = choose_output(fp32, output).name
    if name not in {o.name for o in int8.graph.output}:
        raise Int8CalibError(f"--output {name}: the quantized model has no output '{name}'")
    return name


def _all_tensors(model: onnx.ModelProto) -> set[str]:
    return {o for n in model.graph.node for o in n.output} | {i.name for i in model.graph.input}


def labelled_batches(loader: BatchLoader, labels: dict[str, int] | None):
    """(feeds, real rows, labels) of every batch; every sample must have a label when labels are given."""
    bar = progress_bar(len(loader.samples), "evaluating", "img")
    try:
        for batch in loader:
            yield batch.feeds, batch.n, _batch_labels(batch, labels)
            bar.update(len(batch.samples))
    finally:
        bar.close()


def _batch_labels(batch: Batch, labels: dict[str, int] | None) -> np.ndarray | None:
    if labels is None:
        return None
    out = []
    for sample in batch.samples:
        if sample.path.name not in labels:
            raise Int8CalibError(f"{sample}: no label for '{sample.path.name}' in the labels file")
        out.append(labels[sample.path.name])
    return np.array(out, np.int64)


def evaluate(
    fp32: "str | Path",
    int8: "str | Path",
    data,
    preprocess: "str | Path | dict | Preprocess | None" = None,
    labels: "str | Path | None" = None,
    batch_size: int = 32,
    per_layer: bool = False,
    output: str | None = None,
    json_path: "str | Path | None" = None,
    providers: Sequence[str] | None = None,
    batch_axes: "dict[str, int | None] | None" = None,
) -> Evaluation:
    """Run ``fp32`` and ``int8`` over ``data`` and compare their outputs (the API of ``int8calib evaluate``)."""
    fp32_proto = load_model(fp32, load_external_data=False)
    int8_proto = _model(int8)  # a path, or a model built in memory (evaluate --cache)
    output = _check_output(fp32_proto, int8_proto, output)  # before any data is read
    from ..runner.model import declare_batch_axes, model_inputs

    inputs = declare_batch_axes(model_inputs(fp32_proto), batch_axes)
    samples = resolve(data, {i.name: i.layout for i in inputs})
    pre = Preprocess.load(preprocess) if preprocess is not None else None
    loader = BatchLoader(samples, inputs, pre, batch_size)
    table = read_labels(labels) if labels is not None else None
    result = compare_models(fp32_proto, int8_proto, labelled_batches(loader, table), output, per_layer, providers)
    result.calibration = model_record(int8_proto)
    if json_path is not None:
        write_text(json_path, json.dumps(result.to_dict(), indent=2) + "\n")
    return result
