"""The calibrator object: TensorRT's IInt8Calibrator protocol in plain Python.

TensorRT drives a calibrator like this, and so does :func:`run_calibrator`::

    cache = calibrator.read_calibration_cache()
    if cache is valid: use it, touch no data
    else:
        while (batch := calibrator.get_batch(input_names)) is not None:
            run the network on batch, histogram every activation
        compute thresholds with calibrator.get_algorithm()
        calibrator.write_calibration_cache(cache)

Here the batches are host numpy arrays and the "network" is ONNX Runtime; the
TensorRT adapter (``int8calib.tensorrt``) reuses these classes and copies batches to
the GPU instead.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterator, Sequence

import numpy as np

from .batching import Batch, BatchLoader
from .errors import CacheFormatError, Int8CalibError
from .methods import compute_ranges, get as get_method
from .preprocess import Preprocess
from .runner import ActivationRunner
from .runner.model import InputInfo
from .sources import Sample, resolve
from .stats import Statistics, StatsCollector
from .util.atomic import write_bytes
from .util.log import logger, progress_bar
from .writers.cache import DEFAULT_TRT_VERSION, format_cache, parse_cache


class Calibrator:
    """Serves calibration batches and the cache, like an ``IInt8Calibrator`` subclass.

    ``data`` is anything :func:`int8calib.sources.resolve` takes, or a list of samples;
    ``inputs`` the model's inputs (:func:`int8calib.runner.model_inputs`).
    """

    method = "entropy2"

    def __init__(
        self,
        data,
        inputs: Sequence[InputInfo],
        preprocess: "Preprocess | str | None" = None,
        batch_size: int = 32,
        cache_file: "str | Path | None" = None,
        method: str | None = None,
        shuffle: int | None = None,
        skip_bad_images: bool = False,
    ):
        if method is not None:
            self.method = method
        get_method(self.method)  # fail early on an unknown name
        self.inputs = list(inputs)
        samples = data if _is_samples(data) else resolve(data, {i.name: len(i.shape) for i in self.inputs}, shuffle)
        pre = Preprocess.load(preprocess) if preprocess is not None else None
        self.loader = BatchLoader(samples, self.inputs, pre, batch_size, skip_bad_images)
        self.cache_file = Path(cache_file) if cache_file is not None else None
        self._batches: Iterator[Batch] | None = None
        self.batch: Batch | None = None  # the batch last returned by get_batch

    # ---- the IInt8Calibrator methods ---------------------------------------
    def get_batch_size(self) -> int:
        return self.loader.batch_size

    def get_algorithm(self) -> str:
        """The TensorRT algorithm name written in the cache header."""
        return get_method(self.method).algorithm

    def get_batch(self, names: Sequence[str]) -> list[np.ndarray] | None:
        """The next batch as arrays in the order of ``names``; None when the data is exhausted."""
        if self._batches is None:
            self._batches = iter(self.loader)
        self.batch = next(self._batches, None)
        if self.batch is None:
            return None
        try:
            return [self.batch.feeds[name] for name in names]
        except KeyError as exc:
            raise Int8CalibError(f"the engine asked for input {exc.args[0]!r}, which the data does not feed") from None

    def read_calibration_cache(self) -> bytes | None:
        """The cache's bytes when it exists, parses and matches this calibrator's algorithm."""
        if self.cache_file is None or not self.cache_file.is_file():
            return None
        data = self.cache_file.read_bytes()
        try:
            cache = parse_cache(data.decode("utf-8"), str(self.cache_file))
        except (CacheFormatError, UnicodeDecodeError) as exc:
            logger.warning("ignoring unreadable cache %s: %s", self.cache_file, exc)
            return None
        if cache.algorithm != self.get_algorithm():
            logger.info(
                "cache %s was written by %s, this calibrator is %s: recalibrating",
                self.cache_file, cache.algorithm, self.get_algorithm(),
            )
            return None
        return data

    def write_calibration_cache(self, cache: bytes) -> None:
        if self.cache_file is not None:
            write_bytes(self.cache_file, bytes(cache))

    def reset(self) -> None:
        """Start serving batches from the first sample again."""
        self._batches = None
        self.batch = None

    # ---- extras --------------------------------------------------------------
    @property
    def valid_samples(self) -> int:
        """Real (unpadded) samples in the batch last returned."""
        return self.batch.n if self.batch is not None else 0

    @property
    def skipped(self) -> list[str]:
        return self.loader.skipped


def _is_samples(data) -> bool:
    return isinstance(data, (list, tuple)) and bool(data) and all(isinstance(s, Sample) for s in data)


class EntropyCalibrator2(Calibrator):
    """TensorRT's default: KL-divergence thresholds (EntropyCalibration2)."""

    method = "entropy2"


class MinMaxCalibrator(Calibrator):
    """max |x| thresholds (MinMaxCalibration); suits transformers such as BERT."""

    method = "minmax"


@dataclass
class CalibrationResult:
    amax: dict[str, float]
    method: str
    algorithm: str
    statistics: Statistics | None = None
    from_cache: bool = False
    samples: int = 0
    seconds: float = 0.0
    skipped: list[str] = field(default_factory=list)
    quantization: object = None  # evaluate.mixed.MixedPrecision when an accuracy budget was given


def _unpad(activations: dict[str, np.ndarray], n: int, padded: int) -> dict[str, np.ndarray]:
    if n == padded:
        return activations
    return {k: (v[:n] if v.ndim and v.shape[0] == padded else v) for k, v in activations.items()}


def collect_statistics(calibrator: Calibrator, runner: ActivationRunner, meta: dict | None = None) -> Statistics:
    """Pull every batch from ``calibrator``, run it, and histogram the activations."""
    names = [i.name for i in runner.inputs]
    collector = StatsCollector()
    bar = progress_bar(len(calibrator.loader.samples), "collecting", "img")
    try:
        while (arrays := calibrator.get_batch(names)) is not None:
            n = calibrator.valid_samples
            activations = runner.run(dict(zip(names, arrays)))
            collector.collect(_unpad(activations, n, arrays[0].shape[0]), samples=n)
            bar.update(len(calibrator.batch.samples))
    finally:
        bar.close()
    if collector.samples == 0:
        raise Int8CalibError("no calibration sample could be loaded")
    return collector.result(meta)


def run_calibrator(
    calibrator: Calibrator,
    runner: ActivationRunner,
    trt_version: int = DEFAULT_TRT_VERSION,
    meta: dict | None = None,
    **method_params,
) -> CalibrationResult:
    """Drive ``calibrator`` the way TensorRT's builder does, with ONNX Runtime as the network."""
    start = time.perf_counter()
    cached = calibrator.read_calibration_cache()
    if cached is not None:
        cache = parse_cache(cached.decode("utf-8"), str(calibrator.cache_file))
        logger.info("using calibration cache %s (%d tensors); no data read", calibrator.cache_file, len(cache.scales))
        return CalibrationResult(cache.amax, calibrator.method, cache.algorithm, from_cache=True)
    stats = collect_statistics(calibrator, runner, meta)
    amax = compute_ranges(calibrator.method, stats, **method_params)
    calibrator.write_calibration_cache(format_cache(amax, calibrator.get_algorithm(), trt_version).encode())
    return CalibrationResult(
        amax, calibrator.method, calibrator.get_algorithm(), stats, False, stats.meta.get("samples", 0),
        time.perf_counter() - start, list(calibrator.skipped),
    )
