"""Acceptance on a real transformer (#16 point 6): paraphrase-MiniLM-L3-v2's Q/DQ placement follows
TensorRT's rules (docs/qdq.md, "Transformers"), and int8calib's best method is at least as accurate as
ONNX Runtime's quantize_static on the same calibration samples (within 0.3 dB of output SQNR on held-out
samples). Measured numbers: docs/qdq.md; the benchmark: benchmarks/transformer_qdq.py."""

from __future__ import annotations

import onnx
import pytest

from int8calib import api
from int8calib.methods import compute_ranges
from int8calib.stats import load
from int8calib.writers.qdq import build_qdq
from real_models import real_model, token_files
from transformer_eval import Scorer, feeds_of, ort_quantize, qdq_counts

pytestmark = [pytest.mark.acceptance, pytest.mark.slow]

METHODS = ("mse", "percentile", "minmax", "entropy2")
# quantize_static, QDQ, per-channel, symmetric: its default op types, MatMul only (it adds Q/DQ on the
# MatMul outputs too), MatMul inputs only (int8calib's placement), with MinMax and Percentile
ORT = [("MinMax", None, True), ("MinMax", ["MatMul"], True), ("MinMax", ["MatMul"], False), ("Percentile", ["MatMul"], False)]


def test_minilm_placement_and_accuracy_against_quantize_static(tmp_path):
    path = real_model("minilm")
    model = onnx.load(str(path))
    calib = token_files(tmp_path / "calib", 100, seed=0)
    held = token_files(tmp_path / "held", 50, seed=1)
    api.calibrate(path, [str(p) for p in calib], None, method="all", batch_size=8, histograms=tmp_path / "s.npz")
    stats = load(tmp_path / "s.npz")
    scorer = Scorer(model, feeds_of(held))

    ours = {}
    for method in METHODS:
        qdq, summary = build_qdq(model, compute_ranges(method, stats))
        # 3 layers x (Q/K/V input, Q, K^T, softmax, V, context, FFN input, GELU output); 3 x 6 weights
        assert len(summary.activations) == 24 and len(summary.weights) == 18 and summary.residual_adds == []
        assert set(summary.quantized_nodes.values()) == {"MatMul"} and len(summary.quantized_nodes) == 24
        dq = {n.output[0] for n in qdq.graph.node if n.op_type == "DequantizeLinear"}
        assert {n.op_type for n in qdq.graph.node for t in n.input if t in dq} == {"MatMul"}
        ours[method] = scorer.score(qdq)

    theirs = {}
    for method, op_types, outputs in ORT:
        out = tmp_path / f"ort-{method}-{op_types}-{outputs}.onnx"
        qdq = ort_quantize(path, calib, method, op_types, out, outputs)
        theirs[(method, str(op_types), outputs)] = scorer.score(qdq)
        if op_types and not outputs:
            assert qdq_counts(qdq) == (24, 42)  # the same placement as int8calib's

    best = max(s["sqnr"] for s in ours.values())
    best_ort = max(s["sqnr"] for s in theirs.values())
    table = {**{m: round(s["sqnr"], 2) for m, s in ours.items()}, **{k: round(s["sqnr"], 2) for k, s in theirs.items()}}
    assert best >= best_ort - 0.3, table
    # measured (docs/qdq.md): percentile 20.1 dB, quantize_static at best 13.9 dB; keep a margin for ORT versions
    assert best > 18.0 and ours["percentile"]["cos_mean"] > 0.99, table
