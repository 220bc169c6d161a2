"""Tiny generated models, images and a CLI runner for the trust tests (stale caches, bad input)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper
from PIL import Image

REPO = Path(__file__).resolve().parents[1]
SIZE = 8  # images and model input are 8 x 8


def make_model(path: Path, seed: int = 0, input_shape=("N", 3, SIZE, SIZE), elem=TensorProto.FLOAT, zero_branch=False) -> Path:
    """input -> Conv(3->4, 3x3) -> Relu -> GlobalAveragePool -> Flatten -> logits (+ an all-zero tensor)."""
    rng = np.random.default_rng(seed)
    w = numpy_helper.from_array(rng.normal(size=(4, 3, 3, 3)).astype(np.float32), "w")
    nodes = [
        helper.make_node("Conv", ["input", "w"], ["conv"], pads=[1, 1, 1, 1]),
        helper.make_node("Relu", ["conv"], ["relu"]),
        helper.make_node("GlobalAveragePool", ["relu"], ["pool"]),
        helper.make_node("Flatten", ["pool"], ["logits"]),
    ]
    inits = [w]
    outputs = [helper.make_tensor_value_info("logits", TensorProto.FLOAT, ["N", 4])]
    if zero_branch:
        inits.append(numpy_helper.from_array(np.zeros((1,), np.float32), "zero"))
        nodes.append(helper.make_node("Mul", ["logits", "zero"], ["zeros"]))
        outputs.append(helper.make_tensor_value_info("zeros", TensorProto.FLOAT, ["N", 4]))
    graph = helper.make_graph(nodes, "tiny", [helper.make_tensor_value_info("input", elem, list(input_shape))], outputs, inits)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    onnx.save(model, str(path))
    return path


def make_images(folder: Path, count: int = 6, seed: int = 0, size: int = 12) -> list[Path]:
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    paths = []
    for i in range(count):
        p = folder / f"img{i}.png"
        Image.fromarray(rng.integers(0, 256, (size, size, 3), dtype=np.uint8), "RGB").save(p)
        paths.append(p)
    return paths


def write_spec(path: Path, **overrides) -> Path:
    spec = {"resize": SIZE, "crop": SIZE, "mean": [127.0] * 3, "std": [128.0] * 3, **overrides}
    path.write_text(json.dumps(spec))
    return path


def write_list(path: Path, entries, encoding="utf-8") -> Path:
    text = "\n".join(str(e) for e in entries) + "\n"
    path.write_bytes(text.encode(encoding) if isinstance(text, str) else text)
    return path


def run_cli(*args, cwd: Path | None = None, timeout: float = 120) -> subprocess.CompletedProcess:
    """``python -m int8calib ARGS`` in a fresh process: the real exit code and stderr."""
    env = {"PYTHONPATH": str(REPO / "src"), "PATH": "/usr/bin:/bin", "NUMBA_CACHE_DIR": "/tmp/numba-cache-trust"}
    return subprocess.run(
        [sys.executable, "-m", "int8calib", *map(str, args)], capture_output=True, text=True, cwd=cwd, env=env,
        timeout=timeout,
    )


def snapshot(folder: Path) -> dict[str, bytes]:
    """Every file under ``folder`` (names and bytes), to check that nothing appeared or changed."""
    return {str(p.relative_to(folder)): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


def with_external_data(model_path: Path, location: str, data_name: str = "ext.bin") -> Path:
    """Save ``model_path`` beside it as ext.onnx with its weights in ``data_name``, then point the
    external-data entries at ``location`` (which may be outside the folder: the safety tests)."""
    folder = model_path.parent
    model = onnx.load(str(model_path))
    onnx.save(model, str(folder / "ext.onnx"), save_as_external_data=True, all_tensors_to_one_file=True,
              location=data_name, size_threshold=0)
    model = onnx.load(str(folder / "ext.onnx"), load_external_data=False)
    for t in model.graph.initializer:
        for e in t.external_data:
            if e.key == "location":
                e.value = location
    onnx.save(model, str(folder / "ext.onnx"))
    return folder / "ext.onnx"
