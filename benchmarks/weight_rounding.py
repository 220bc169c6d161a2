"""Weight rounding (passes.weight_rounding) against rounding to nearest, on unseen data (docs/qdq.md).

    PYTHONPATH=src:tests:benchmarks python benchmarks/weight_rounding.py [--shared ../shared]
        [--models efficientnet-lite0 ppocr-det] [--methods mse percentile:99.99] [--cache DIR]
    PYTHONPATH=src:tests:benchmarks python benchmarks/weight_rounding.py --default
        [--models efficientnet-lite0 ppocr-det ppocr-rec minilm]

Per model, statistics are collected once on the calibration samples (cached under --cache); for each
method the Q/DQ model is scored against the float model on the held-out samples with the weights rounded
to nearest and with ``round_weights`` (Gram matrices on up to 128 calibration samples spread over them),
each with and without bias correction (shifts measured on the same samples, of the weights written).

* EfficientNet-Lite0: calibrate on the 500 even-class photos, score on the 500 odd (benchmarks/imagenet_split.py);
* PP-OCRv4 detector: the split of benchmarks/accuracy_table.py, 24 photos to calibrate, 48 others scored,
  the ppocr-det preset (shorter side 736).

``--default`` instead runs ``api.calibrate`` as the CLI's default does (``--method auto --qdq``: bias
correction, equalization where it applies, INT8 + FP16) with ``weight_rounding`` False and True on the
models and splits of benchmarks/accuracy_table.py, and scores each written model on the held-out samples.
"""

from __future__ import annotations

import argparse
import time
from collections import Counter
from pathlib import Path

import numpy as np
import onnx

from int8calib.auto import auto_candidate
from int8calib.batching import BatchLoader
from int8calib.collection.calibration_pass import collect_statistics
from int8calib.evaluate import compare_models, read_labels
from int8calib.evaluate.compare import labelled_batches
from int8calib.evaluate.outputs import choose_output
from int8calib.methods import compute_ranges
from int8calib.passes import correct_biases, measure_shifts, spread
from int8calib.passes.weight_rounding import gram_matrices, round_layer, roundable_layers
from int8calib.writers.qdq import _constants
from int8calib.preprocess import Preprocess
from int8calib.runner import ActivationRunner, model_inputs
from int8calib.sources import resolve
from int8calib.stats import load, save
from int8calib.writers.qdq import activation_tensors, build_qdq, node_id
from imagenet_split import PRESET, split
from real_models import model_file


def cases(shared: Path, names):
    if "efficientnet-lite0" in names:
        model, labels, even, odd = split(shared)
        yield "efficientnet-lite0", model, even, odd, PRESET, 32, labels
    if "ppocr-det" in names:
        photos = sorted(str(p) for p in (shared / "data" / "imagenet-sample").glob("*.jpg"))
        yield "ppocr-det", model_file("ppocr-det"), photos[0:48:2], photos[1:97:2], "ppocr-det", 4, None


def loader(model, samples, preset, batch) -> BatchLoader:
    inputs = model_inputs(model)
    return BatchLoader(resolve(samples, {i.name: i.layout for i in inputs}), inputs, Preprocess.load(preset), batch)


def statistics(name, path, model, calib, preset, batch, cache: Path):
    file = cache / f"{name}-calib.npz"
    if not file.exists():
        runner = ActivationRunner(path, None, activation_tensors(model), derive=True, any_layout=True)
        save(collect_statistics(loader(model, calib, preset, batch), runner, {}, trt_histograms=False), file)
    return load(file)


def rounded_weights(name, model, spread_loader, cache: Path) -> dict:
    """``round_weights``'s result, its Gram matrices cached (the float run over the samples is the slow part)."""
    layers = roundable_layers(model)
    file = cache / f"{name}-grams.npz"
    if file.exists():
        grams = dict(np.load(file))
    else:
        grams = gram_matrices(model, spread_loader, layers, max_samples=None)
        np.savez(file, **grams)
    constants = _constants(model.graph)
    readers = Counter(n.input[1] for n in layers)
    return {n.input[1]: round_layer(constants[n.input[1]], n, grams[node_id(n)]) for n in layers
            if readers[n.input[1]] == 1 and node_id(n) in grams}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--shared", default=str(Path(__file__).resolve().parents[1].parent / "shared"))
    parser.add_argument("--models", nargs="+", default=["efficientnet-lite0", "ppocr-det"])
    parser.add_argument("--methods", nargs="+", default=["mse", "percentile:99.99"])
    parser.add_argument("--cache", default="/tmp/int8calib-weight-rounding")
    parser.add_argument("--weights", nargs="+", choices=["nearest", "rounded"], default=["nearest", "rounded"])
    parser.add_argument("--default", action="store_true", help="api.calibrate's default with and without rounding")
    args = parser.parse_args()
    if args.default:
        return default_both_ways(Path(args.shared), args.models)
    cache = Path(args.cache)
    cache.mkdir(parents=True, exist_ok=True)
    for name, path, calib, held, preset, batch, labels in cases(Path(args.shared), args.models):
        model = onnx.load(str(path))
        stats = statistics(name, path, model, calib, preset, batch, cache)
        output = choose_output(model).name
        scored = list(labelled_batches(loader(model, held, preset, batch), read_labels(labels) if labels else None))
        reference = [r[output] for r in (ActivationRunner(model, None, [output]).run(f) for f, _, _ in scored)]
        spread_loader = loader(model, spread(calib), preset, min(batch, 8))
        start = time.perf_counter()
        rounded = rounded_weights(name, model, spread_loader, cache)
        rounding_s = time.perf_counter() - start
        shifts = {kind: measure_shifts(model, spread_loader, max_samples=None, weights=rounded if kind == "rounded" else None)
                  for kind in args.weights}
        print(f"\n### {name}: {len(calib)} calibration / {len(held)} scored samples; {len(rounded)} weights rounded "
              f"in {rounding_s:.1f} s (Gram matrices cached under --cache after the first run)\n")
        print("| method | weights | top-1 agreement | output SQNR | + BC: agreement | + BC: SQNR |")
        print("| --- | --- | ---: | ---: | ---: | ---: |")
        for label in args.methods:
            method, params = auto_candidate(label)
            amax = compute_ranges(method, stats, **params)
            for kind, weights in (("nearest", None), ("rounded", rounded)):
                if kind not in args.weights:
                    continue
                cells = []
                for corrected in (False, True):
                    qdq, _ = build_qdq(model, amax, weights=weights)
                    if corrected:
                        correct_biases(qdq, shifts[kind])
                    r = compare_models(model, qdq, scored, output, reference=reference).output.to_dict()
                    agree = "" if r["top1_agreement"] is None else f"{r['top1_agreement']:.1f} %"
                    cells += [agree, f"{r['sqnr_db']:.2f} dB"]
                print(f"| {label} | {kind} | " + " | ".join(cells) + " |", flush=True)


def default_both_ways(shared: Path, models) -> None:
    import tempfile

    from int8calib import api
    from accuracy_table import Scorer, cases as table_cases

    print("| model (calibration / scored) | weight rounding | auto chose | top-1 agreement | output SQNR | calibrate s |")
    print("| --- | --- | --- | ---: | ---: | ---: |")
    with tempfile.TemporaryDirectory() as tmp:
        for case in table_cases(shared, Path(tmp), models):
            scorer = Scorer(case, onnx.load(str(case.path)))
            for rounding in (False, True):
                out = Path(tmp) / f"{case.name}.{int(rounding)}.onnx"
                start = time.perf_counter()
                result = api.calibrate(case.path, case.calib, case.preset, batch_size=case.batch, qdq=out,
                                       weight_rounding=rounding)
                seconds = time.perf_counter() - start
                r = scorer.score(onnx.load(str(out)))
                agree = "" if r["top1_agreement"] is None else f"{r['top1_agreement']:.1f} %"
                print(f"| {case.name} ({len(case.calib)} / {len(case.held)}) | {'yes' if rounding else 'no'} | "
                      f"{result.chosen_method} | {agree} | {r['sqnr_db']:.2f} dB | {seconds:.1f} |", flush=True)


if __name__ == "__main__":
    main()
