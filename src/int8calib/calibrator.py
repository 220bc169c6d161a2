"""The calibrator object: TensorRT's IInt8Calibrator protocol in plain Python.

TensorRT drives a calibrator like this, and :func:`run_calibrator` follows the same steps::

    cache = calibrator.read_calibration_cache()
    if cache is valid (its provenance sidecar matches): use it, touch no data
    else:
        while (batch := calibrator.get_batch(input_names)) is not None:
            run the network on batch, histogram every activation
        compute thresholds with calibrator.get_algorithm()
        calibrator.write_calibration_cache(cache)

Here the batches are host numpy arrays and the "network" is ONNX Runtime: the pass over
them is :mod:`int8calib.collection`, which reads the calibrator's loader (the batches
``get_batch`` serves) directly. The TensorRT adapter (``int8calib.tensorrt``) reuses
these classes and copies batches to the GPU instead.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Callable, Iterator, Mapping, Sequence

import numpy as np

from .batching import Batch, BatchLoader, FeedDictLoader
from .collection import gather_statistics
from .errors import CacheFormatError, Int8CalibError
from .methods import compute_ranges, get as get_method
from .preprocess import Preprocess
from .result import CalibrationResult
from .runner import ActivationRunner, RunnerSpec
from .runner.model import InputInfo, calibratable_tensors, load_model, model_fingerprint
from .sources import FeedDictSource, Sample, resolve
from .stats.histogram import CONSTANTS_META
from .util.log import logger
from .writers.cache import DEFAULT_TRT_VERSION, CalibrationCache, format_cache, parse_cache, warn_zero_tensors
from .writers.provenance import check_output, provenance_dict, write_with_sidecar

REUSE_MODES = ("auto", "strict", "never")


class StaleCacheError(Int8CalibError):
    """--reuse-cache=strict and the existing cache does not match the current inputs."""


class Calibrator:
    """Serves calibration batches and the cache, like an ``IInt8Calibrator`` subclass.

    ``data`` is anything :func:`int8calib.sources.resolve` takes, a list of samples, or
    feed dicts: a :class:`~int8calib.sources.FeedDictSource`, a function returning them, or a list of them;
    ``inputs`` the model's inputs (:func:`int8calib.runner.model_inputs`).

    ``reuse_cache`` decides what happens to an existing ``cache_file``: ``auto`` reuses
    it when valid and recomputes when stale, ``strict`` raises :class:`StaleCacheError`
    instead of recomputing, ``never`` always recomputes. Validity is judged from the
    provenance sidecar ``<cache>.json`` (model, method, preprocessing, data); a cache
    without one is checked against ``model``'s tensor names and the method's algorithm.
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
        reuse_cache: str = "auto",
        model: "str | Path | None" = None,
        method_params: dict | None = None,
    ):
        if reuse_cache not in REUSE_MODES:
            raise Int8CalibError(f"--reuse-cache must be one of {', '.join(REUSE_MODES)}, got {reuse_cache!r}")
        if method is not None:
            self.method = method
        unknown = set(method_params or {}) - set(get_method(self.method).params)  # also fails on an unknown name
        if unknown:
            raise Int8CalibError(f"method '{self.method}' takes no parameter(s) {sorted(unknown)}")
        self.inputs = list(inputs)
        if isinstance(data, (list, tuple)) and data and all(isinstance(d, Mapping) for d in data):
            feeds = list(data)
            data = FeedDictSource(lambda: feeds, "feed dicts")
        elif callable(data) and not isinstance(data, FeedDictSource):
            data = FeedDictSource(data)
        if isinstance(data, FeedDictSource):
            if preprocess is not None:
                raise Int8CalibError(f"{data.origin} yields model inputs: a preprocessing spec does not apply to it")
            self.loader: BatchLoader | FeedDictLoader = FeedDictLoader(data, self.inputs, batch_size)
        else:
            samples = data if is_sample_list(data) else resolve(data, {i.name: i.layout for i in self.inputs}, shuffle)
            pre = Preprocess.load(preprocess) if preprocess is not None else None
            self.loader = BatchLoader(samples, self.inputs, pre, batch_size, skip_bad_images)
        self.cache_file = Path(cache_file) if cache_file is not None else None
        self.reuse_cache = reuse_cache
        self.model = Path(model) if model is not None else None
        self.method_params = dict(method_params or {})
        self._provenance: dict | None = None
        self._batches: Iterator[Batch] | None = None
        self.batch: Batch | None = None  # the batch last returned by get_batch

    # ---- the IInt8Calibrator methods ---------------------------------------
    def get_batch_size(self) -> int:
        return self.loader.batch_size

    def get_algorithm(self) -> str:
        """The TensorRT algorithm name written in the cache header."""
        return get_method(self.method).algorithm

    def start_loading(self) -> None:
        """Start decoding the first batches in the background (``get_batch`` does it otherwise)."""
        if self._batches is None:
            self._batches = iter(self.loader)

    def get_batch(self, names: Sequence[str]) -> list[np.ndarray] | None:
        """The next batch as arrays in the order of ``names``; None when the data is exhausted."""
        self.start_loading()
        self.batch = next(self._batches, None)
        if self.batch is None:
            return None
        try:
            return [self.batch.feeds[name] for name in names]
        except KeyError as exc:
            raise Int8CalibError(f"the engine asked for input {exc.args[0]!r}, which the data does not feed") from None

    def read_calibration_cache(self) -> bytes | None:
        """The cache's bytes when it exists and is valid for this calibration, else None.

        Reads no calibration data (the data files are hashed, not decoded) and runs nothing.
        """
        if self.cache_file is None or self.reuse_cache == "never" or not self.cache_file.is_file():
            return None
        try:
            data = self.cache_file.read_bytes()
            cache = parse_cache(data.decode("utf-8"), str(self.cache_file))
        except (CacheFormatError, UnicodeDecodeError, OSError) as exc:
            return self._stale([f"it cannot be read ({exc})"])
        valid, reasons = check_output(self.cache_file, data, self.provenance())
        if valid is None:
            reasons = self._check_foreign(cache)
            if reasons:
                return self._stale(reasons)
            logger.warning(
                "reusing calibration cache %s (%d tensors): it has no provenance sidecar, so only its tensor "
                "names and algorithm were checked, not the data or preprocessing (--reuse-cache=never recomputes)",
                self.cache_file, len(cache.scales),
            )
            return data
        if not valid:
            return self._stale(reasons)
        logger.info("reusing calibration cache %s (%d tensors): model, method, preprocessing and data unchanged; no data read",
                    self.cache_file, len(cache.scales))
        return data

    def write_calibration_cache(self, cache: bytes) -> None:
        """Write the cache atomically, then its provenance sidecar."""
        if self.cache_file is not None:
            write_with_sidecar(self.cache_file, bytes(cache), self.provenance())

    def reset(self) -> None:
        """Start serving batches from the first sample again."""
        self._batches = None
        self.batch = None

    # ---- provenance ----------------------------------------------------------
    def provenance(self) -> dict:
        """What this calibration depends on: model, method, preprocessing and data hashes."""
        if self._provenance is None:
            m = get_method(self.method)
            pre = self.loader.preprocess
            self._provenance = provenance_dict(
                model_fingerprint(self.model) if self.model is not None else None,
                self.method,
                {**m.params, **self.method_params},
                pre.to_dict() if pre is not None else None,
                self.loader.fingerprint(),
                m.algorithm,
                batching=self.loader.batching() if m.ordered else None,
            )
        return self._provenance

    def _stale(self, reasons: list[str]) -> None:
        message = f"{self.cache_file}: calibration cache is stale: " + "; ".join(reasons)
        if self.reuse_cache == "strict":
            raise StaleCacheError(message + " (--reuse-cache=strict; use auto to recompute)")
        logger.warning("%s; recalibrating and replacing it", message)
        return None

    def _check_foreign(self, cache: CalibrationCache) -> list[str]:
        """Mismatches between a cache of unknown origin and this model and method, by name."""
        reasons = []
        if cache.algorithm != self.get_algorithm():
            reasons.append(f"its algorithm is {cache.algorithm}, method '{self.method}' writes {self.get_algorithm()}")
        if self.model is not None:
            from .cachefiles.read import BROADCAST, REFORMAT, model_names

            proto = load_model(self.model, load_external_data=False)
            expected = calibratable_tensors(proto)
            # TensorRT also lists the layers it made (unnamed ones, broadcasts, reformat copies) and,
            # from 10.x, the model's constants as <constant>_output: none of them is a missing activation.
            constants = {f"{c}_output" for c in model_names(proto)[1]}
            present = {n for n in cache.scales if not (n.startswith("(Unnamed Layer") or BROADCAST.match(n)
                                                       or REFORMAT.match(n) or n in constants)}
            known = set(expected)
            missing = [n for n in expected if n not in cache.scales]
            extra = [n for n in present if n not in known]
            if missing:
                reasons.append(f"no scale for model tensor(s) {_names(missing)}")
            if extra:
                reasons.append(f"tensor(s) {_names(extra)} are not in the model")
        return reasons

    # ---- extras --------------------------------------------------------------
    @property
    def valid_samples(self) -> int:
        """Real (unpadded) samples in the batch last returned."""
        return self.batch.n if self.batch is not None else 0

    @property
    def skipped(self) -> list[str]:
        return self.loader.skipped


def _names(names: list[str], shown: int = 5) -> str:
    text = ", ".join(f"'{n}'" for n in names[:shown])
    return text + (f" and {len(names) - shown} more" if len(names) > shown else "")


def is_sample_list(data) -> bool:
    return isinstance(data, (list, tuple)) and bool(data) and all(isinstance(s, Sample) for s in data)


class EntropyCalibrator2(Calibrator):
    """TensorRT's default: KL-divergence thresholds (EntropyCalibration2)."""

    method = "entropy2"


class EntropyCalibrator(Calibrator):
    """TensorRT's legacy entropy calibrator (EntropyCalibration): the same KL search as entropy2."""

    method = "entropy"


class LegacyCalibrator(Calibrator):
    """IInt8LegacyCalibrator: the ``quantile`` of |x|, capped at ``regression_cutoff`` x max |x|.

    The two parameters are TensorRT's; docs/methods.md says how they are read here.
    """

    method = "legacy"

    def __init__(self, *args, quantile: float | None = None, regression_cutoff: float | None = None, **kwargs):
        params = dict(kwargs.pop("method_params", None) or {})
        if quantile is not None:
            params["quantile"] = float(quantile)
        if regression_cutoff is not None:
            params["regression_cutoff"] = float(regression_cutoff)
        super().__init__(*args, method_params=params, **kwargs)

    def get_quantile(self) -> float:
        return float(self.method_params.get("quantile", get_method("legacy").params["quantile"]))

    def get_regression_cutoff(self) -> float:
        return float(self.method_params.get("regression_cutoff", get_method("legacy").params["regression_cutoff"]))


class MinMaxCalibrator(Calibrator):
    """max |x| thresholds (MinMaxCalibration); suits transformers such as BERT."""

    method = "minmax"


def run_calibrator(
    calibrator: Calibrator,
    runner: "ActivationRunner | RunnerSpec | Callable[[], ActivationRunner]",
    trt_version: int = DEFAULT_TRT_VERSION,
    meta: dict | None = None,
    *,
    max_memory: "int | str | None" = None,
    workers: int = 1,
    trt_histograms: bool | None = None,
    **method_params,
) -> CalibrationResult:
    """Drive ``calibrator`` the way TensorRT's builder does, with ONNX Runtime as the network.

    ``trt_histograms`` (default: when the method reads them) keeps TensorRT's histograms in
    the statistics returned, for switching to entropy2 later; given, the bit-pattern
    histograms are kept too (by default only the order-free methods get them).

    ``runner`` may be a function that builds it (a :class:`RunnerSpec` is one), so a
    reused cache never loads the model into ONNX Runtime. ``workers > 1`` collects in
    that many processes, each building its own runner from a :class:`RunnerSpec`.
    """
    start = time.perf_counter()
    cached = calibrator.read_calibration_cache()
    if cached is not None:
        cache = parse_cache(cached.decode("utf-8"), str(calibrator.cache_file))
        if cache.version == int(trt_version):
            return CalibrationResult(cache.amax, calibrator.method, cache.algorithm, from_cache=True)
        # TensorRT 10 names constants (their lines are written under a 10.x header only): the header is part of the cache
        calibrator._stale([f"its header is TRT-{cache.version}, the TensorRT version asked for is {int(trt_version)}"])
    # Collect what the method reads: TensorRT's histograms for the methods that follow
    # TensorRT's order, the bit-pattern ones for the rest; both when asked to keep them.
    ordered = get_method(calibrator.method).ordered
    stats = gather_statistics(
        calibrator.loader, runner, meta, max_memory, workers, [calibrator.method],
        trt_histograms=ordered if trt_histograms is None else trt_histograms,
        bit_histograms=trt_histograms is not None or not ordered,
    )
    if stats.meta.get("samples", 0) == 0:
        raise Int8CalibError("no calibration sample could be loaded")
    amax = compute_ranges(calibrator.method, stats, **{**calibrator.method_params, **method_params})
    warn_zero_tensors(amax)
    constants = stats.meta.get(CONSTANTS_META, ())
    calibrator.write_calibration_cache(format_cache(amax, calibrator.get_algorithm(), trt_version, constants).encode())
    return CalibrationResult(
        amax, calibrator.method, calibrator.get_algorithm(), stats, False, stats.meta.get("samples", 0),
        time.perf_counter() - start, list(calibrator.skipped),
    )
