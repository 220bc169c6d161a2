"""Ranges written elsewhere, read as float32 scales and matched to a model's tensors.

Three kinds of file, told by the name: ``.json`` is a dynamic-range file ({tensor: amax}),
``.onnx`` a Q/DQ model (its per-tensor activation scales), anything else a calibration
cache (TensorRT 7.x-10.x or int8calib, any ``TRT-<version>-<algorithm>`` header). A
cache's scales are kept as the float32 values the file holds, so a Q/DQ model written
from them carries the same bits.

TensorRT names cache lines after the network it built, not always after the ONNX model:

* ``<initializer>_output`` (10.x) for constants; ``(Unnamed Layer* N) [Constant]_output``
  (8.4-8.6) and ``ONNXTRT_Broadcast_N_output`` for constants its ONNX parser made;
* ``(Unnamed Layer* N) [LayerType]_output`` for other layers it created;
* ``<tensor> output to be reformatted N`` / ``<tensor> output reformatter N`` for
  reformat copies, which hold the same values as ``<tensor>``.

:func:`match_names` matches exact names, takes a reformat copy for its tensor only when
the tensor has no line of its own and every copy agrees, and lists every other line
with the reason it names no tensor of the model. Nothing is matched by position or guess.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterable, Mapping

from ..errors import CacheFormatError, Int8CalibError

REFORMAT = re.compile(r"^(?P<base>.+?) (?:output to be reformatted|output reformatter) \d+$")
UNNAMED = re.compile(r"^\(Unnamed Layer\* \d+\) \[(?P<type>[^\]]+)\]_output$")
BROADCAST = re.compile(r"^ONNXTRT_Broadcast(_\d+)?_output$")
_MIN_NORMAL_F32 = 2.0**-126


@dataclass
class RangeFile:
    """The float32 scale of every tensor a file names (amax = 127 x scale)."""

    path: Path
    kind: str  # "cache", "ranges" or "qdq-model"
    scales: dict[str, float] = field(default_factory=dict)
    header: str | None = None  # a cache's first line
    per_channel: list[str] = field(default_factory=list)  # Q/DQ tensors with one scale per channel (not compared)

    @property
    def amax(self) -> dict[str, float]:
        return {name: s * 127.0 for name, s in self.scales.items()}


def read_range_file(path: "str | Path") -> RangeFile:
    """Read a cache, a ranges JSON or a Q/DQ model; bad files raise a one-line error naming them."""
    path = Path(path)
    if path.is_dir():
        raise Int8CalibError(f"{path}: a directory, not a calibration cache, ranges JSON or Q/DQ model")
    suffix = path.suffix.lower()
    if suffix == ".json":
        from ..writers.ranges import read_ranges

        return RangeFile(path, "ranges", {n: _f32(a / 127.0) for n, a in read_ranges(path).items()})
    if suffix == ".onnx":
        return _qdq_scales(path)
    return _cache_scales(path)


def _f32(x: float) -> float:
    import numpy as np

    return float(np.float32(x))


def _cache_scales(path: Path) -> RangeFile:
    from ..writers.cache import read_cache, scale_to_hex

    cache = read_cache(path)  # header, hex, duplicates, UTF-8: errors name the line
    text = path.read_bytes()
    if not text.endswith(b"\n"):
        last = text.rsplit(b"\n", 1)[-1].decode("utf-8", "replace")
        raise CacheFormatError(f"{path}: the last line {last[:60]!r} has no line end: the file looks truncated")
    for name, s in cache.scales.items():
        bad = math.isnan(s) or s < 0 or math.copysign(1.0, s) < 0 or 0 < s < _MIN_NORMAL_F32
        if bad:
            raise CacheFormatError(
                f"{path}: tensor '{name}': scale {scale_to_hex(s)} is negative, NaN or subnormal: the file is corrupt or truncated"
            )
    return RangeFile(path, "cache", dict(cache.scales), f"TRT-{cache.version}-{cache.algorithm}")


def _qdq_scales(path: Path) -> RangeFile:
    import numpy as np
    from onnx import numpy_helper

    from ..runner.model import load_model

    graph = load_model(path).graph
    consts = {t.name: t for t in graph.initializer}
    for node in graph.node:
        if node.op_type == "Constant" and node.attribute and node.attribute[0].HasField("t"):
            consts[node.output[0]] = node.attribute[0].t
    from ..writers.precision import cast_source

    out = RangeFile(path, "qdq-model")
    producer = {o: n for n in graph.node for o in n.output}
    for q in (n for n in graph.node if n.op_type == "QuantizeLinear"):
        if len(q.input) < 2 or q.input[1] not in consts:
            continue
        scale = numpy_helper.to_array(consts[q.input[1]]).astype(np.float32)
        tensor = cast_source(q.input[0], producer)  # an INT8 + FP16 model quantizes a cast of a float32 input
        if scale.size == 1:
            out.scales[tensor] = float(scale.reshape(()))
        else:
            out.per_channel.append(tensor)
    if not out.scales and not out.per_channel:
        raise Int8CalibError(f"{path}: no QuantizeLinear with a constant scale: not a Q/DQ model")
    return out


@dataclass
class RangeMatch:
    """How a file's lines map onto a model's tensors."""

    scales: dict[str, float] = field(default_factory=dict)  # model tensor -> scale
    copies: dict[str, str] = field(default_factory=dict)  # reformat-copy line -> the tensor it gave or confirmed
    constants: list[str] = field(default_factory=list)  # lines naming a constant of the model
    unmatched: dict[str, str] = field(default_factory=dict)  # line -> why it names no tensor
    conflicts: list[str] = field(default_factory=list)  # copies that disagree, one message each


def match_names(scales: Mapping[str, float], tensors: Iterable[str], constants: Iterable[str] = ()) -> RangeMatch:
    """Match a file's lines to ``tensors`` (the model's activations) and ``constants`` (its initializers)."""
    tensors, constants = set(tensors), set(constants)
    out = RangeMatch()
    copies: dict[str, dict[str, float]] = {}
    for name, s in scales.items():
        m = REFORMAT.match(name)
        if name in tensors:
            out.scales[name] = s
        elif m and m.group("base") in tensors:
            copies.setdefault(m.group("base"), {})[name] = s
        elif name.endswith("_output") and name[: -len("_output")] in constants:
            out.constants.append(name)
        else:
            out.unmatched[name] = _why_unmatched(name, m)
    for base, found in copies.items():
        values = set(found.values())
        own = out.scales.get(base)
        if own is None and len(values) == 1:
            out.scales[base] = values.pop()
            out.copies.update(dict.fromkeys(found, base))
        elif own is not None and values == {own}:
            out.copies.update(dict.fromkeys(found, base))
        else:
            shown = ", ".join(f"'{n}' {v:.6g}" for n, v in found.items())
            if own is None:
                out.conflicts.append(f"reformat copies of '{base}' disagree ({shown}): no range taken for it")
            else:
                out.conflicts.append(f"'{base}' has scale {own:.6g} but its reformat copies {shown}: its own line used")
            out.unmatched.update(dict.fromkeys(found, f"a reformat copy of '{base}' that disagrees with it"))
    return out


def _why_unmatched(name: str, reformat: "re.Match | None") -> str:
    m = UNNAMED.match(name)
    if m and m.group("type") == "Constant" or BROADCAST.match(name):
        return "a constant layer TensorRT made (weights get their scales from their values)"
    if m:
        return f"a {m.group('type')} layer TensorRT created; no tensor of the model has its name"
    if reformat:
        return f"a reformat copy of '{reformat.group('base')}', which the model does not have"
    return "no tensor of that name in the model"


def model_names(model) -> tuple[list[str], set[str]]:
    """(activation tensors in graph order, constant names) of an ONNX model."""
    graph = model.graph
    constants = {i.name for i in graph.initializer}
    constants |= {n.output[0] for n in graph.node if n.op_type == "Constant"}
    tensors = [v.name for v in graph.input if v.name not in constants]
    tensors += [o for n in graph.node if n.op_type != "Constant" for o in n.output if o]
    return list(dict.fromkeys(tensors)), constants


def check_not_stale(path: "str | Path", model: "str | Path") -> None:
    """An int8calib file whose sidecar says it was written for another model, or was edited, is stale."""
    from ..runner.model import model_fingerprint
    from ..writers.provenance import read_sidecar, sha256_bytes, sidecar_path

    path = Path(path)
    record = read_sidecar(path)
    if record is None:  # TensorRT's own caches have none: names are all there is to check
        return
    if record.get("output_sha256") != sha256_bytes(path.read_bytes()):
        raise Int8CalibError(
            f"{path}: stale: {sidecar_path(path).name} describes another version of the file "
            "(edited by hand or an interrupted write); remove the sidecar to use the file as it is"
        )
    recorded, actual = record.get("model_sha256"), model_fingerprint(model)
    if recorded and recorded != actual:
        raise Int8CalibError(
            f"{path}: stale: written for another model (sha256 {recorded[:12]}), {model} is {actual[:12]}"
        )


def describe(path: Path, match: RangeMatch, missing: list[str], total: int) -> list[tuple[str, str]]:
    """(level, line) pairs listing what matched, what did not and what is missing."""
    lines = [("info", f"{path}: {len(match.scales)} of {total} line(s) name a model tensor")]
    lines += [("info", f"  reformat copy '{c}' -> '{t}'") for c, t in match.copies.items()]
    if match.constants:
        lines.append(("info", f"  {len(match.constants)} constant(s) not used: weights get their scales from their values"))
    lines += [("warning", f"  {c}") for c in match.conflicts]
    if match.unmatched:
        lines.append(("warning", f"{len(match.unmatched)} line(s) of {path.name} match no tensor of the model:"))
        lines += [("warning", f"  '{n}': {why}") for n, why in match.unmatched.items()]
    if missing:
        lines.append(("warning", f"{len(missing)} tensor(s) the Q/DQ model needs have no range in {path.name}:"))
        lines += [("warning", f"  '{n}'") for n in missing]
    return lines
