"""Evaluation metrics against hand-computed values, labels parsing, and the evaluate command."""

from __future__ import annotations

import json
import math

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

from int8calib.cli import main
from int8calib.errors import Int8CalibError
from int8calib.evaluate import OutputComparison, compare_models, quantized_tensors, read_labels, sqnr_db
from int8calib.writers.qdq import build_qdq


def test_output_metrics_by_hand():
    ref = np.array([[5, 4, 3, 2, 1, 0], [0, 1, 2, 3, 4, 5]], np.float32)
    test = np.array([[4, 5, 3, 2, 1, 0], [0, 1, 2, 3, 4, 5]], np.float32)
    c = OutputComparison()
    c.add(ref, test, np.array([1, 5]))
    d = c.to_dict()
    assert d["n"] == 2
    assert d["top1_agreement"] == 50.0  # row 0 flips 0 -> 1
    assert d["top5_overlap"] == 100.0  # same top-5 sets
    # signal = 2 * (25+16+9+4+1) = 110, noise = 1 + 1 = 2
    assert d["sqnr_db"] == pytest.approx(10 * math.log10(110 / 2), abs=1e-4)
    assert d["max_abs_error"] == 1.0
    assert d["fp32_top1"] == 50.0 and d["int8_top1"] == 100.0  # labels 1 and 5
    assert d["fp32_top5"] == 100.0 and d["int8_top5"] == 100.0


def test_top5_overlap_and_batches_add_up():
    ref = np.arange(8, dtype=np.float32)[None].repeat(2, 0)  # top-5: 7 6 5 4 3
    test = ref.copy()
    test[0, [3, 2]] = 100, 99  # top-5 of row 0: 3 2 7 6 5 -> {7 6 5 3} shared: 4/5
    whole, split = OutputComparison(), OutputComparison()
    whole.add(ref, test)
    split.add(ref[:1], test[:1])
    split.add(ref[1:], test[1:])
    assert whole.to_dict() == split.to_dict()
    assert whole.to_dict()["top5_overlap"] == pytest.approx(100 * (4 / 5 + 1) / 2)
    assert whole.to_dict()["top1_agreement"] == 50.0
    assert whole.to_dict()["fp32_top1"] is None  # no labels


def test_sqnr_edge_cases():
    assert sqnr_db(100.0, 1.0) == pytest.approx(20.0)
    assert sqnr_db(1.0, 0.0) == math.inf
    c = OutputComparison()
    c.add(np.ones((1, 3)), np.ones((1, 3)))
    assert c.to_dict()["sqnr_db"] is None  # identical: JSON has no infinity


@pytest.mark.parametrize("sep", ["\t", ","])
def test_read_labels(tmp_path, sep):
    path = tmp_path / "labels.txt"
    rows = [["name", "file", "class_index"], ["tench", "dir/000_a.jpg", "0"], ["", "001_b.jpg", "7"], []]
    path.write_text("\n".join(sep.join(r) for r in rows) + "\n")
    assert read_labels(path) == {"000_a.jpg": 0, "001_b.jpg": 7}


def test_read_labels_errors(tmp_path):
    bad = tmp_path / "bad.tsv"
    bad.write_text("file\tlabel\na.jpg\t1\n")
    with pytest.raises(Int8CalibError, match=r"bad.tsv:1: header has no class_index"):
        read_labels(bad)
    bad.write_text("file\tclass_index\na.jpg\tseven\n")
    with pytest.raises(Int8CalibError, match=r"bad.tsv:2: class_index 'seven'"):
        read_labels(bad)
    with pytest.raises(Int8CalibError, match="not found"):
        read_labels(tmp_path / "missing.tsv")


def _classifier(rng, image: bool = False) -> onnx.ModelProto:
    """x [N,6] -> MatMul W [6,10] -> Relu -> MatMul V [10,10] -> logits (image: x [N,1,1,6] flattened first)."""
    inits = [numpy_helper.from_array(rng.standard_normal((6, 10)).astype(np.float32), "w"),
             numpy_helper.from_array(rng.standard_normal((10, 10)).astype(np.float32), "v")]
    nodes = [helper.make_node("MatMul", ["x", "w"], ["h"], "fc1"), helper.make_node("Relu", ["h"], ["r"], "relu"),
             helper.make_node("MatMul", ["r", "v"], ["logits"], "fc2")]
    if image:
        nodes.insert(0, helper.make_node("Flatten", ["img"], ["x"], "flatten"))
    x = helper.make_tensor_value_info("img", TensorProto.FLOAT, ["N", 1, 1, 6]) if image else helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", 6])
    graph = helper.make_graph(nodes, "clf", [x],
                              [helper.make_tensor_value_info("logits", TensorProto.FLOAT, ["N", 10])], inits)
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)], ir_version=8)


def test_compare_models_per_layer_worst_first(rng):
    model = _classifier(rng)
    x = rng.standard_normal((16, 6)).astype(np.float32)
    ax = float(np.abs(x).max())
    qdq, _ = build_qdq(model, {"x": ax, "r": 1000.0})  # r: far too wide a range, a few levels used
    assert quantized_tensors(qdq) == {"x": "x_DequantizeLinear", "r": "r_DequantizeLinear"}
    result = compare_models(model, qdq, [({"x": x}, 16, None)], per_layer=True)
    names = [name for name, _ in result.layers]
    assert names == ["r", "x"]  # worst first
    assert result.layers[0][1].sqnr_db < 10
    step = ax / 127
    xq = np.clip(np.rint(x / step), -128, 127) * step
    assert result.layers[1][1].sqnr_db == pytest.approx(10 * np.log10(np.sum(x.astype(np.float64) ** 2) / np.sum((x - xq).astype(np.float64) ** 2)), rel=1e-4)
    assert result.to_dict()["per_layer"][1]["tensor"] == "x"


def test_evaluate_cli_json(tmp_path, rng):
    model = _classifier(rng)
    x = rng.standard_normal((12, 6)).astype(np.float32)
    onnx.save(model, tmp_path / "fp32.onnx")
    same, _ = build_qdq(model, {})  # nothing has a range: every node stays float, outputs identical
    onnx.save(same, tmp_path / "q.onnx")
    np.save(tmp_path / "x.npy", x)
    out = tmp_path / "r.json"
    rc = main(["evaluate", "--fp32", str(tmp_path / "fp32.onnx"), "--int8", str(tmp_path / "q.onnx"),
               "--data", str(tmp_path / "x.npy"), "--batch-size", "5", "--json", str(out), "-q"])
    assert rc == 0
    result = json.loads(out.read_text())
    assert result["n"] == 12 and result["top1_agreement"] == 100.0 and result["sqnr_db"] is None
    assert {"n", "top1_agreement", "fp32_top1", "int8_top1", "sqnr_db"} <= set(result)


def test_evaluate_cli_bad_labels_is_one_line(tmp_path, rng, capsys):
    model = _classifier(rng, image=True)
    onnx.save(model, tmp_path / "m.onnx")
    img = tmp_path / "img"
    img.mkdir()
    from PIL import Image

    Image.new("RGB", (8, 8)).save(img / "a.png")
    (tmp_path / "l.csv").write_text("file,class_index\nb.png,1\n")
    spec = tmp_path / "pre.json"
    spec.write_text(json.dumps({"resize": [1, 6], "color": "GRAY", "mean": [0], "std": [1], "layout": "NCHW"}))
    rc = main(["evaluate", "--fp32", str(tmp_path / "m.onnx"), "--int8", str(tmp_path / "m.onnx"),
               "--data", str(img), "--preprocess", str(spec), "--labels", str(tmp_path / "l.csv"), "-q"])
    err = capsys.readouterr().err
    assert rc == 2 and "no label for 'a.png'" in err and "Traceback" not in err


def test_flip_probability_by_hand_and_against_simulation():
    from int8calib.evaluate.metrics import flip_probability

    ref = np.array([[1.0, 0.0, -5.0, -5.0]])
    test = ref + np.array([[1.0, -1.0, 1.0, -1.0]])  # noise spread (std) exactly 1
    # margins 1, 6, 6: Phi(-1/sqrt2) + 2 Phi(-6/sqrt2) = 0.2397501 + 2 * 1.1045e-5
    assert flip_probability(ref, test)[0] == pytest.approx(0.2397501 + 2 * 1.1045e-5, abs=1e-6)
    assert flip_probability(ref, ref)[0] == 0.0

    # Independent check: Gaussian noise of known spread, the observed top-1 flip rate.
    rng = np.random.default_rng(0)
    logits = rng.normal(0, 3, (20000, 10))
    noisy = logits + rng.normal(0, 0.4, logits.shape)
    observed = np.mean(noisy.argmax(1) != logits.argmax(1))
    assert flip_probability(logits, noisy).mean() == pytest.approx(observed, rel=0.15)
