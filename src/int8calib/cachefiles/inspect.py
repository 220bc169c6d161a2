"""``int8calib inspect``: what is in a calibration cache, statistics file or Q/DQ model.

The kind is told by the name: ``.npz`` is a statistics file, ``.onnx`` a Q/DQ model,
anything else a TensorRT calibration cache. With a model, the file's tensors are
compared with the model's calibratable tensors.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from ..errors import Int8CalibError
from ..writers.provenance import model_record, read_sidecar, sha256_bytes, sidecar_path


@dataclass
class Inspection:
    path: Path
    kind: str  # "cache", "statistics" or "qdq-model"
    summary: dict = field(default_factory=dict)  # header facts, in display order
    columns: tuple[str, ...] = ()
    rows: list[tuple] = field(default_factory=list)  # one per tensor
    provenance: dict | None = None
    comparison: dict | None = None  # {"model", "matched", "missing", "extra"}

    def to_dict(self) -> dict:
        return {
            "path": str(self.path), "kind": self.kind, "summary": self.summary,
            "tensors": [dict(zip(self.columns, r)) for r in self.rows],
            "provenance": self.provenance, "comparison": self.comparison,
        }

    def format(self) -> str:
        lines = [f"{self.path}: {self.kind}"]
        lines += [f"  {k}: {v}" for k, v in self.summary.items()]
        if self.provenance is not None:
            lines.append("  provenance:")
            lines += [f"    {k}: {json.dumps(v, sort_keys=True)}" for k, v in sorted(self.provenance.items())]
        if self.comparison is not None:
            c = self.comparison
            lines.append(
                f"  model {c['model']}: {c['matched']} tensor(s) match, {len(c['missing'])} missing from the file, "
                f"{len(c['extra'])} not in the model"
            )
            lines += [f"    missing: {n}" for n in c["missing"]] + [f"    not in model: {n}" for n in c["extra"]]
            if "unranged" in c:
                lines.append(f"  {len(c['unranged'])} quantizable tensor(s) without a range (their layers fall back from INT8)"
                             + (":" if c["unranged"] else ""))
                lines += [f"    {u['tensor']}: read by {u['read_by']}; {u['why']}" for u in c["unranged"]]
        if self.rows:
            cells = [self.columns] + [tuple(_cell(v) for v in r) for r in self.rows]
            widths = [max(len(row[i]) for row in cells) for i in range(len(self.columns))]
            for row in cells:
                lines.append("  " + "  ".join(v.ljust(w) if i == 0 else v.rjust(w) for i, (v, w) in enumerate(zip(row, widths))))
        return "\n".join(lines)


def _cell(value) -> str:
    if isinstance(value, float):
        return f"{value:.6g}"
    return str(value)


def inspect(path: str | Path, model: str | Path | None = None) -> Inspection:
    """Summarise ``path`` (cache, statistics .npz or Q/DQ .onnx), compared with ``model`` when given."""
    path = Path(path)
    if not path.is_file():
        raise Int8CalibError(f"{path}: file not found" if not path.exists() else f"{path}: not a file")
    suffix = path.suffix.lower()
    result = _statistics(path) if suffix == ".npz" else _qdq_model(path) if suffix == ".onnx" else _cache(path)
    if model is not None:
        from ..runner.model import calibratable_tensors, load_model
        from .read import BROADCAST, REFORMAT, model_names

        proto = load_model(model, load_external_data=False)
        expected = calibratable_tensors(proto)
        have = [r[0] for r in result.rows]
        have_set, expected_set = set(have), set(expected)
        constants = {f"{c}_output" for c in model_names(proto)[1]}
        made_by_tensorrt = [n for n in have if n.startswith("(Unnamed Layer") or BROADCAST.match(n) or REFORMAT.match(n)]
        result.comparison = {
            "model": str(model),
            "matched": len(have_set & expected_set),
            "missing": [n for n in expected if n not in have_set],
            "extra": [n for n in have if n not in expected_set and n not in constants and n not in made_by_tensorrt],
        }
        if result.kind == "cache":
            from .coverage import unranged_tensors

            scales = {name: scale for name, scale, _ in result.rows}
            version = int(result.summary["header"].split("-")[1])
            unranged = unranged_tensors(proto, scales, version)
            result.comparison["unranged"] = [u.to_dict() for u in unranged]
    return result


def _cache(path: Path) -> Inspection:
    from ..writers.cache import read_cache

    cache = read_cache(path)
    data = path.read_bytes()
    record = read_sidecar(path)
    summary = {
        "header": f"TRT-{cache.version}-{cache.algorithm}",
        "TensorRT version": trt_version(cache.version),
        "algorithm": cache.algorithm,
        "tensors": len(cache.scales),
    }
    if record is None:
        summary["sidecar"] = f"none ({sidecar_path(path).name} missing or unreadable): origin unknown"
    elif record.get("output_sha256") != sha256_bytes(data):
        summary["sidecar"] = f"{sidecar_path(path).name} does not match this file (interrupted write or edit)"
    else:
        summary["sidecar"] = f"{sidecar_path(path).name} matches this file"
    rows = [(name, scale, scale * 127.0) for name, scale in cache.scales.items()]
    return Inspection(path, "cache", summary, ("tensor", "scale", "amax"), rows, record)


def trt_version(number: int) -> str:
    """The version a cache header's number encodes: TensorRT's NV_TENSORRT_VERSION, which is
    major*1000 + minor*100 + patch up to 9.x (7000 -> 7.0.0, 7103 -> 7.1.3, 8601 -> 8.6.1) and
    major*10000 + minor*100 + patch from 10.0 (100001 -> 10.0.1, 101303 -> 10.13.3)."""
    major, rest = divmod(number, 10000) if number >= 100000 else divmod(number, 1000)
    minor, patch = divmod(rest, 100)
    return f"{major}.{minor}.{patch}"


def _statistics(path: Path) -> Inspection:
    from ..stats import load

    stats = load(path)
    meta = dict(stats.meta)
    summary = {
        "tensors": len(stats),
        "samples": meta.get("samples", "?"),
        "mantissa bits": stats.mantissa_bits,
        "model": meta.get("model", "?"),
    }
    rows = [(name, h.total, h.min if h.total else 0.0, h.max if h.total else 0.0, h.amax) for name, h in stats.tensors.items()]
    return Inspection(path, "statistics", summary, ("tensor", "values", "min", "max", "amax"), rows, meta)


def _bias_correction(record: dict | None) -> str:
    """What the provenance says about bias correction (models written before it say nothing)."""
    done = (record or {}).get("bias_correction", "unknown")
    if done == "unknown":
        return "unknown (no int8calib record)"
    if not done:
        return "no"
    return f"yes, {done.get('layers', '?')} layer(s), shifts measured on {done.get('samples', '?')} sample(s)"


def _qdq_model(path: Path) -> Inspection:
    import onnx
    from onnx import numpy_helper

    from ..runner.model import load_model
    from ..writers.precision import cast_source, describe_precision, model_precision

    model = load_model(path, load_external_data=True)
    graph = model.graph
    consts = {t.name: numpy_helper.to_array(t) for t in graph.initializer}
    for node in graph.node:
        if node.op_type == "Constant" and node.attribute and node.attribute[0].HasField("t"):
            consts[node.output[0]] = numpy_helper.to_array(node.attribute[0].t)
    consumers: dict[str, list[onnx.NodeProto]] = {}
    for node in graph.node:
        for name in node.input:
            consumers.setdefault(name, []).append(node)
    producer = {o: n for n in graph.node for o in n.output}
    qs = [n for n in graph.node if n.op_type == "QuantizeLinear"]
    dqs = [n for n in graph.node if n.op_type == "DequantizeLinear"]
    pairs = sum(1 for q in qs if any(c.op_type == "DequantizeLinear" for c in consumers.get(q.output[0], [])))
    rows = []
    for q in qs:
        scale = consts.get(q.input[1]) if len(q.input) > 1 else None
        if scale is None:
            rows.append((cast_source(q.input[0], producer), "?", "?", "?"))
            continue
        scale = np.asarray(scale, np.float64)
        rows.append((cast_source(q.input[0], producer), scale.size, float(scale.max()), float(scale.max()) * 127.0))
    record = model_record(model)
    summary = {
        "QuantizeLinear": len(qs), "DequantizeLinear": len(dqs), "Q/DQ pairs": pairs,
        "quantized tensors": len({r[0] for r in rows}),
        "biases corrected": _bias_correction(record),
        "float computation": describe_precision(model_precision(model, record)),
    }
    return Inspection(path, "qdq-model", summary, ("tensor", "scales", "max scale", "amax"), rows, record)
