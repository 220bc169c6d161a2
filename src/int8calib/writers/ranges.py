"""Dynamic-range JSON: {tensor: amax}, for users who call ITensor.setDynamicRange(-amax, amax)."""

from __future__ import annotations

import json
import math
from pathlib import Path

from ..errors import Int8CalibError
from .cache import safe_amax
from .provenance import write_with_sidecar


def format_ranges(amax: dict[str, float]) -> str:
    """The JSON text; amax of all-zero tensors is floored like the cache's scales (see cache.py)."""
    for name, a in amax.items():
        if not math.isfinite(a) or a < 0:
            raise ValueError(f"tensor '{name}': amax {a} is not finite and non-negative")
    return json.dumps({k: safe_amax(float(v)) for k, v in amax.items()}, indent=2) + "\n"


def write_ranges(path: str | Path, amax: dict[str, float], provenance: dict | None = None) -> None:
    """Write the ranges atomically, plus the provenance sidecar ``<path>.json`` when given."""
    text = format_ranges(amax)
    write_with_sidecar(path, text.encode("utf-8"), provenance)


def read_ranges(path: str | Path) -> dict[str, float]:
    path = Path(path)
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise Int8CalibError(f"{path}: ranges file not found") from None
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise Int8CalibError(f"{path}: not a ranges JSON file ({exc})") from None
    if not isinstance(data, dict):
        raise Int8CalibError(f"{path}: expected a JSON object {{tensor: amax}}")
    out = {}
    for name, value in data.items():
        if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value) or value < 0:
            raise Int8CalibError(f"{path}: tensor '{name}': amax must be a finite number >= 0, got {value!r}")
        out[name] = float(value)
    return out
