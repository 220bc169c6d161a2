"""Scoring a Q/DQ MiniLM against the float model, and ONNX Runtime's quantize_static on the same samples
(benchmarks/transformer_qdq.py and tests/test_transformer_qdq_acceptance.py)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort

TOKENS = "onnx::Shape_422"  # MiniLM's token embeddings, its first float output


def feeds_of(paths):
    """One feed dict per sample, batch of 1."""
    return [{k: v[None] for k, v in np.load(p).items()} for p in paths]


def sentence_output(model: onnx.ModelProto) -> str:
    """The rank-2 float output (the pooled sentence embedding)."""
    for o in model.graph.output:
        t = o.type.tensor_type
        if t.elem_type == onnx.TensorProto.FLOAT and len(t.shape.dim) == 2:
            return o.name
    raise ValueError("the model has no rank-2 float output")


class Scorer:
    """Runs a model on the held-out feeds and scores it against the float model."""

    def __init__(self, model: onnx.ModelProto, feeds):
        self.feeds = feeds
        self.sentence = sentence_output(model)
        self.reference = self._run(model)

    def _run(self, model):
        options = ort.SessionOptions()
        options.intra_op_num_threads = 1
        session = ort.InferenceSession(model.SerializeToString(), options, providers=["CPUExecutionProvider"])
        return [session.run([TOKENS, self.sentence], f) for f in self.feeds]

    def score(self, model) -> dict:
        test = self._run(model)
        signal = noise = 0.0
        cosines = []
        for (rt, rs), (qt, qs) in zip(self.reference, test):
            rt64 = rt.astype(np.float64)
            signal += float(np.sum(rt64**2))
            noise += float(np.sum((rt64 - qt) ** 2))
            a, b = rs.astype(np.float64).ravel(), qs.astype(np.float64).ravel()
            cosines.append(float(a @ b / (np.linalg.norm(a) * np.linalg.norm(b))))
        return {"sqnr": 10 * np.log10(signal / noise), "cos_mean": float(np.mean(cosines)), "cos_min": float(np.min(cosines))}


def qdq_counts(model: onnx.ModelProto) -> tuple[int, int]:
    """(QuantizeLinear nodes, DequantizeLinear nodes)."""
    ops = [n.op_type for n in model.graph.node]
    return ops.count("QuantizeLinear"), ops.count("DequantizeLinear")


def _flatten_histogram_inputs() -> None:
    """ONNX Runtime's histogram collector stacks a tensor's arrays from all samples with np.asarray,
    which fails when sequence lengths differ; its histograms only use the flattened values, so
    concatenating them first gives the same histogram (MinMax does not go through this)."""
    from onnxruntime.quantization.calibrate import HistogramCollector

    if getattr(HistogramCollector, "_flattened", False):
        return
    collect = HistogramCollector.collect

    def flat(self, name_to_arr):
        return collect(self, {k: np.concatenate([np.ravel(a) for a in v]) if isinstance(v, list) else v
                              for k, v in name_to_arr.items()})

    HistogramCollector.collect, HistogramCollector._flattened = flat, True


def ort_quantize(path: Path, calib, method: str, op_types, out: Path, outputs: bool = True) -> onnx.ModelProto:
    from onnxruntime.quantization import CalibrationDataReader, CalibrationMethod, QuantFormat, QuantType, quantize_static

    _flatten_histogram_inputs()

    class Reader(CalibrationDataReader):
        def __init__(self):
            self.it = iter(feeds_of(calib))

        def get_next(self):
            return next(self.it, None)

    extra = {"ActivationSymmetric": True, "WeightSymmetric": True}
    if op_types == ["MatMul"] and not outputs:
        extra["OpTypesToExcludeOutputQuantization"] = ["MatMul"]
    quantize_static(
        str(path), str(out), Reader(), quant_format=QuantFormat.QDQ, op_types_to_quantize=op_types,
        per_channel=True, activation_type=QuantType.QInt8, weight_type=QuantType.QInt8,
        calibrate_method=getattr(CalibrationMethod, method), extra_options=extra,
    )
    return onnx.load(str(out))


def residual_through_qdq(qdq: onnx.ModelProto) -> onnx.ModelProto:
    """A copy where every Add reading a tensor that has a Q/DQ pair reads the pair's output instead
    (the residual stream quantized as quantize_static leaves it): the ablation of docs/qdq.md."""
    out = onnx.ModelProto()
    out.CopyFrom(qdq)
    q_of = {n.input[0]: n.output[0] for n in out.graph.node if n.op_type == "QuantizeLinear"}
    dq_of = {n.input[0]: n.output[0] for n in out.graph.node if n.op_type == "DequantizeLinear"}
    for node in out.graph.node:
        if node.op_type == "Add":
            for i, t in enumerate(node.input):
                if t in q_of and q_of[t] in dq_of:
                    node.input[i] = dq_of[q_of[t]]
    return out
