"""Provenance: what produced an output, and whether an existing output is still valid.

A provenance record names the four things that decide a calibration result, plus
the tool version::

    {"format": "int8calib-provenance/1", "tool": "int8calib 0.1.0",
     "model_sha256": ..., "method": "entropy2", "params": {...}, "algorithm": ...,
     "preprocess": {...} | null, "data_sha256": ..., "samples": 500}

Caches and ranges files get it in a sidecar ``<file>.json`` that also records the
SHA-256 of the file it describes (``output_sha256``). The output is renamed into
place first and the sidecar second; a process killed between the two renames leaves
a pair whose ``output_sha256`` does not match, which is reported as stale, never
trusted. The statistics file keeps the record in its own ``meta``; a Q/DQ model can
keep :func:`provenance_dict` in ``metadata_props`` (see :func:`metadata_props`).
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

from .. import __version__
from ..util.atomic import write_bytes, write_text
from ..util.log import logger

FORMAT = "int8calib-provenance/1"
METADATA_KEY = "int8calib.provenance"  # the key in an ONNX model's metadata_props

# The four kinds of change, by the record fields that reveal each one.
KINDS = {
    "model": ("model_sha256",),
    "method": ("method", "params", "algorithm"),
    "preprocessing": ("preprocess",),
    "data": ("data_sha256",),
    "batch size or order": ("batching",),  # only methods that follow TensorRT's order record it
}


def provenance_dict(
    model_sha256: str | None,
    method: str | None,
    params: dict | None,
    preprocess: dict | None,
    data_sha256: str | None,
    algorithm: str | None = None,
    samples: int | None = None,
    batching: str | None = None,
) -> dict:
    """The provenance record of an output (JSON-serialisable).

    ``params`` should hold every method parameter with defaults filled in, so that
    spelling out a default does not count as a change. ``batching`` (batch size and the
    samples' order) is recorded for methods whose result depends on it (entropy2).
    """
    record = {
        "format": FORMAT,
        "tool": f"int8calib {__version__}",
        "model_sha256": model_sha256,
        "method": method,
        "params": dict(sorted((params or {}).items())),
        "algorithm": algorithm,
        "preprocess": preprocess,
        "data_sha256": data_sha256,
    }
    if batching is not None:
        record["batching"] = batching
    if samples is not None:
        record["samples"] = int(samples)
    return record


def metadata_props(record: dict) -> dict[str, str]:
    """``{key: value}`` strings for ``onnx.helper.set_model_props`` on a Q/DQ model."""
    return {METADATA_KEY: json.dumps(record, sort_keys=True)}


def model_record(model) -> dict | None:
    """The provenance an ONNX model carries in its metadata (None: none; unreadable JSON is reported as such)."""
    for prop in model.metadata_props:
        if prop.key == METADATA_KEY:
            try:
                return json.loads(prop.value)
            except json.JSONDecodeError:
                return {"unreadable": prop.value[:80]}
    return None


def sha256_bytes(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def sidecar_path(path: str | Path) -> Path:
    path = Path(path)
    return path.with_name(path.name + ".json")


def write_with_sidecar(path: str | Path, data: bytes, record: dict | None) -> None:
    """Write ``data`` to ``path`` atomically, then its sidecar (when ``record`` is given)."""
    write_bytes(path, data)
    if record is not None:
        sidecar = {**record, "output": Path(path).name, "output_sha256": sha256_bytes(data)}
        write_text(sidecar_path(path), json.dumps(sidecar, indent=2, sort_keys=True) + "\n")


def read_sidecar(path: str | Path) -> dict | None:
    """The sidecar record of ``path``, or None when there is none or it is unreadable."""
    side = sidecar_path(path)
    if not side.is_file():
        return None
    try:
        record = json.loads(side.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        logger.warning("ignoring unreadable provenance file %s (%s)", side, exc)
        return None
    if not isinstance(record, dict) or record.get("format") != FORMAT:
        logger.warning("ignoring %s: not an int8calib provenance file", side)
        return None
    return record


def _short(value) -> str:
    if isinstance(value, str) and len(value) == 64:
        return value[:12]  # a sha256
    return json.dumps(value, sort_keys=True)


def _describe(kind: str, old: dict, new: dict) -> str:
    if kind == "preprocessing":
        a, b = old.get("preprocess") or {}, new.get("preprocess") or {}
        if not a or not b:  # image data on one side, tensor files on the other
            return f"preprocessing changed ({_short(old.get('preprocess'))} -> {_short(new.get('preprocess'))})"
        keys = sorted(k for k in set(a) | set(b) if a.get(k) != b.get(k))
        detail = ", ".join(f"{k} {_short(a.get(k))} -> {_short(b.get(k))}" for k in keys)
        return f"preprocessing changed ({detail})"
    fields = [f for f in KINDS[kind] if old.get(f) != new.get(f)]
    detail = ", ".join(f"{f} {_short(old.get(f))} -> {_short(new.get(f))}" for f in fields)
    return f"{kind} changed ({detail})"


def changes(recorded: dict, current: dict) -> list[str]:
    """One line per kind of change (model, method, preprocessing, data); empty when none.

    Fields that ``current`` does not know (None) are not compared.
    """
    out = []
    for kind, fields in KINDS.items():
        if any(current.get(f) is not None and recorded.get(f) != current.get(f) for f in fields):
            out.append(_describe(kind, recorded, current))
    return out


def check_output(path: str | Path, data: bytes, current: dict) -> tuple[bool | None, list[str]]:
    """Is the output ``path`` (content ``data``) what ``current`` would produce?

    Returns (True, []) when its sidecar matches, (False, reasons) when it is stale,
    and (None, []) when there is no sidecar to tell.
    """
    recorded = read_sidecar(path)
    if recorded is None:
        return None, []
    if recorded.get("output_sha256") != sha256_bytes(data):
        return False, [f"{sidecar_path(path).name} describes another version of the file (interrupted write or edited by hand)"]
    reasons = changes(recorded, current)
    return (not reasons), reasons
