"""TensorRT's calibration cache ("calibration table"): read and write.

Format (TensorRT 8.x-10.x, implicit quantization)::

    TRT-8601-EntropyCalibration2
    input: 3c010204
    (Unnamed Layer* 46) [Constant]_output: 3f800000

One line per tensor: the name exactly as in the network, ``: ``, and the scale
(amax / 127) as the big-endian IEEE-754 float32 in hex. TensorRT writes the hex
without zero padding (``0``), so the reader accepts 1-8 digits.

A tensor that was zero on every calibration sample has amax 0, and a scale of 0
(or a subnormal one) is not something TensorRT can divide by. Such tensors are
written with :data:`ZERO_TENSOR_SCALE` = 2^-14, the smallest normal float16: the
scale and its reciprocal (16384) are normal, finite numbers in FP32 and FP16, and a
zero tensor still quantizes to exactly 0. A warning names those tensors.
"""

from __future__ import annotations

import math
import re
import struct
from dataclasses import dataclass, field
from pathlib import Path
from typing import Collection

from ..errors import CacheFormatError
from ..util.log import logger

ALGORITHMS = ("EntropyCalibration2", "EntropyCalibration", "MinMaxCalibration", "LegacyCalibration")
DEFAULT_TRT_VERSION = 8601
_HEADER = re.compile(r"^TRT-(\d+)-([A-Za-z0-9]+)$")
_HEX = re.compile(r"^[0-9a-fA-F]{1,8}$")
ZERO_TENSOR_SCALE = 2.0**-14  # smallest normal float16; see the module docstring
_MIN_NORMAL_F32 = 2.0**-126


def safe_scale(amax: float) -> float:
    """amax / 127, or :data:`ZERO_TENSOR_SCALE` when that would be 0 or subnormal."""
    scale = amax / 127.0
    return scale if scale >= _MIN_NORMAL_F32 else ZERO_TENSOR_SCALE


def safe_amax(amax: float) -> float:
    """amax with the same floor as :func:`safe_scale` (for ranges and Q/DQ scales)."""
    return amax if amax / 127.0 >= _MIN_NORMAL_F32 else ZERO_TENSOR_SCALE * 127.0


def warn_zero_tensors(amax: dict[str, float]) -> None:
    zero = [name for name, a in amax.items() if a / 127.0 < _MIN_NORMAL_F32]
    if zero:
        shown = ", ".join(f"'{n}'" for n in zero[:5]) + (f" and {len(zero) - 5} more" if len(zero) > 5 else "")
        logger.warning("%d tensor(s) were zero on all calibration data (%s): written with scale 2^-14", len(zero), shown)


def scale_to_hex(scale: float) -> str:
    return struct.pack(">f", scale).hex()


def hex_to_scale(text: str) -> float:
    return struct.unpack(">f", int(text, 16).to_bytes(4, "big"))[0]


@dataclass
class CalibrationCache:
    """A parsed cache: TensorRT version number, algorithm, and {tensor: scale}."""

    version: int
    algorithm: str
    scales: dict[str, float] = field(default_factory=dict)

    @property
    def amax(self) -> dict[str, float]:
        return {name: s * 127.0 for name, s in self.scales.items()}


def format_cache(
    amax: dict[str, float], algorithm: str, trt_version: int = DEFAULT_TRT_VERSION, constants: Collection[str] = ()
) -> str:
    """The cache text for {tensor: amax}. amax must be finite and >= 0.

    ``constants`` names the lines of the model's constants under TensorRT 10's names
    (:mod:`int8calib.stats.constants`): written under a 10.x header only, as TensorRT 8.x
    numbers its constant layers instead (``int8calib complete-cache`` writes those)."""
    if algorithm not in ALGORITHMS:
        raise ValueError(f"unknown TensorRT calibration algorithm {algorithm!r}; one of {ALGORITHMS}")
    lines = [f"TRT-{int(trt_version)}-{algorithm}"]
    unnamed = set(constants) if not names_constants(trt_version) else set()
    for name, a in amax.items():
        if name in unnamed:
            continue
        if not math.isfinite(a) or a < 0:
            raise ValueError(f"tensor '{name}': amax {a} is not finite and non-negative")
        if "\n" in name or "\r" in name:
            raise ValueError(f"tensor name {name!r} contains a line break and cannot be written to a cache")
        lines.append(f"{name}: {scale_to_hex(safe_scale(a))}")
    return "\n".join(lines) + "\n"


def names_constants(trt_version: int) -> bool:
    """Whether TensorRT of this header names its constant layers after the ONNX constants (10.x, ``<name>_output``)."""
    return int(trt_version) >= 100000


def write_cache(
    path: str | Path,
    amax: dict[str, float],
    algorithm: str,
    trt_version: int = DEFAULT_TRT_VERSION,
    provenance: dict | None = None,
    constants: Collection[str] = (),
) -> None:
    """Write the cache atomically, plus its provenance sidecar ``<path>.json`` when given; ``constants``: see :func:`format_cache`."""
    from .provenance import write_with_sidecar

    text = format_cache(amax, algorithm, trt_version, constants)
    write_with_sidecar(path, text.encode("utf-8"), provenance)


def parse_cache(text: str, source: str = "calibration cache") -> CalibrationCache:
    """Parse cache text; errors name the source and line number."""
    # Split on "\n" only, as TensorRT reads lines: str.splitlines() would also split
    # inside names holding \x0b, \x1c, \u2028 and other characters TensorRT keeps.
    lines = [line[:-1] if line.endswith("\r") else line for line in text.split("\n")]
    if lines and lines[-1] == "":
        lines.pop()
    if not lines or not lines[0].strip():
        raise CacheFormatError(f"{source}:1: empty calibration cache (expected a 'TRT-<version>-<algorithm>' header)")
    m = _HEADER.match(lines[0].strip())
    if not m:
        raise CacheFormatError(f"{source}:1: bad header {lines[0][:80]!r} (expected 'TRT-<version>-<algorithm>')")
    cache = CalibrationCache(int(m.group(1)), m.group(2))
    for number, line in enumerate(lines[1:], start=2):
        if not line.strip():
            continue
        name, sep, value = line.rpartition(":")
        value = value.strip()
        if not sep or not name:
            raise CacheFormatError(f"{source}:{number}: expected '<tensor>: <hex scale>', got {line[:80]!r}")
        if not _HEX.match(value):
            raise CacheFormatError(f"{source}:{number}: bad hex scale {value[:20]!r} for tensor '{name}'")
        if name in cache.scales:
            raise CacheFormatError(f"{source}:{number}: duplicate tensor '{name}'")
        cache.scales[name] = hex_to_scale(value)
    return cache


def read_cache(path: str | Path) -> CalibrationCache:
    path = Path(path)
    try:
        data = path.read_bytes()
    except FileNotFoundError:
        raise CacheFormatError(f"{path}: calibration cache not found") from None
    except OSError as exc:
        raise CacheFormatError(f"{path}: cannot read calibration cache ({exc.strerror})") from None
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise CacheFormatError(f"{path}: not a text calibration cache (byte {exc.start} is not UTF-8)") from None
    return parse_cache(text, str(path))
