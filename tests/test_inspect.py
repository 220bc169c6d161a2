"""``int8calib inspect``: caches, statistics files and Q/DQ models, with and without a model."""

from __future__ import annotations

import json

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

from int8calib.cli import main
from int8calib.cachefiles.inspect import inspect
from int8calib.writers.provenance import metadata_props
from trust_helpers import make_images, make_model, write_spec


@pytest.fixture
def ws(tmp_path, capsys):
    make_model(tmp_path / "m.onnx")
    make_images(tmp_path / "imgs", 4)
    write_spec(tmp_path / "spec.json")
    code = main(["calibrate", str(tmp_path / "m.onnx"), "--data", str(tmp_path / "imgs"), "--preprocess",
                 str(tmp_path / "spec.json"), "--cache", str(tmp_path / "c.txt"), "--histograms", str(tmp_path / "h.npz")])
    assert code == 0, capsys.readouterr().err
    capsys.readouterr()
    return tmp_path


def test_cache_summary(tmp_path, capsys):
    (tmp_path / "c.txt").write_text("TRT-10003-MinMaxCalibration\ninput: 3c010204\n(Unnamed Layer* 1) [Shuffle]_output: 3f800000\n")
    assert main(["inspect", str(tmp_path / "c.txt")]) == 0
    out = capsys.readouterr().out
    assert "header: TRT-10003-MinMaxCalibration" in out and "TensorRT version: 10.0.3" in out
    assert "tensors: 2" in out and "origin unknown" in out
    # 0x3c010204 = 2^-7 * (1 + 0x010204 / 2^23) = 0.00787402, the float32 nearest 1/127: amax 1
    row = next(line.split() for line in out.splitlines() if line.strip().startswith("input "))
    assert row == ["input", "0.00787402", "1"]
    assert "(Unnamed Layer* 1) [Shuffle]_output" in out


def test_cache_with_model_and_sidecar(ws, capsys):
    text = (ws / "c.txt").read_text().replace("relu:", "renamed:")
    (ws / "c2.txt").write_text(text)
    result = inspect(ws / "c2.txt", ws / "m.onnx")
    assert result.comparison["missing"] == ["relu"] and result.comparison["extra"] == ["renamed"]
    assert result.comparison["matched"] == 4
    assert inspect(ws / "c.txt").summary["sidecar"] == "c.txt.json matches this file"
    assert main(["inspect", str(ws / "c.txt"), "--json", "--model", str(ws / "m.onnx")]) == 0
    data = json.loads(capsys.readouterr().out)
    assert data["kind"] == "cache" and data["provenance"]["method"] == "entropy2"
    assert data["comparison"]["missing"] == [] and len(data["tensors"]) == 5
    first = data["tensors"][0]
    assert first["tensor"] == "input" and first["amax"] == pytest.approx(first["scale"] * 127)


def test_statistics_summary(ws, capsys):
    assert main(["inspect", str(ws / "h.npz")]) == 0
    out = capsys.readouterr().out
    assert "statistics" in out and "tensors: 5" in out and "samples: 4" in out
    result = inspect(ws / "h.npz")
    rows = {r[0]: r for r in result.rows}
    assert rows["input"][1] == 4 * 3 * 8 * 8  # every input value counted
    assert rows["relu"][2] >= 0.0  # ReLU min
    assert result.provenance["data_sha256"] == json.loads((ws / "c.txt.json").read_text())["data_sha256"]


def _qdq_model(path):
    x = helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 4])
    y = helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 4])
    inits = [
        numpy_helper.from_array(np.array(0.5, np.float32), "x_scale"),
        numpy_helper.from_array(np.array(0, np.int8), "zp"),
        numpy_helper.from_array(np.array([0.1, 0.2, 0.3, 0.4], np.float32), "w_scale"),
        numpy_helper.from_array(np.ones((4, 4), np.float32), "w"),
    ]
    nodes = [
        helper.make_node("QuantizeLinear", ["x", "x_scale", "zp"], ["xq"]),
        helper.make_node("DequantizeLinear", ["xq", "x_scale", "zp"], ["xd"]),
        helper.make_node("QuantizeLinear", ["w", "w_scale"], ["wq"], axis=0),
        helper.make_node("DequantizeLinear", ["wq", "w_scale"], ["wd"], axis=0),
        helper.make_node("MatMul", ["xd", "wd"], ["y"]),
    ]
    model = helper.make_model(helper.make_graph(nodes, "q", [x], [y], inits), opset_imports=[helper.make_opsetid("", 17)])
    helper.set_model_props(model, metadata_props({"method": "entropy2"}))
    onnx.save(model, str(path))
    return path


def test_qdq_model_summary(tmp_path, capsys):
    result = inspect(_qdq_model(tmp_path / "q.onnx"))
    assert result.summary["Q/DQ pairs"] == 2 and result.summary["QuantizeLinear"] == 2
    assert result.rows == [("x", 1, 0.5, 63.5), ("w", 4, pytest.approx(0.4), pytest.approx(50.8))]
    assert result.provenance == {"method": "entropy2"}
    assert main(["inspect", str(tmp_path / "q.onnx")]) == 0
    assert "Q/DQ pairs: 2" in capsys.readouterr().out


@pytest.mark.parametrize("name, content, words", [
    ("missing.txt", None, "not found"),
    ("bad.npz", b"not a zip", "bad.npz"),
    ("bad.onnx", b"\x00garbage", "bad.onnx"),
])
def test_inspect_bad_files(tmp_path, capsys, name, content, words):
    if content is not None:
        (tmp_path / name).write_bytes(content)
    assert main(["inspect", str(tmp_path / name)]) == 2
    err = capsys.readouterr().err
    assert words in err and "Traceback" not in err and err.count("\n") == 1
