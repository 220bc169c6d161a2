"""Constant lines on real models: how many, what they cost, and what a cache leaves out of INT8 without them.

    PYTHONPATH=src:tests python benchmarks/constant_lines.py [--samples 8]

For each model: minmax calibration with a TensorRT 8.6 header (no constant lines: TensorRT 8.x
numbers its constants) and with a 10.13 header (every constant TensorRT calibrates, named
``<constant>_output``); the time to compute the constants' statistics from the weights; and
``inspect --model``'s count of quantizable tensors each cache leaves without a range.
Models: EfficientNet-Lite0 (../shared), paraphrase-MiniLM-L3-v2 and the PP-OCRv4 recogniser
(test extras, tests/real_models.py); data generated as the tests do.
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import int8calib
from int8calib.cachefiles.inspect import inspect
from int8calib.runner.model import load_model, tensor_array
from int8calib.stats.constants import constant_statistics
from real_models import model_file, text_lines, token_files


def models(folder: Path, samples: int):
    shared = Path(__file__).resolve().parents[1].parent / "shared"
    lite0 = shared / "models" / "efficientnet_lite0.onnx"
    if lite0.is_file():
        photos = sorted((shared / "data" / "imagenet-sample").glob("*.jpg"))[:samples]
        yield "EfficientNet-Lite0", lite0, photos, "efficientnet-lite"
    if model_file("minilm"):
        yield "MiniLM-L3", model_file("minilm"), token_files(folder / "tokens", samples), None
    if model_file("ppocr-rec"):
        yield "PP-OCRv4 rec", model_file("ppocr-rec"), text_lines(folder / "lines", samples), "ppocr-rec"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--samples", type=int, default=8)
    args = parser.parse_args()
    print("| model | constant lines | their statistics (warm) | unranged, 8.6 cache | unranged, 10.13 cache |")
    print("|---|---|---|---|---|")
    with tempfile.TemporaryDirectory() as tmp:
        for name, model, data, preprocess in models(Path(tmp), args.samples):
            proto = load_model(model, load_external_data=False)
            constant_statistics(proto, tensor_array)  # the histogram kernel compiled, as after a calibration pass
            start = time.perf_counter()
            constants = constant_statistics(proto, tensor_array)
            seconds = time.perf_counter() - start
            unranged = []
            for version in (8601, 101303):
                cache = Path(tmp) / f"{name}.{version}.cache"
                int8calib.calibrate(model, data, preprocess, method="minmax", batch_size=4, cache=cache, trt_version=version)
                unranged.append(len(inspect(cache, model).comparison["unranged"]))
            print(f"| {name} | {len(constants)} | {seconds * 1000:.0f} ms | {unranged[0]} | {unranged[1]} |")


if __name__ == "__main__":
    main()
