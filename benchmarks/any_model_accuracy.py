"""Output SQNR of every method on real non-classifier models, the table in docs/methods.md.

    PYTHONPATH=src:tests python benchmarks/any_model_accuracy.py [--shared ../shared]

Models come from the test extras' wheels (tests/real_models.py). Statistics are collected once per
model on its calibration data; every method's ranges become a Q/DQ model, which ONNX Runtime runs
on held-out data against the float model: SQNR of the first floating-point output.
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import onnx

from int8calib import api
from int8calib.batching import BatchLoader
from int8calib.evaluate import compare_models
from int8calib.evaluate.outputs import choose_output
from int8calib.methods import available, compute_ranges
from int8calib.preprocess import Preprocess
from int8calib.runner import ActivationRunner, model_inputs
from int8calib.sources import resolve
from int8calib.stats import load
from int8calib.writers.qdq import build_qdq
from real_models import audio_chunks, model_file, text_lines, token_files


def cases(shared: Path, tmp: Path):
    photos = sorted((shared / "data" / "imagenet-sample").glob("*.jpg"))
    yield "ppocr-det", [str(p) for p in photos[0:48:2]], [str(p) for p in photos[1:24:2]], "ppocr-det", 4
    yield "ppocr-rec", text_lines(tmp / "rec-calib", 40, 0), text_lines(tmp / "rec-eval", 20, 1), "ppocr-rec", 8
    yield "minilm", token_files(tmp / "tok-calib", 40, 0), token_files(tmp / "tok-eval", 20, 1), None, 8
    yield "silero-vad", audio_chunks(tmp / "vad-calib", 40, 0), audio_chunks(tmp / "vad-eval", 20, 1), None, 8


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--shared", default=str(Path(__file__).resolve().parents[1].parent / "shared"))
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        for name, calib, held, preset, batch in cases(Path(args.shared), tmp):
            path = model_file(name)
            if path is None:
                print(f"{name}: wheel not installed")
                continue
            model = onnx.load(str(path))
            start = time.perf_counter()
            stats_path = tmp / f"{name}.npz"
            api.calibrate(path, [str(p) for p in calib], preset, method="all", batch_size=batch, histograms=stats_path)
            stats = load(stats_path)
            output = choose_output(model).name
            inputs = model_inputs(model)
            loader = BatchLoader(resolve([str(p) for p in held], {i.name: i.layout for i in inputs}), inputs,
                                 Preprocess.load(preset) if preset else None, batch)
            batches = [(b.feeds, b.n, None) for b in loader]
            runner = ActivationRunner(model, None, [output])
            reference = [runner.run(feeds)[output] for feeds, _, _ in batches]
            print(f"\n{name}: {len(stats.tensors)} tensors, output '{output}', {len(calib)} calibration / "
                  f"{len(held)} held-out samples, statistics in {time.perf_counter() - start:.1f} s")
            print("| method | output SQNR |")
            print("| --- | ---: |")
            for method in available():
                qdq, _ = build_qdq(model, compute_ranges(method, stats))
                r = compare_models(model, qdq, batches, output, reference=reference).output.to_dict()
                sqnr = "inf (nothing quantized)" if r["sqnr_db"] is None else f"{r['sqnr_db']:.2f} dB"
                print(f"| {method} | {sqnr} |")

if __name__ == "__main__":
    main()
