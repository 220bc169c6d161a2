"""Engine builds at fp32 / fp16 / int8 / best, the way each TensorRT version wants them.

* TensorRT < 10.1, int8 or best: the ONNX model as it is, INT8 (and FP16) builder flags
  with precision constraints preferred, and an int8calib calibrator attached (implicit
  quantization; the calibrator reads ``--cache`` when it is valid).
* TensorRT >= 10.1 (deprecated calibrators) and 11 (removed them), int8 or best: int8calib
  computes the ranges with ONNX Runtime (or reads them from ``--cache``) and writes the Q/DQ
  model ``calibrate --qdq`` writes: INT8 where Q/DQ is, FP16 (``high_precision``) elsewhere,
  FP32 only where its ranges need it (:mod:`int8calib.writers.precision`); TensorRT builds it
  strongly typed, so the graph's types are the engine's and no precision flag is set.
* fp32 / fp16: no calibration.

The engine's layer precisions are summarised from TensorRT's engine inspector.
"""

from __future__ import annotations

import json
import tempfile
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Mapping

from ..errors import Int8CalibError
from ..util.atomic import write_bytes
from ..util.log import logger
from . import _trt
from .calibrators import SPECS, get_class
from .profiles import check_shapes, inference_profile, is_dynamic, network_inputs, sample_shapes

PRECISIONS = ("fp32", "fp16", "int8", "best")
_CLASS_FOR_METHOD = {spec.method: name for name, spec in SPECS.items()}


@dataclass
class BuildResult:
    engine: Path
    precision: str
    route: str  # "float", "calibrator" (implicit quantization) or "qdq" (explicit)
    tensorrt_version: str
    layer_precisions: dict[str, int] = field(default_factory=dict)  # empty when TensorRT cannot say
    calibration: str = ""  # how the ranges were obtained


def build_engine(
    model: "str | Path",
    output: "str | Path",
    precision: str = "fp32",
    *,
    data=None,
    cache: "str | Path | None" = None,
    preprocess=None,
    method: str = "entropy2",
    batch_size: int = 32,
    shuffle: int | None = None,
    skip_bad_images: bool = False,
    shapes: Mapping[str, tuple[int, ...]] | None = None,
    explicit: bool | None = None,
    workspace_gib: float | None = None,
    backend=None,
    trt=None,
    high_precision: str = "fp16",
    **method_params,
) -> BuildResult:
    """Build ``model`` into a serialized TensorRT engine at ``output``.

    ``explicit`` forces the Q/DQ route (True) or the calibrator route (False); by
    default it follows the TensorRT version. ``shapes`` gives input shapes for a
    dynamic-shape model when no data is given (with data, they come from the data).
    """
    if precision not in PRECISIONS:
        raise Int8CalibError(f"--precision must be one of {', '.join(PRECISIONS)}, got {precision!r}")
    trt = trt or _trt.import_tensorrt("int8calib build")
    quantize = precision in ("int8", "best")
    if quantize and data is None and cache is None:
        raise Int8CalibError(f"--precision {precision} needs --cache FILE or --data to calibrate on")
    route = "float"
    if quantize:
        route = "qdq" if (explicit if explicit is not None else _trt.prefers_explicit(trt)) else "calibrator"
        if route == "calibrator" and not _trt.has_calibrators(trt):
            raise Int8CalibError(f"TensorRT {trt.__version__} has no calibrators (removed in 11.0); drop --implicit")
        if route == "calibrator" and method not in _CLASS_FOR_METHOD:
            raise Int8CalibError(
                f"method '{method}' is computed by int8calib, not TensorRT: use --explicit (Q/DQ model), "
                f"or one of {', '.join(_CLASS_FOR_METHOD)} with a calibrator"
            )

    trt_logger = trt.Logger(trt.Logger.WARNING)
    builder = trt.Builder(trt_logger)
    _warn_slow_precision(builder, precision)

    model = Path(model)
    strongly_typed = route == "qdq"
    calibration = ""
    with tempfile.TemporaryDirectory(prefix="int8calib-build-") as folder:
        parsed = model
        if route == "qdq":
            parsed = Path(folder) / (model.stem + ".qdq.onnx")  # external data, if any, beside it
            calibration = _write_qdq_model(model, parsed, data, cache, preprocess, method, batch_size, shuffle,
                                           skip_bad_images, high_precision, **method_params)
        network, parser = _trt.parse_onnx(trt, builder, trt_logger, parsed.read_bytes(), parsed, strongly_typed)  # noqa: F841 (parser owns the weights)

    config = builder.create_builder_config()
    if hasattr(trt, "ProfilingVerbosity"):
        config.profiling_verbosity = trt.ProfilingVerbosity.DETAILED  # per-layer precisions in the inspector
    if workspace_gib is not None:
        config.set_memory_pool_limit(trt.MemoryPoolType.WORKSPACE, int(workspace_gib * (1 << 30)))
    if not strongly_typed:
        for name in _builder_flags(precision, route):
            flag = _flag(trt, name)
            if flag is None:
                raise Int8CalibError(f"TensorRT {trt.__version__} has no {name} builder flag for --precision {precision}")
            config.set_flag(flag)

    calibrator = None
    if route == "calibrator":
        calibrator = get_class(_CLASS_FOR_METHOD[method], trt)(
            data, model, preprocess=preprocess, batch_size=batch_size, cache_file=cache,
            shuffle=shuffle, skip_bad_images=skip_bad_images, backend=backend,
        )
        calibrator.attach(config, builder, network)
        if calibrator.host is not None and calibrator.read_calibration_cache() is None:
            calibrator.backend  # noqa: B018 - fail now, not inside TensorRT, when no copy backend works
        calibration = f"TensorRT {SPECS[_CLASS_FOR_METHOD[method]].algorithm} calibrator"
    if is_dynamic(network):
        shapes = _input_shapes(network, calibrator, shapes, model, data, preprocess, batch_size)
        config.add_optimization_profile(inference_profile(builder, network, shapes))

    logger.info("building %s engine (%s) with TensorRT %s", precision, route, trt.__version__)
    serialized = builder.build_serialized_network(network, config)
    if calibrator is not None and calibrator.error is not None:
        raise Int8CalibError(f"calibration failed, no engine written: {calibrator.error}")
    if serialized is None:
        raise Int8CalibError("TensorRT could not build the engine (its messages above say why)")
    if calibrator is not None:
        calibration += " from the cache" if calibrator.cache_used else f" on {calibrator.samples_served} samples"
    write_bytes(output, bytes(memoryview(serialized)))
    result = BuildResult(Path(output), precision, route, str(trt.__version__), calibration=calibration)
    result.layer_precisions = layer_precisions(trt, trt_logger, serialized)
    _report(result)
    return result


def _flag(trt, name: str):
    return getattr(trt.BuilderFlag, name, None)


def _builder_flags(precision: str, route: str) -> list[str]:
    flags = []
    if precision in ("fp16", "best"):
        flags.append("FP16")
    if precision in ("int8", "best"):
        flags.append("INT8")
    if route == "calibrator":
        # Prefer (not obey) the calibrated INT8: TensorRT may still pick a faster float kernel.
        flags.append("PREFER_PRECISION_CONSTRAINTS")
    return flags


def _warn_slow_precision(builder, precision: str) -> None:
    """Say loudly when the GPU has no fast INT8 / FP16, so a float engine is no surprise."""
    checks = []
    if precision in ("int8", "best"):
        checks.append(("INT8", "platform_has_fast_int8"))
    if precision in ("fp16", "best"):
        checks.append(("FP16", "platform_has_fast_fp16"))
    for name, attribute in checks:
        if getattr(builder, attribute, True) is False:
            logger.warning(
                "WARNING: THIS GPU HAS NO FAST %s. TensorRT will run most layers in FP32 and the engine will be "
                "no faster than --precision fp32. Build on the GPU the engine is meant for.", name,
            )


def _write_qdq_model(model, path, data, cache, preprocess, method, batch_size, shuffle, skip_bad_images, high_precision,
                     **method_params) -> str:
    """Write the Q/DQ model to ``path``, from the data (reusing a valid cache) or the cache alone;
    returns how its ranges were obtained."""
    from ..api import calibrate
    from ..cachefiles.to_qdq import quantize_from_cache
    from ..writers.precision import PrecisionOptions

    if data is None:
        imported = quantize_from_cache(model, cache, path, lowering=PrecisionOptions(high_precision))
        return f"{imported.source.header or 'ranges'} from {cache}"
    result = calibrate(
        model=model, data=data, preprocess=preprocess, method=method, batch_size=batch_size, cache=cache,
        shuffle=shuffle, skip_bad_images=skip_bad_images, qdq=path, high_precision=high_precision, **method_params,
    )
    how = "from the cache" if result.from_cache else f"on {result.samples} samples"
    return f"int8calib {method} ranges {how}"


def _input_shapes(network, calibrator, shapes, model, data, preprocess, batch_size) -> dict[str, tuple[int, ...]]:
    if calibrator is not None and calibrator.host is not None:
        found = calibrator.batch_shapes()
    elif shapes:
        found = {k: tuple(v) for k, v in shapes.items()}
    elif data is not None:
        from ..calibrator import Calibrator
        from ..runner.model import load_model, model_inputs

        host = Calibrator(data, model_inputs(load_model(model, load_external_data=False)), preprocess, batch_size)
        found = {name: (host.get_batch_size(), *shape) for name, shape in sample_shapes(host).items()}
    else:
        dynamic = {k: list(v) for k, v in network_inputs(network).items() if -1 in v}
        raise Int8CalibError(f"the model has dynamic inputs {dynamic}: give --shapes NAME:1x3x224x224 or --data")
    check_shapes(network, found)
    return found


def parse_shapes(text: str) -> dict[str, tuple[int, ...]]:
    """``"input:8x3x224x224,mask:8x128"`` -> {name: shape}."""
    out = {}
    for item in filter(None, (p.strip() for p in text.split(","))):
        name, sep, dims = item.rpartition(":")
        try:
            shape = tuple(int(d) for d in dims.lower().split("x"))
        except ValueError:
            shape = ()
        if not sep or not name or not shape or min(shape) < 1:
            raise Int8CalibError(f"--shapes: expected NAME:DxDx..., got {item!r}")
        out[name] = shape
    return out


def precision_of(layer: Mapping) -> str:
    """A layer's precision from the inspector's JSON: its first input's data type (else its output's)."""
    tensors = [*layer.get("Inputs", ()), *layer.get("Outputs", ())]
    for tensor in tensors:
        text = str(tensor.get("Format/Datatype", "")).lower() if isinstance(tensor, Mapping) else ""
        for token, name in (("int8", "INT8"), ("fp8", "FP8"), ("bf16", "BF16"), ("fp16", "FP16"), ("half", "FP16"),
                            ("fp32", "FP32"), ("float", "FP32"), ("int32", "INT32"), ("int64", "INT64"), ("bool", "BOOL")):
            if token in text:
                return name
    return "unknown"


def summarize_layers(info_json: str) -> dict[str, int]:
    """{precision: layer count} from ``IEngineInspector.get_engine_information(JSON)``."""
    try:
        layers = json.loads(info_json).get("Layers", [])
    except (ValueError, AttributeError):
        return {}
    counts = Counter(precision_of(layer) for layer in layers if isinstance(layer, Mapping))
    return dict(counts.most_common())


def layer_precisions(trt, trt_logger, serialized) -> dict[str, int]:
    """Per-precision layer counts of the built engine; {} when TensorRT has no engine inspector."""
    try:
        engine = trt.Runtime(trt_logger).deserialize_cuda_engine(serialized)
        inspector = engine.create_engine_inspector()
        return summarize_layers(inspector.get_engine_information(trt.LayerInformationFormat.JSON))
    except AttributeError:  # TensorRT < 8.2 has no IEngineInspector
        return {}


def _report(result: BuildResult) -> None:
    logger.info("wrote %s (%s, %s%s)", result.engine, result.precision, result.route,
                f"; {result.calibration}" if result.calibration else "")
    if result.layer_precisions:
        total = sum(result.layer_precisions.values())
        parts = ", ".join(f"{name} {count}" for name, count in result.layer_precisions.items())
        logger.info("engine layers by precision (%d): %s", total, parts)
    if result.precision in ("int8", "best") and not result.layer_precisions.get("INT8"):
        if result.layer_precisions:
            logger.warning("WARNING: no layer of the engine runs in INT8")
