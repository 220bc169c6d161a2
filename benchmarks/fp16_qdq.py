"""INT8 + FP16 against INT8 + FP32 Q/DQ models on the real models: the table in docs/qdq.md.

    PYTHONPATH=src:tests:benchmarks python benchmarks/fp16_qdq.py [--shared ../shared] [--models minilm ...]

For each model (data and scoring as benchmarks/accuracy_table.py: EfficientNet-Lite0 calibrated on the 500
even-class photos and scored on the 500 odd ones; PP-OCRv4 detector and recogniser and MiniLM-L3 from the test
extras' wheels on generated data), ``calibrate --qdq`` with its defaults (``--method auto``, bias correction,
``--high-precision fp16``) writes the INT8 + FP16 model; the same ranges (``--method <auto's choice>``, which
gives auto's refit ranges) with ``--high-precision fp32`` write the INT8 + FP32 twin. Both run in ONNX Runtime
on the CPU (FP16 nodes computed in float32 between float16 casts: docs/qdq.md says what that emulates) against
the float model. Columns: output SQNR and top-1 agreement (classifiers), the nodes left with float32 outputs
(``writers.precision.float32_compute_nodes``: casts and shape ops aside, a DequantizeLinear feeding an FP32
layer counted; what a strongly typed TensorRT build runs in FP32) with the nodes kept and why, and the size
of each model file.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

import onnx

from int8calib import api
from int8calib.auto import auto_candidate
from int8calib.runner import load_model
from int8calib.writers.precision import float32_compute_nodes, model_precision
from int8calib.writers.provenance import model_record
from accuracy_table import Scorer, cases

MODELS = ("efficientnet-lite0", "ppocr-det", "ppocr-rec", "minilm")


def size_mb(path: Path) -> float:
    data = path.with_name(path.name + ".data")
    return (path.stat().st_size + (data.stat().st_size if data.exists() else 0)) / 1e6


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--shared", default=str(Path(__file__).resolve().parents[1].parent / "shared"))
    parser.add_argument("--models", nargs="+", default=list(MODELS), choices=MODELS)
    args = parser.parse_args()
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for case in cases(Path(args.shared), Path(tmp), args.models):
            if case.path is None:
                print(f"{case.name}: wheel not installed, skipped", file=sys.stderr)
                continue
            proto = load_model(case.path)
            scorer = Scorer(case, proto)
            paths = {hp: Path(tmp) / f"{case.name}.{hp}.onnx" for hp in ("fp16", "fp32")}
            start = time.perf_counter()
            result = api.calibrate(case.path, case.calib, case.preset, batch_size=case.batch, qdq=paths["fp16"])
            seconds = time.perf_counter() - start
            method, params = auto_candidate(result.chosen_method)
            api.calibrate(case.path, case.calib, case.preset, method=method, batch_size=case.batch, qdq=paths["fp32"],
                          high_precision="fp32", **params)
            for hp, path in paths.items():
                written = onnx.load(str(path))
                metrics = scorer.score(written)
                kept = model_precision(written, model_record(written)).fp32_nodes if hp == "fp16" else {}
                rows.append((case.name, hp, result.chosen_method, metrics, len(float32_compute_nodes(written)),
                             len(written.graph.node), kept, size_mb(path), seconds if hp == "fp16" else None))
                print(rows[-1][:6], f"{rows[-1][7]:.2f} MB", file=sys.stderr)
    print("| model | float computation | method | top-1 agreement | output SQNR | FP32 compute nodes / all | size |")
    print("| --- | --- | --- | ---: | ---: | ---: | ---: |")
    for name, hp, method, metrics, fp32_nodes, nodes, kept, size, _ in rows:
        agree = f"{metrics['top1_agreement']:.1f} %" if metrics.get("top1_agreement") is not None and name.startswith("efficient") else "—"
        sqnr = "inf" if metrics["sqnr_db"] is None else f"{metrics['sqnr_db']:.2f} dB"
        print(f"| {name} | INT8 + {hp.upper()} | {method} | {agree} | {sqnr} | {fp32_nodes} / {nodes} | {size:.2f} MB |")
    print()
    for name, hp, _, _, _, _, kept, _, _ in rows:
        for node, why in kept.items():
            print(f"* {name}: `{node}` kept FP32: {why}")


if __name__ == "__main__":
    main()
