"""TensorRT calibrator classes on top of :class:`int8calib.calibrator.Calibrator`.

Each public class subclasses the matching ``tensorrt.IInt8*Calibrator`` and delegates the
data pipeline, preprocessing, batching and the cache checks to a host ``Calibrator``; what
it adds is the GPU side: full batches copied to device memory and returned as pointers.

The classes are made on first use (:func:`get_class`), so ``import int8calib.tensorrt``
never imports TensorRT; without TensorRT, constructing one raises :class:`Int8CalibError`.
"""

from __future__ import annotations

import ctypes
import inspect
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

import numpy as np

from ..calibrator import Calibrator
from ..errors import CacheFormatError, Int8CalibError
from ..methods import get as get_method
from ..runner.model import InputInfo, load_model, model_inputs
from ..util.atomic import write_bytes
from ..util.log import logger
from ..writers.cache import parse_cache
from . import _trt
from .backends import Backend, get_backend


@dataclass(frozen=True)
class Spec:
    base: str  # the tensorrt base class
    method: str  # int8calib's method name (methods registry)
    algorithm: str  # tensorrt.CalibrationAlgoType member


SPECS = {
    "EntropyCalibrator2": Spec("IInt8EntropyCalibrator2", "entropy2", "ENTROPY_CALIBRATION_2"),
    "EntropyCalibrator": Spec("IInt8EntropyCalibrator", "entropy", "ENTROPY_CALIBRATION"),
    "MinMaxCalibrator": Spec("IInt8MinMaxCalibrator", "minmax", "MINMAX_CALIBRATION"),
    "LegacyCalibrator": Spec("IInt8LegacyCalibrator", "legacy", "LEGACY_CALIBRATION"),
}


def full_batch(rows: np.ndarray, n: int, batch_size: int) -> np.ndarray:
    """``rows[:n]`` grown to ``batch_size`` rows by repeating the real rows cyclically.

    TensorRT needs every batch to have the engine's calibration shape and histograms
    every row it is given. Repeated real rows only re-weight a few real samples
    (at most ``batch_size - 1`` duplicates in the whole run); zeros would add a spike
    at 0 to every histogram and drag entropy thresholds down.
    """
    if n < 1:
        raise ValueError("a batch needs at least one real row")
    if n == batch_size and rows.shape[0] == batch_size:
        return rows
    return rows[:n][np.arange(batch_size) % n]


def _resolve_inputs(model, inputs) -> list[InputInfo]:
    if inputs is not None:
        return [i if isinstance(i, InputInfo) else InputInfo(i[0], tuple(i[1]), np.dtype(i[2])) for i in inputs]
    if model is None:
        raise Int8CalibError("a TensorRT calibrator needs model='model.onnx' (or inputs=[...]) to match data to inputs")
    return model_inputs(load_model(model, load_external_data=False))


def _buffer_bytes(obj, length: int | None = None) -> bytes:
    """Bytes from what TensorRT hands a write hook: a buffer, an address, or a PyCapsule."""
    if isinstance(obj, int):
        if length is None:
            raise ValueError("an address needs a length")
        return ctypes.string_at(obj, length)
    if type(obj).__name__ == "PyCapsule":
        api = ctypes.pythonapi
        api.PyCapsule_GetName.restype = ctypes.c_char_p
        api.PyCapsule_GetName.argtypes = [ctypes.py_object]
        api.PyCapsule_GetPointer.restype = ctypes.c_void_p
        api.PyCapsule_GetPointer.argtypes = [ctypes.py_object, ctypes.c_char_p]
        address = api.PyCapsule_GetPointer(obj, api.PyCapsule_GetName(obj))
        return _buffer_bytes(int(address), length)
    data = memoryview(obj).cast("B").tobytes()
    return data if length is None else data[:length]


class TensorRTCalibrator:
    """The calibrator protocol TensorRT calls, served by an int8calib ``Calibrator``.

    ``data``: a calibration list, folder, glob, .npy/.npz (anything ``int8calib calibrate
    --data`` takes); None serves ``cache_file`` alone. ``model`` (or ``inputs``) names the
    inputs to match the data to. ``backend``: "cuda", "cupy", "torch" or an object (see
    :mod:`int8calib.tensorrt.backends`); default: the first installed.
    """

    spec: Spec = SPECS["EntropyCalibrator2"]
    _trt_base = None  # the tensorrt class this one extends (set by get_class)
    _trt = None  # the tensorrt module

    def __init__(
        self,
        data=None,
        model: "str | Path | None" = None,
        *,
        inputs: Sequence[InputInfo] | None = None,
        preprocess=None,
        batch_size: int = 32,
        cache_file: "str | Path | None" = None,
        backend: "str | Backend | None" = None,
        shuffle: int | None = None,
        skip_bad_images: bool = False,
        **calibrator_options,
    ):
        if self._trt_base is not None:
            self._trt_base.__init__(self)  # pybind11 trampolines must be initialised explicitly
        self.cache_file = Path(cache_file) if cache_file is not None else None
        self.host: Calibrator | None = None
        if data is not None:
            options = dict(calibrator_options)
            accepts = inspect.signature(Calibrator.__init__).parameters
            if model is not None and "model" in accepts:
                options["model"] = model  # lets the host fingerprint the model for its cache checks
            if self.method_params() and "method_params" in accepts:
                options["method_params"] = self.method_params()  # part of the cache's fingerprint
            self.host = Calibrator(
                data, _resolve_inputs(model, inputs), preprocess, batch_size, cache_file=cache_file,
                method=self.spec.method, shuffle=shuffle, skip_bad_images=skip_bad_images, **options,
            )
        elif self.cache_file is None:
            raise Int8CalibError(f"{type(self).__name__} needs calibration data, a cache_file, or both")
        else:
            get_method(self.spec.method)
        self._backend_choice = backend
        self._backend: Backend | None = None
        self._device: dict[str, object] = {}
        self._sample_shapes: dict[str, tuple[int, ...]] | None = None
        self.batches_served = 0
        self.samples_served = 0
        self.cache_used = False
        self.error: BaseException | None = None  # why calibration stopped early, if it did

    def method_params(self) -> dict:
        """Parameters of the method that TensorRT applies (the legacy calibrator has two)."""
        return {}

    # ---- IInt8Calibrator -------------------------------------------------------
    def get_batch_size(self) -> int:
        return self.host.get_batch_size() if self.host is not None else 1

    def get_algorithm(self):
        trt = self._trt or _trt.loaded_tensorrt()
        return getattr(trt.CalibrationAlgoType, self.spec.algorithm)

    def get_batch(self, names: Sequence[str]):
        """Device pointers to the next full batch, in the order of ``names``; None when done.

        TensorRT swallows exceptions raised here and ends calibration as if the data
        were exhausted, so an error is logged and kept in ``self.error`` (and the cache
        is then not written) instead of being raised.
        """
        try:
            return self._next_batch(list(names))
        except Exception as exc:  # noqa: BLE001 - must not cross into TensorRT
            self.error = exc
            logger.error("calibration stopped: %s", exc)
            self.free()
            return None

    def read_calibration_cache(self) -> bytes | None:
        data = self.host.read_calibration_cache() if self.host is not None else self._read_cache_alone()
        self.cache_used = data is not None
        if self.cache_used:
            logger.info("TensorRT will use the calibration cache %s (no data is read)", self.cache_file)
        return data

    def write_calibration_cache(self, cache) -> None:
        if self.error is not None:
            if self.cache_file is not None:
                logger.error("not writing %s: calibration stopped early (%s)", self.cache_file, self.error)
            return
        data = _buffer_bytes(cache)
        if self.host is not None:
            self.host.write_calibration_cache(data)
        elif self.cache_file is not None:
            write_bytes(self.cache_file, data)
        if self.cache_file is not None:
            logger.info("wrote calibration cache %s (%d batches, %d samples)", self.cache_file, self.batches_served, self.samples_served)

    # ---- batches on the GPU ----------------------------------------------------
    @property
    def backend(self) -> Backend:
        if self._backend is None:
            self._backend = get_backend(self._backend_choice)
        return self._backend

    def _next_batch(self, names: list[str]) -> list[int] | None:
        if self.host is None:
            raise Int8CalibError(
                f"calibration cache {self.cache_file} is missing, unreadable or stale and no calibration data was given"
            )
        arrays = self.host.get_batch(names)
        if arrays is None:
            self.free()
            if self.batches_served == 0:
                raise Int8CalibError("no calibration sample could be loaded")
            return None
        n, size = self.host.valid_samples, self.get_batch_size()
        pointers = []
        for name, rows in zip(names, arrays):
            self._device[name] = self.backend.upload(full_batch(rows, n, size), self._device.get(name))
            pointers.append(int(self._device[name].ptr))
        self.batches_served += 1
        self.samples_served += n
        return pointers

    def free(self) -> None:
        """Release the device buffers (done when the data runs out)."""
        if self._backend is not None:
            for buffer in self._device.values():
                self._backend.free(buffer)
        self._device.clear()

    def reset(self) -> None:
        """Serve the data again from the start (for a second build)."""
        self.free()
        if self.host is not None:
            self.host.reset()
        self.batches_served = self.samples_served = 0
        self.error = None

    def _read_cache_alone(self) -> bytes | None:
        if not self.cache_file.is_file():
            return None
        data = self.cache_file.read_bytes()
        try:
            cache = parse_cache(data.decode("utf-8"), str(self.cache_file))
        except (CacheFormatError, UnicodeDecodeError) as exc:
            logger.warning("ignoring unreadable cache %s: %s", self.cache_file, exc)
            return None
        algorithm = get_method(self.spec.method).algorithm
        if cache.algorithm != algorithm:
            logger.warning("cache %s was written by %s, this calibrator is %s", self.cache_file, cache.algorithm, algorithm)
            return None
        return data

    # ---- shapes for dynamic-shape networks -------------------------------------
    def sample_shapes(self) -> dict[str, tuple[int, ...]]:
        """{input name: shape of one sample} read from the first sample of the data."""
        if self._sample_shapes is None:
            if self.host is None:
                raise Int8CalibError("calibration shapes come from the data; no data was given")
            from .profiles import sample_shapes

            self._sample_shapes = sample_shapes(self.host)
        return self._sample_shapes

    def batch_shapes(self) -> dict[str, tuple[int, ...]]:
        """{input name: the shape every calibration batch has}: (batch size, *sample shape)."""
        size = self.get_batch_size()
        return {name: (size, *shape) for name, shape in self.sample_shapes().items()}

    def calibration_profile(self, builder):
        """An optimization profile fixed at :meth:`batch_shapes`, for ``config.set_calibration_profile``."""
        from .profiles import fixed_profile

        return fixed_profile(builder, self.batch_shapes())

    def attach(self, config, builder=None, network=None):
        """Set ``config.int8_calibrator = self`` and, with the network, the dynamic ranges a valid cache
        lacks (:meth:`complete`); for a network with dynamic inputs also set (and return) the
        calibration profile built from the data's shape."""
        from .profiles import is_dynamic

        config.int8_calibrator = self
        if network is not None:
            self.complete(network)
        if network is None or not is_dynamic(network):
            return None
        if builder is None:
            raise Int8CalibError("a network with dynamic input shapes needs the builder to make a calibration profile")
        profile = self.calibration_profile(builder)
        if not config.set_calibration_profile(profile):
            raise Int8CalibError(f"TensorRT rejected the calibration profile {self.batch_shapes()}")
        logger.info("calibration profile: %s", ", ".join(f"{k} {list(v)}" for k, v in self.batch_shapes().items()))
        return profile

    def complete(self, network):
        """When TensorRT will read a cache (valid for this calibration), set a dynamic range on each
        tensor of ``network`` the cache has no line for and that is a constant or a copy of a ranged
        tensor (:mod:`int8calib.tensorrt.complete`): a cache written without TensorRT lacks TensorRT's
        names for them, and their layers would fall out of INT8. Returns the completion, or None."""
        from .complete import complete_ranges, set_dynamic_ranges

        cached = self.read_calibration_cache()
        if cached is None:
            return None  # TensorRT calibrates itself: every tensor of its network gets a range
        trt = self._trt or _trt.loaded_tensorrt()
        completion = complete_ranges(trt, network, parse_cache(_buffer_bytes(cached).decode("utf-8")).amax,
                                     self.spec.method, **self.method_params())
        if completion.added:
            set_dynamic_ranges(network, completion.added)
        completion.log()
        return completion


class LegacyMixin:
    """IInt8LegacyCalibrator's extra hooks: quantile, regression cutoff, histogram cache."""

    def __init__(self, *args, quantile: float | None = None, regression_cutoff: float | None = None,
                 histogram_cache_file: "str | Path | None" = None, **kwargs):
        defaults = _legacy_defaults()
        self.quantile = float(defaults["quantile"] if quantile is None else quantile)
        self.regression_cutoff = float(defaults["regression_cutoff"] if regression_cutoff is None else regression_cutoff)
        for name, value in (("quantile", self.quantile), ("regression_cutoff", self.regression_cutoff)):
            if not 0.0 <= value <= 1.0:
                raise Int8CalibError(f"{name} must be between 0 and 1, got {value}")
        self.histogram_cache_file = Path(histogram_cache_file) if histogram_cache_file is not None else None
        super().__init__(*args, **kwargs)  # after the parameters: the host's cache checks use them

    def method_params(self) -> dict:
        return {"quantile": self.quantile, "regression_cutoff": self.regression_cutoff}

    def get_quantile(self) -> float:
        return self.quantile

    def get_regression_cutoff(self) -> float:
        return self.regression_cutoff

    def read_histogram_cache(self, length=None) -> bytes | None:
        if self.histogram_cache_file is None or not self.histogram_cache_file.is_file():
            return None
        return self.histogram_cache_file.read_bytes()

    def write_histogram_cache(self, data, length=None) -> None:
        if self.histogram_cache_file is not None and self.error is None:
            write_bytes(self.histogram_cache_file, _buffer_bytes(data, length))


def _legacy_defaults() -> dict[str, float]:
    """The legacy method's defaults from the methods registry, when it has them."""
    defaults = {"quantile": 0.5, "regression_cutoff": 0.5}
    try:
        defaults.update({k: v for k, v in get_method("legacy").params.items() if k in defaults})
    except Int8CalibError:
        pass
    return defaults


_CLASSES: dict[tuple[int, str], type] = {}


def get_class(name: str, trt=None) -> type:
    """The calibrator class ``name`` extending ``trt``'s base class (default: the installed
    TensorRT). Without TensorRT, a class whose constructor explains what is missing."""
    spec = SPECS[name]
    if trt is None:
        trt = _trt.loaded_tensorrt()
        if trt is None:
            try:
                trt = _trt.import_tensorrt(f"int8calib.tensorrt.{name}")
            except Int8CalibError as exc:
                return _unavailable(name, str(exc))
    key = (id(trt), name)
    if key not in _CLASSES:
        base = getattr(trt, spec.base, None)
        if base is None:
            return _unavailable(
                name,
                f"TensorRT {getattr(trt, '__version__', '?')} has no {spec.base}: calibrators were removed in 11.0. "
                "Build from a Q/DQ model instead: int8calib build MODEL.onnx --precision int8 ...",
            )
        bases = (LegacyMixin, TensorRTCalibrator, base) if name == "LegacyCalibrator" else (TensorRTCalibrator, base)
        doc = f"{spec.base} fed by int8calib (method {spec.method!r}); see TensorRTCalibrator."
        cls = type(name, bases, {"spec": spec, "_trt_base": base, "_trt": trt, "__doc__": doc, "__module__": "int8calib.tensorrt"})
        _CLASSES[key] = cls
    return _CLASSES[key]


def _unavailable(name: str, reason: str) -> type:
    def __init__(self, *args, **kwargs):
        raise Int8CalibError(reason)

    return type(name, (), {"__init__": __init__, "__doc__": reason, "__module__": "int8calib.tensorrt", "available": False})
