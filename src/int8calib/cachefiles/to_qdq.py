"""From a calibration cache to a Q/DQ model: the route from TensorRT 8.x/10.x to 11.

TensorRT 11 builds INT8 only from Q/DQ models. :func:`quantize_from_cache` takes the
ranges of a calibration cache (written by TensorRT 7-10 or by int8calib) or of a
dynamic-range JSON and writes the Q/DQ model ``calibrate --qdq`` would write from data:
the same placement rules (:mod:`int8calib.writers.qdq`) and float typing
(:mod:`int8calib.writers.precision`), and every activation scale equal to the cache's
float32 bit for bit with ``--high-precision fp32`` (rounded to float16 with the default). :func:`evaluate_cache` measures a cache
against the float model without writing anything.

Tensors the Q/DQ model needs and the file lacks are listed, and ``missing`` decides:
``fail`` (default), ``float`` (their layers stay in float) or ``calibrate`` (only they
are calibrated from ``data``).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import TYPE_CHECKING, Sequence

from ..errors import Int8CalibError
from ..util.log import logger
from .read import RangeFile, RangeMatch, check_not_stale, describe, match_names, model_names, read_range_file

if TYPE_CHECKING:
    import onnx

    from ..evaluate import Evaluation
    from ..writers.precision import PrecisionOptions, PrecisionSummary
    from ..writers.qdq import QdqSummary

MISSING = ("fail", "float", "calibrate")


@dataclass
class CacheImport:
    """What :func:`quantize_from_cache` read, matched and wrote."""

    source: RangeFile
    match: RangeMatch
    needed: list[str]  # tensors the Q/DQ model quantizes when every range is there
    missing: list[str]  # needed tensors without a usable range in the file
    calibrated: dict[str, float] = field(default_factory=dict)  # amax computed from data (missing="calibrate")
    model: "onnx.ModelProto | None" = None
    summary: "QdqSummary | None" = None
    precision: "PrecisionSummary | None" = None


def needed_tensors(model: "onnx.ModelProto", exclude_nodes: str | None = None, exclude_op_types: Sequence[str] = ()) -> list[str]:
    """The activations the Q/DQ writer quantizes when every one has a range: its own placement, not a copy of it."""
    from ..writers.qdq import activation_tensors, build_qdq

    _, summary = build_qdq(model, dict.fromkeys(activation_tensors(model), 1.0), exclude_nodes, exclude_op_types)
    return summary.activations


def quantize_from_cache(
    model: "str | Path",
    ranges_file: "str | Path",
    qdq: "str | Path | None" = None,
    missing: str = "fail",
    data=None,
    preprocess=None,
    method: str = "entropy2",
    batch_size: int = 32,
    exclude_nodes: str | None = None,
    exclude_op_types: Sequence[str] = (),
    providers: Sequence[str] | None = None,
    lowering: "PrecisionOptions | None" = None,
    **method_params,
) -> CacheImport:
    """The Q/DQ model of ``model`` with the ranges of ``ranges_file`` (a cache or ranges JSON), written to ``qdq`` when given.

    ``lowering`` types its float computation (default: float16, :mod:`int8calib.writers.precision`);
    its FP16 rules read the file's ranges (a cache holds every tensor TensorRT calibrated), so the
    scales are rounded to float16 too: ``--high-precision fp32`` keeps them bit for bit."""
    from ..passes import quantized_model
    from ..runner.model import load_model, uses_external_data
    from ..writers.precision import PrecisionOptions
    from ..writers.qdq import write_model

    if missing not in MISSING:
        raise Int8CalibError(f"--missing-ranges must be one of {', '.join(MISSING)}, got {missing!r}")
    if (missing == "calibrate") != (data is not None):
        raise Int8CalibError("--missing-ranges calibrate needs --data, and --data with --from-cache is used only by it")
    if qdq is not None and not Path(qdq).resolve().parent.is_dir():
        raise Int8CalibError(f"{qdq}: the folder to write it in does not exist")
    source = read_range_file(ranges_file)
    if source.kind == "qdq-model":
        raise Int8CalibError(f"{ranges_file}: already a Q/DQ model; --from-cache takes a calibration cache or ranges JSON")
    check_not_stale(ranges_file, model)
    proto = load_model(model, load_external_data=False)
    tensors, constants = model_names(proto)
    match = match_names(source.scales, tensors, constants)
    if not match.scales:
        first = next(iter(source.scales), None)
        raise Int8CalibError(
            f"{ranges_file}: none of its {len(source.scales)} line(s) names a tensor of {model}"
            + (f" (first: '{first}')" if first else "") + ": a cache for another model?"
        )
    usable = {t: s for t, s in match.scales.items() if math.isfinite(s)}
    needed = needed_tensors(proto, exclude_nodes, exclude_op_types)
    result = CacheImport(source, match, needed, [t for t in needed if t not in usable])
    for level, line in describe(source.path, match, result.missing, len(source.scales)):
        getattr(logger, level)("%s", line)
    for t in result.missing:
        if t in match.scales:
            logger.warning("  '%s': the file's scale is infinite (the tensor held inf or -inf in TensorRT's calibration)", t)
    if result.missing and missing == "fail":
        shown = ", ".join(f"'{t}'" for t in result.missing[:3]) + (f" and {len(result.missing) - 3} more" if len(result.missing) > 3 else "")
        raise Int8CalibError(
            f"{len(result.missing)} tensor(s) need a range that {Path(ranges_file).name} lacks ({shown}); "
            "--missing-ranges float keeps their layers in float, calibrate computes them from --data"
        )
    if result.missing and missing == "calibrate":
        from ..api import calibrate

        logger.info("calibrating the %d missing tensor(s) on --data with %s", len(result.missing), method)
        run = calibrate(model, data, preprocess, method, batch_size, tensors=result.missing, providers=providers, **method_params)
        result.calibrated = {t: run.amax[t] for t in result.missing if t in run.amax}
    amax = {t: s * 127.0 for t, s in usable.items()} | result.calibrated
    lowering = lowering or PrecisionOptions()
    lowering = replace(lowering, ranges={t: s * 127.0 for t, s in match.scales.items()} | result.calibrated | lowering.ranges)
    built = quantized_model(proto, amax, exclude_nodes, exclude_op_types, scales=usable, precision=lowering)
    result.model, result.summary, result.precision = built.model, built.qdq, built.precision
    result.summary.log()
    result.precision.log()
    if qdq is not None:
        write_model(qdq, result.model, external_data=uses_external_data(proto))
        logger.info("wrote the int8 model %s with the scales of %s", qdq, ranges_file)
    return result


def evaluate_cache(fp32: "str | Path", ranges_file: "str | Path", data, *args, missing: str = "fail", **options) -> "Evaluation":
    """``evaluate`` of the Q/DQ model :func:`quantize_from_cache` would write, built in memory;
    the other arguments are :func:`int8calib.evaluate.evaluate`'s."""
    from ..evaluate import evaluate

    if missing == "calibrate":
        raise Int8CalibError("evaluate takes --missing-ranges fail or float (calibrating needs calibration data)")
    imported = quantize_from_cache(fp32, ranges_file, None, missing)
    return evaluate(fp32, imported.model, data, *args, **options)
