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


@pytest.mark.parametrize(
    "number, version",
    # headers of public caches: TensorRT 7.0 (NVIDIA cookbook), 7.1.3 (a Jetson comment), 8.2.4, 8.5.1, 8.6.1,
    # 10.0.1 and 10.6 (cookbook UseINT8-PTQ), 10.13.3 (MPNet); NV_TENSORRT_VERSION changed encoding at 10.0
    [(7000, "7.0.0"), (7103, "7.1.3"), (8204, "8.2.4"), (8501, "8.5.1"), (8601, "8.6.1"), (100001, "10.0.1"),
     (100600, "10.6.0"), (101303, "10.13.3")],
)
def test_tensorrt_version_of_a_header(number, version):
    from int8calib.cachefiles.inspect import trt_version

    assert trt_version(number) == version


def test_tensorrt_10_header_reads_as_10(tmp_path, capsys):
    (tmp_path / "c.cache").write_text("TRT-100600-EntropyCalibration2\ninputT0: 3ebfcfb9\n")
    assert main(["inspect", str(tmp_path / "c.cache")]) == 0
    assert "TensorRT version: 10.6.0" in capsys.readouterr().out


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


def coverage_model(path):
    """x [N,2,3,3] -> Conv -> Flatten -> MatMul W -> Add bias -> Mul 0.5 (a Constant node) -> y."""
    rng = np.random.default_rng(3)
    nodes = [
        helper.make_node("Conv", ["x", "conv.w", "conv.b"], ["conv"], name="/conv/Conv"),
        helper.make_node("Flatten", ["conv"], ["flat"], name="/Flatten"),
        helper.make_node("MatMul", ["flat", "onnx::MatMul_7"], ["mm"], name="/fc/MatMul"),
        helper.make_node("Add", ["mm", "fc.bias"], ["fc"], name="/fc/Add"),
        helper.make_node("Constant", [], ["/Constant_output_0"], value=numpy_helper.from_array(np.array(0.5, np.float32))),
        helper.make_node("Mul", ["fc", "/Constant_output_0"], ["y"], name="/Mul"),
    ]
    inits = [numpy_helper.from_array(rng.standard_normal(shape).astype(np.float32), name)
             for name, shape in [("conv.w", (4, 2, 1, 1)), ("conv.b", (4,)), ("onnx::MatMul_7", (36, 5)), ("fc.bias", (5,))]]
    graph = helper.make_graph(nodes, "cov", [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", 2, 3, 3])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["N", 5])], inits)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    onnx.save(model, path)
    return path


@pytest.mark.parametrize(
    "lines, unranged",
    [
        # TensorRT 10 wrote every line but the Mul's constant: only that one falls out of INT8
        (["x", "conv", "flat", "mm", "fc", "y", "onnx::MatMul_7_output", "fc.bias_output"], ["/Constant_output_0_output"]),
        # the MatMul's input only as a reformat copy (it counts), its weight missing, Mul's constant there
        (["x", "conv", "flat output reformatter 0", "fc", "y", "fc.bias_output", "/Constant_output_0_output"],
         ["onnx::MatMul_7_output"]),
        # no Conv input, no MatMul input: the activations first, then the constants; conv weights need no line
        (["conv", "y"], ["x", "flat", "onnx::MatMul_7_output", "fc.bias_output", "/Constant_output_0_output"]),
    ],
)
def test_inspect_model_lists_quantizable_tensors_without_a_range(tmp_path, lines, unranged):
    model = coverage_model(tmp_path / "m.onnx")
    (tmp_path / "c.cache").write_text("TRT-101303-MinMaxCalibration\n" + "".join(f"{n}: 3c010204\n" for n in lines))
    result = inspect(tmp_path / "c.cache", model)
    assert [u["tensor"] for u in result.comparison["unranged"]] == unranged
    assert all(u["why"] == "no line" for u in result.comparison["unranged"])
    assert result.comparison["extra"] == []  # constant lines and reformat copies are the model's, not extra
    readers = {u["tensor"]: u["read_by"] for u in result.comparison["unranged"]}
    assert readers.get("x", "Conv '/conv/Conv'") == "Conv '/conv/Conv'"
    assert readers.get("onnx::MatMul_7_output", "MatMul '/fc/MatMul'") == "MatMul '/fc/MatMul'"


def test_inspect_model_on_a_tensorrt_8_cache_names_every_constant(tmp_path, capsys):
    """TensorRT 8.x numbers its constant layers: no line can be matched to a constant by name."""
    model = coverage_model(tmp_path / "m.onnx")
    lines = ["x", "conv", "flat", "mm", "fc", "y", "(Unnamed Layer* 3) [Constant]_output", "onnx::MatMul_7_output"]
    (tmp_path / "c.cache").write_text("TRT-8601-EntropyCalibration2\n" + "".join(f"{n}: 3c010204\n" for n in lines))
    assert main(["inspect", str(tmp_path / "c.cache"), "--model", str(model), "--json"]) == 0
    unranged = json.loads(capsys.readouterr().out)["comparison"]["unranged"]
    assert [u["tensor"] for u in unranged] == ["onnx::MatMul_7_output", "fc.bias_output", "/Constant_output_0_output"]
    assert all("(the file has 1 such line(s))" in u["why"] and "complete-cache" in u["why"] for u in unranged)
