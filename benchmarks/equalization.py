"""Equalization (passes.equalization) against none, on unseen data (docs/qdq.md, "Equalization").

    PYTHONPATH=src:tests:benchmarks python benchmarks/equalization.py [--shared ../shared]
        [--models efficientnet-lite0 ppocr-det ppocr-rec minilm] [--methods percentile:99.99 mse]
        [--alphas 0.25 0.5 0.75 1] [--cache DIR] [--default]

The models, calibration and scored samples of benchmarks/accuracy_table.py (EfficientNet-Lite0: 500 even /
500 odd photos; PP-OCRv4 detector: 24 photos / 48 others; recogniser: 40 / 100 generated lines; MiniLM:
40 / 100 token files). Per model, the float model is equalized as ``calibrate --equalize`` does it (channel
ranges on up to ``EQUALIZE_SAMPLES`` calibration samples spread over them), statistics are collected on the
original and on the equalized model (cached under --cache), and each method's Q/DQ model is scored against
the original float model on the held-out samples, plain and with bias correction (shifts measured on the
model the Q/DQ model is built from). ``--default`` also runs ``api.calibrate`` as the CLI's default does
(``--method auto --qdq``, bias correction on) with ``equalize`` False and True, and scores what it wrote.
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import onnx

from int8calib import api
from int8calib.auto import auto_candidate
from int8calib.collection.calibration_pass import collect_statistics
from int8calib.methods import compute_ranges
from int8calib.passes import correct_biases, measure_shifts, spread
from int8calib.passes.equalization import EQUALIZE_SAMPLES, equalize
from int8calib.runner import ActivationRunner
from int8calib.stats import load, save
from int8calib.writers.qdq import activation_tensors, build_qdq
from accuracy_table import Scorer, cases, loader


def statistics(case, path: Path, model: onnx.ModelProto, file: Path):
    if not file.exists():
        runner = ActivationRunner(path, None, activation_tensors(model), derive=True, any_layout=True)
        save(collect_statistics(loader(case, model, case.calib), runner, {}, trt_histograms=False), file)
    return load(file)


def cell(r: dict) -> str:
    agree = "" if r.get("top1_agreement") is None else f"{r['top1_agreement']:.1f} % / "
    return f"{agree}{r['sqnr_db']:.2f} dB"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--shared", default=str(Path(__file__).resolve().parents[1].parent / "shared"))
    parser.add_argument("--models", nargs="+", default=["efficientnet-lite0", "ppocr-det", "ppocr-rec", "minilm"])
    parser.add_argument("--methods", nargs="+", default=["percentile:99.99", "mse"])
    parser.add_argument("--alphas", type=float, nargs="+", default=None, help="passes.equalization.ALPHAS unless given")
    parser.add_argument("--depthwise-only", action="store_true", help="only tensors depthwise Convs alone read")
    parser.add_argument("--cache", default="/tmp/int8calib-equalization")
    parser.add_argument("--default", action="store_true", help="also api.calibrate's default (auto, --qdq) both ways")
    args = parser.parse_args()
    cache = Path(args.cache)
    cache.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory() as tmp:
        for case in cases(Path(args.shared), Path(tmp), args.models):
            model = onnx.load(str(case.path))
            scorer = Scorer(case, model)
            start = time.perf_counter()
            options = ({} if args.alphas is None else {"alphas": args.alphas}) | {"depthwise_only": args.depthwise_only}
            done = equalize(model, loader(case, model, spread(case.calib, EQUALIZE_SAMPLES)), **options)
            seconds = time.perf_counter() - start
            tag = ("" if args.alphas is None else "-a" + "-".join(map(str, args.alphas))) + ("-dw" if args.depthwise_only else "")
            eq_path = cache / f"{case.name}{tag}.equalized.onnx"
            onnx.save(done.model, str(eq_path))
            print(f"\n### {case.name}: {len(case.calib)} calibration / {len(case.held)} scored samples; "
                  f"{len(done.tensors)} tensors equalized in {seconds:.1f} s (channel ranges on {done.samples} samples)\n")
            print("| method | equalized | plain | + bias correction |\n| --- | --- | ---: | ---: |")
            for label, m, path in (("no", model, case.path), ("yes", done.model, eq_path)):
                if label == "yes" and not done.tensors:
                    print("| (all) | yes | = no: nothing to equalize | |")
                    continue
                stats = statistics(case, path, m, cache / f"{case.name}{tag if label == 'yes' else ''}-{label}.npz")
                shifts = measure_shifts(m, loader(case, m, spread(case.calib)), max_samples=None)
                for method_label in args.methods:
                    method, params = auto_candidate(method_label)
                    qdq, _ = build_qdq(m, compute_ranges(method, stats, **params))
                    plain = cell(scorer.score(qdq))
                    correct_biases(qdq, shifts)
                    print(f"| {method_label} | {label} | {plain} | {cell(scorer.score(qdq))} |", flush=True)
            if args.default:
                for flag in (False, True):
                    out = Path(tmp) / f"{case.name}.default{int(flag)}.onnx"
                    result = api.calibrate(case.path, case.calib, case.preset, batch_size=case.batch, qdq=out, equalize=flag)
                    print(f"| default (auto chose {result.chosen_method}) | {'yes' if flag else 'no'} | | "
                          f"{cell(scorer.score(onnx.load(str(out))))} |", flush=True)


if __name__ == "__main__":
    main()
