"""The next step after calibrating: which file builds an INT8 engine on which TensorRT.

* TensorRT 8.x-10.0: the calibration cache (implicit quantization),
  ``trtexec --onnx=model.onnx --int8 --calib=calibration.cache``.
* TensorRT 10.1-10.x: the Q/DQ model in a strongly typed network,
  ``trtexec --onnx=model.qdq.onnx --stronglyTyped``; NVIDIA's explicit-quantization guide
  says precision flags are not needed with strong typing and should not be given.
* TensorRT 11: only the Q/DQ model. Every network is strongly typed, so ``--stronglyTyped``
  is not needed, and ``--int8`` / ``--calib`` are gone (NVIDIA's 10.x to 11.x trtexec
  migration guide).

When the ``tensorrt`` package is installed, only the line for its version is given.
"""

from __future__ import annotations

from pathlib import Path

QDQ_FROM = (10, 1)  # TensorRT 10.1 deprecated implicit quantization; 11.0 removed it


def installed_tensorrt() -> tuple[int, int] | None:
    """(major, minor) of the installed ``tensorrt`` package, read from its metadata without importing it."""
    from importlib import metadata

    for dist in ("tensorrt", "tensorrt-cu12", "tensorrt-cu11", "tensorrt-cu13"):
        try:
            parts = metadata.version(dist).split(".")
            return int(parts[0]), int(parts[1])
        except (metadata.PackageNotFoundError, ValueError, IndexError):
            continue
    return None


def next_steps(
    model: "str | Path | None",
    cache: "str | Path | None" = None,
    qdq: "str | Path | None" = None,
    trt: tuple[int, int] | None = None,
) -> list[str]:
    """One line per TensorRT route the written files serve (only the installed version's, when known)."""
    base = Path(model or qdq or cache or "model")
    engine = base.with_name(base.name.split(".")[0] + ".engine")
    lines = []
    if cache is not None and model is not None and (trt is None or trt < QDQ_FROM):
        lines.append(f"TensorRT 8.x-10.0, the cache: trtexec --onnx={model} --int8 --calib={cache} --saveEngine={engine}")
    if trt is None or trt >= QDQ_FROM:
        if qdq is not None:
            if trt is None or trt < (11, 0):
                lines.append(f"TensorRT 10.1-10.x, the Q/DQ model: trtexec --onnx={qdq} --stronglyTyped --saveEngine={engine}")
            if trt is None or trt >= (11, 0):
                lines.append(f"TensorRT 11, the Q/DQ model (always strongly typed): trtexec --onnx={qdq} --saveEngine={engine}")
        elif cache is not None and model is not None:
            out = Path(model).with_suffix(".qdq.onnx").name
            lines.append(
                f"TensorRT 10.1 and 11 need a Q/DQ model: int8calib calibrate {model} --from-cache {cache} --qdq {out}"
            )
    elif qdq is not None:
        lines.append(f"TensorRT 8.x-10.0, the Q/DQ model: trtexec --onnx={qdq} --int8 --saveEngine={engine}")
    return lines
