"""Accuracy of every method on EfficientNet-Lite0, the table in docs/methods.md.

    PYTHONPATH=src python benchmarks/method_accuracy.py [--shared ../shared] [--batch-size 32]

Statistics are collected once on the 500 even-class photos of ../shared (in labels.tsv order,
batches of --batch-size); every method's ranges become a Q/DQ model, which ONNX Runtime runs
on the 500 odd-class photos against the float model: top-1 agreement, output SQNR, top-1.
"""

from __future__ import annotations

import tempfile
import time
from pathlib import Path

import onnx

from int8calib import api
from int8calib.batching import BatchLoader
from int8calib.evaluate import compare_models, read_labels
from int8calib.evaluate.compare import labelled_batches
from int8calib.methods import available, compute_ranges
from int8calib.preprocess import Preprocess
from int8calib.runner import ActivationRunner, model_inputs
from int8calib.sources import resolve
from int8calib.stats import load
from int8calib.writers.qdq import build_qdq
from imagenet_split import PRESET, arguments, split



def main() -> None:
    args = arguments(__doc__.splitlines()[0])
    model_path, labels_path, even, odd = split(args.shared)

    with tempfile.TemporaryDirectory() as tmp:
        stats_path = Path(tmp) / "even.npz"
        start = time.perf_counter()
        api.calibrate(model_path, even, PRESET, method="all", batch_size=args.batch_size, histograms=stats_path)
        print(f"statistics of {len(even)} photos: {time.perf_counter() - start:.1f} s")
        stats = load(stats_path)

    model = onnx.load(str(model_path))
    labels = read_labels(labels_path)
    loader = BatchLoader(resolve(odd), model_inputs(model), Preprocess.load(PRESET), 50)
    batches = list(labelled_batches(loader, labels))
    runner = ActivationRunner(model, None, ["logits"])
    reference = [runner.run(feeds)["logits"] for feeds, _, _ in batches]

    print("| method | top-1 agreement | output SQNR | INT8 top-1 |")
    print("| --- | ---: | ---: | ---: |")
    for method in available():
        qdq, _ = build_qdq(model, compute_ranges(method, stats))
        r = compare_models(model, qdq, batches, reference=reference).output.to_dict()
        print(f"| {method} | {r['top1_agreement']:.1f} % | {r['sqnr_db']:.2f} dB | {r['int8_top1']:.1f} % |")
    print(f"FP32 top-1: {r['fp32_top1']:.1f} %")


if __name__ == "__main__":
    main()
