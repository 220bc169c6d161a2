"""Auto's scoring twins against the models they stand for: SQNR and speed.

    PYTHONPATH=src:tests:benchmarks python benchmarks/scoring_model.py [--models ...] [--samples 64]

``--method auto`` and the accuracy budget rank candidates with ``passes.scoring_model`` (the written
model's INT8 weights, scales and corrected biases, float32 outside Q/DQ, weights stored dequantized)
instead of the INT8 + FP16 model itself, which ONNX Runtime's CPU runs 3x slower. For every auto
candidate of each real model (ranges from auto_regret.py's cached 100-sample statistics, or its
largest set) this prints the held-out SQNR of the written model and of its twin on pool B's first
``--samples`` samples, and the CPU time per sample of each, so the ranking's faithfulness is measured,
not assumed.
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import numpy as np
import onnx

from auto_regret import CANDIDATES, cases, loader, range_sets
from int8calib.evaluate import compare_models
from int8calib.evaluate.outputs import choose_output
from int8calib.passes import measure_shifts, quantized_model, scoring_model, spread
from int8calib.runner import ActivationRunner
from int8calib.writers.precision import PrecisionOptions


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--shared", default=str(Path(__file__).resolve().parents[1].parent / "shared"))
    parser.add_argument("--cache", default="/tmp/int8calib-auto-regret", help="auto_regret.py's cache (statistics reused)")
    parser.add_argument("--models", nargs="+", default=["efficientnet-lite0", "ppocr-det", "ppocr-rec", "minilm"])
    parser.add_argument("--samples", type=int, default=64)
    args = parser.parse_args()
    print("| model | candidate | written INT8 + FP16: SQNR dB | scoring twin: SQNR dB | difference dB | CPU ms / sample: written | twin |")
    print("| --- | --- | ---: | ---: | ---: | ---: | ---: |")
    for name, path, pool_a, pool_b, preprocess, batch in cases(Path(args.shared), Path(args.cache), args.models):
        model = onnx.load(str(path))
        sets = range_sets(name, path, pool_a, preprocess, batch, Path(args.cache) / name)
        ranges = sets[100] if 100 in sets else sets[max(sets)]
        lowering = PrecisionOptions("fp16")
        shifts = measure_shifts(model, loader(model, spread(pool_a, 32), preprocess, batch), max_samples=None,
                                high_precision="fp16", ranges_of=[])
        output = choose_output(model).name
        batches = [(b.feeds, b.n, None) for b in loader(model, pool_b[:args.samples], preprocess, batch)]
        reference = [ActivationRunner(model, None, [output]).run(feeds)[output] for feeds, _, _ in batches]
        seen: list[dict] = []
        for label, _, _ in CANDIDATES:
            amax = ranges[label]
            if any(amax == s for s in seen):
                continue
            seen.append(amax)
            row = []
            for build in (quantized_model, scoring_model):
                built = build(model, amax, shifts=shifts, precision=lowering).model
                start = time.process_time()
                sqnr = compare_models(model, built, batches, output, reference=reference).output.to_dict()["sqnr_db"]
                row.append((sqnr, 1000 * (time.process_time() - start) / sum(n for _, n, _ in batches)))
            (a, ta), (b, tb) = row
            print(f"| {name} | {label} | {a:.2f} | {b:.2f} | {b - a:+.3f} | {ta:.0f} | {tb:.0f} |", flush=True)


if __name__ == "__main__":
    main()
