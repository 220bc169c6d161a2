"""Accuracy of every int8calib method (plain and with bias correction), --method auto and ONNX Runtime's
quantize_static on five real models: the tables in docs/methods.md.

    PYTHONPATH=src:tests:benchmarks python benchmarks/accuracy_table.py [--shared ../shared] [--models minilm ...]

Models and data:

* EfficientNet-Lite0 from ../shared: calibrate on the 500 even-class photos, evaluate on the 500 odd-class
  ones (benchmarks/imagenet_split.py); top-1 agreement with the float model, INT8 top-1 and output SQNR.
* PP-OCRv4 detector and recogniser, paraphrase-MiniLM-L3 encoder, Silero VAD from the test extras' wheels
  (tests/real_models.py), on generated data (``cases``); output SQNR of the first floating-point output.

Every Q/DQ model runs in ONNX Runtime on the held-out samples against the float model. Rows:

* every fixed method (``methods.available()``): statistics collected once per model (``--method all``),
  each method's ranges written as a Q/DQ model (``build_qdq``);
* ``+ BC``: the same Q/DQ model with bias correction (``passes.bias_correction``): the weight-rounding shifts
  are measured once per model on the float model, on up to 128 calibration samples spread evenly over the
  list (the photos are sorted by class: ``measure_shifts`` alone would take the first 128), and the layers
  the Q/DQ model quantized are corrected (the row says how many of them ``correct_biases`` changed);
* ``auto`` and ``auto + BC``: ``api.calibrate(method="auto", qdq=...)`` with ``bias_correction`` False / True
  (``n/a (api pending)`` where ``api.calibrate`` has no ``bias_correction`` yet);
* ``quantize_static``: ONNX Runtime's quantizer on the same calibration batches: QDQ, per-channel, symmetric
  int8 activations and weights, its default op types, calibration methods MinMax, Percentile (its default
  99.999) and Entropy. ``CalibStridedMinMax`` = 1 makes it reduce each batch's activations before reading
  the next (despite its name it applies to every method): otherwise it holds the activations of all
  calibration samples at once (gigabytes on the 500 photos) and cannot stack batches of different shapes
  for its histograms. The model goes through ``quant_pre_process`` first, as ONNX Runtime recommends (its
  symbolic shape inference needs ``pip install sympy``; where it fails, it is retried without, then
  skipped), and opset < 13 is converted to 13 (per-channel DequantizeLinear). The notes under each table
  say what was done.
"""

from __future__ import annotations

import argparse
import contextlib
import inspect
import os
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path

import onnx

from int8calib import api
from int8calib.batching import BatchLoader
from int8calib.evaluate import compare_models, read_labels
from int8calib.evaluate.compare import labelled_batches
from int8calib.evaluate.outputs import choose_output
from int8calib.methods import available, compute_ranges
from int8calib.passes import BiasShifts, correct_biases, measure_shifts
from int8calib.passes import spread
from int8calib.preprocess import Preprocess
from int8calib.runner import ActivationRunner, model_inputs
from int8calib.sources import resolve
from int8calib.stats import load
from int8calib.writers.qdq import build_qdq
from imagenet_split import PRESET, split
from real_models import audio_chunks, model_file, text_lines, token_files

MODELS = ("efficientnet-lite0", "ppocr-det", "ppocr-rec", "minilm", "silero-vad")
ORT_METHODS = ("MinMax", "Percentile", "Entropy")


@dataclass
class Case:
    name: str
    path: Path | None  # None: the wheel is not installed
    calib: list[str]
    held: list[str]
    preset: str | None
    batch: int
    labels: Path | None = None  # a classifier's labels.tsv: top-1 columns


def cases(shared: Path, tmp: Path, names):
    if "efficientnet-lite0" in names:
        model, labels, even, odd = split(shared)
        yield Case("efficientnet-lite0", model, even, odd, PRESET, 32, labels)
    photos = sorted((shared / "data" / "imagenet-sample").glob("*.jpg"))
    data = {
        # scored on more samples than they calibrate on: with 12-20, differences of 2 dB between methods
        # were noise (PP-OCRv4 rec: minmax led by 2.3 dB on 20 lines and trailed by 1.2 dB on 100)
        "ppocr-det": lambda: ([str(p) for p in photos[0:48:2]], [str(p) for p in photos[1:97:2]], "ppocr-det", 4),
        "ppocr-rec": lambda: (text_lines(tmp / "rec-calib", 40, 0), text_lines(tmp / "rec-eval", 100, 1), "ppocr-rec", 8),
        "minilm": lambda: (token_files(tmp / "tok-calib", 40, 0), token_files(tmp / "tok-eval", 100, 1), None, 8),
        "silero-vad": lambda: (audio_chunks(tmp / "vad-calib", 40, 0), audio_chunks(tmp / "vad-eval", 20, 1), None, 8),
    }
    for name, make in data.items():
        if name in names:
            calib, held, preset, batch = make()
            yield Case(name, model_file(name), [str(p) for p in calib], [str(p) for p in held], preset, batch)


class Scorer:
    """The float model's outputs on the held-out batches, computed once; ``score`` compares a Q/DQ model."""

    def __init__(self, case: Case, model: onnx.ModelProto):
        self.model, self.output, self.fp32_top1 = model, choose_output(model).name, None
        self.batches = list(labelled_batches(loader(case, model, case.held), read_labels(case.labels) if case.labels else None))
        runner = ActivationRunner(model, None, [self.output])
        self.reference = [runner.run(feeds)[self.output] for feeds, _, _ in self.batches]

    def score(self, qdq) -> dict:
        return compare_models(self.model, qdq, self.batches, self.output, reference=self.reference).output.to_dict()


def loader(case: Case, model: onnx.ModelProto, samples: list[str]) -> BatchLoader:
    inputs = model_inputs(model)
    return BatchLoader(resolve(samples, {i.name: i.layout for i in inputs}), inputs,
                       Preprocess.load(case.preset) if case.preset else None, case.batch)


class FeedReader:
    """onnxruntime's CalibrationDataReader over int8calib's preprocessed batches (with the ``__len__`` and
    ``set_range`` that CalibStridedMinMax uses)."""

    def __init__(self, feeds: list[dict]):
        self.feeds, self.position, self.end = feeds, 0, len(feeds)

    def get_next(self):
        if self.position >= self.end:
            return None
        self.position += 1
        return self.feeds[self.position - 1]

    def __len__(self) -> int:
        return len(self.feeds)

    def set_range(self, start_index: int, end_index: int) -> None:
        self.position, self.end = start_index, end_index


def quantize_static_models(case: Case, model: onnx.ModelProto, tmp: Path, notes: list[str]):
    """(label, Q/DQ model or an error message) of quantize_static with each calibration method; what was
    done to the model goes to ``notes``."""
    from onnxruntime.quantization import CalibrationMethod, QuantFormat, QuantType, quant_pre_process, quantize_static

    base = case.path
    opset = next(o.version for o in model.opset_import if o.domain in ("", "ai.onnx"))
    if opset < 13:  # per-channel DequantizeLinear needs 13: build_qdq converts, quantize_static writes an invalid model
        base = tmp / f"{case.name}.opset13.onnx"
        onnx.save(onnx.version_converter.convert_version(model, 13), str(base))
        notes.append(f"converted from opset {opset} to 13 for quantize_static (onnx.version_converter), as build_qdq does")
    source, pre = base, "the float model as it is"
    for options, done in (({}, "quant_pre_process"),
                          ({"skip_symbolic_shape": True}, "quant_pre_process without symbolic shape inference")):
        try:
            quant_pre_process(str(base), str(tmp / f"{case.name}.pre.onnx"), **options)
            source, pre = tmp / f"{case.name}.pre.onnx", done
            break
        except Exception as exc:  # ONNX Runtime recommends it; where it fails, try less of it, then nothing
            notes.append(f"quant_pre_process{options or ''} failed ({type(exc).__name__}: {str(exc)[:100]})")
    notes.append(f"quantize_static quantized {pre}, calibrating on all {len(case.calib)} calibration samples")
    feeds = [b.feeds for b in loader(case, model, case.calib)]
    for method in ORT_METHODS:
        label = f"quantize_static {method}"
        out = tmp / f"{case.name}.ort-{method}.onnx"
        try:
            with contextlib.redirect_stdout(sys.stderr):  # its progress lines would break the table
                quantize_static(
                    str(source), str(out), FeedReader(feeds), quant_format=QuantFormat.QDQ, per_channel=True,
                    activation_type=QuantType.QInt8, weight_type=QuantType.QInt8,
                    calibrate_method=getattr(CalibrationMethod, method),
                    extra_options={"ActivationSymmetric": True, "WeightSymmetric": True, "CalibStridedMinMax": 1},
                )
            yield label, onnx.load(str(out))
        except Exception as exc:  # report and go on
            yield label, f"failed: {type(exc).__name__}: {str(exc)[:160]}"


def auto_models(case: Case, tmp: Path):
    """(label, Q/DQ model or a message) of --method auto, without and with bias correction."""
    has_bc = "bias_correction" in inspect.signature(api.calibrate).parameters
    for bc in (False, True):
        label = "auto + BC" if bc else "auto"
        if bc and not has_bc:
            yield label, "n/a (api pending)"
            continue
        path = tmp / f"{case.name}.auto{'-bc' if bc else ''}.onnx"
        try:
            result = api.calibrate(case.path, case.calib, case.preset, method="auto", batch_size=case.batch, qdq=path,
                                   **({"bias_correction": bc} if has_bc else {}))
        except TypeError:
            yield label, "n/a (api pending)"
            continue
        except Exception as exc:
            yield label, f"failed: {type(exc).__name__}: {str(exc)[:160]}"
            continue
        yield f"{label} (chose {result.chosen_method})", onnx.load(str(path))


def run(case: Case, tmp: Path) -> None:
    model = onnx.load(str(case.path))
    stats_path = tmp / f"{case.name}.npz"
    api.calibrate(case.path, case.calib, case.preset, method="all", batch_size=case.batch, histograms=stats_path)
    stats = load(stats_path)
    scorer = Scorer(case, model)
    shifts = measure_shifts(model, loader(case, model, spread(case.calib)), max_samples=None)

    classifier = case.labels is not None
    print(f"\n### {case.name}\n\n{len(case.calib)} calibration / {len(case.held)} held-out samples, batches of "
          f"{case.batch}; output '{scorer.output}'; {len(stats.tensors)} tensors calibrated; bias correction: shifts of "
          f"{len(shifts.shifts)} layers measured on {shifts.samples} calibration samples\n")
    if classifier:
        print("| method | top-1 agreement | INT8 top-1 | output SQNR |\n| --- | ---: | ---: | ---: |")
    else:
        print("| method | output SQNR |\n| --- | ---: |")

    def row(label: str, qdq) -> None:
        if isinstance(qdq, str):
            print(f"| {label} | {qdq} |" + (" | |" if classifier else ""), flush=True)
            return
        try:
            r = scorer.score(qdq)
        except Exception as exc:  # a model ONNX Runtime cannot run: say so and go on
            return row(label, f"failed to run: {type(exc).__name__}: {str(exc)[:200]}")
        sqnr = "inf (nothing quantized)" if r["sqnr_db"] is None else f"{r['sqnr_db']:.2f} dB"
        top1 = f"{r['top1_agreement']:.1f} % | {r['int8_top1']:.1f} % | " if classifier else ""
        print(f"| {label} | {top1}{sqnr} |", flush=True)
        scorer.fp32_top1 = r.get("fp32_top1")

    for method in available():
        qdq, summary = build_qdq(model, compute_ranges(method, stats))
        row(method, qdq)
        quantized = BiasShifts({k: v for k, v in shifts.shifts.items() if k in summary.quantized_nodes}, shifts.samples)
        corrected = correct_biases(qdq, quantized)  # in place: the plain model is scored already
        row(f"{method} + BC ({len(corrected)} of {len(summary.quantized_nodes)} layers)", qdq)
    for label, qdq in auto_models(case, tmp):
        row(label, qdq)
    notes: list[str] = []
    cwd = os.getcwd()
    os.chdir(tmp)  # quant_pre_process and quantize_static leave temporary files in the working directory
    try:
        for label, qdq in quantize_static_models(case, model, tmp, notes):
            row(label, qdq)
    finally:
        os.chdir(cwd)
    if classifier and scorer.fp32_top1 is not None:
        notes.append(f"FP32 top-1: {scorer.fp32_top1:.1f} %")
    print("".join(f"\n* {note}" for note in notes))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--shared", default=str(Path(__file__).resolve().parents[1].parent / "shared"))
    parser.add_argument("--models", nargs="+", choices=MODELS, default=list(MODELS))
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        for case in cases(Path(args.shared), Path(tmp), args.models):
            if case.path is None:
                print(f"\n### {case.name}\n\nwheel not installed (pip install -e '.[test]')")
                continue
            run(case, Path(tmp))


if __name__ == "__main__":
    main()
