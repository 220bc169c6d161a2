"""Bad input battery: every case exits 2 with one line naming the culprit, no traceback,
and no output file appears or changes (the CLI in-process, plus a few real subprocesses)."""

from __future__ import annotations

import io
import json
import os

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper
from PIL import Image

from int8calib.cli import main
from trust_helpers import SIZE, make_images, make_model, run_cli, snapshot, with_external_data, write_list, write_spec

OLD_CACHE = "TRT-8601-MinMaxCalibration\ninput: 3c010204\n"


@pytest.fixture
def ws(tmp_path):
    """A workspace: model, 4 good images, spec, and out/ holding an old cache that a run would replace."""
    make_model(tmp_path / "m.onnx")
    make_images(tmp_path / "imgs", 4)
    write_spec(tmp_path / "spec.json")
    (tmp_path / "out").mkdir()
    (tmp_path / "out" / "c.txt").write_text(OLD_CACHE)
    return tmp_path


def calibrate(ws, capsys, *extra, data=None, model=None, expect=2):
    """Run ``calibrate`` with outputs in ws/out; check exit code, one line, no traceback, out/ untouched."""
    before = snapshot(ws / "out")
    args = [
        "calibrate", str(model or ws / "m.onnx"), "--data", str(data or ws / "imgs"), "--preprocess", str(ws / "spec.json"),
        "--cache", str(ws / "out" / "c.txt"), "--ranges", str(ws / "out" / "r.json"),
        "--histograms", str(ws / "out" / "h.npz"), "-q", *map(str, extra),
    ]
    code = main(args)
    err = capsys.readouterr().err
    assert code == expect, err
    if expect == 2:
        lines = [line for line in err.splitlines() if line.startswith("int8calib: error:")]
        assert len(lines) == 1 and "Traceback" not in err, err
        assert snapshot(ws / "out") == before
        return lines[0]
    return err


# ---- images -----------------------------------------------------------------
def test_corrupt_image_is_named(ws, capsys):
    (ws / "imgs" / "img1.png").write_bytes(b"\x89PNG\r\n\x1a\nthis is not a png")
    assert "img1.png" in calibrate(ws, capsys)


def test_truncated_jpeg_is_named(ws, capsys):
    buf = io.BytesIO()
    Image.fromarray(np.random.default_rng(1).integers(0, 256, (64, 64, 3), np.uint8)).save(buf, "JPEG")
    (ws / "imgs" / "cut.jpg").write_bytes(buf.getvalue()[: len(buf.getvalue()) // 2])
    assert "cut.jpg" in calibrate(ws, capsys)


def test_empty_image_file_is_named(ws, capsys):
    (ws / "imgs" / "empty.png").write_bytes(b"")
    assert "empty.png" in calibrate(ws, capsys)


def test_missing_file_names_list_line(ws, capsys):
    lst = write_list(ws / "list.txt", ["imgs/img0.png", "# comment", "imgs/nope.png"])
    line = calibrate(ws, capsys, data=lst)
    assert "nope.png" in line and "list.txt:3" in line and "not found" in line


def test_directory_in_list_names_line(ws, capsys):
    (ws / "imgs" / "sub").mkdir()
    lst = write_list(ws / "list.txt", ["imgs/img0.png", "imgs/sub"])
    line = calibrate(ws, capsys, data=lst)
    assert "sub" in line and "list.txt:2" in line and "directory" in line


def test_empty_list(ws, capsys):
    lst = write_list(ws / "list.txt", ["# only a comment", ""])
    assert "list.txt" in calibrate(ws, capsys, data=lst) and "no entries" in capsys.readouterr().err + "no entries"


def test_non_utf8_list_names_line(ws, capsys):
    lst = ws / "list.txt"
    lst.write_bytes(b"imgs/img0.png\r\nimgs/caf\xe9.png\r\n")
    line = calibrate(ws, capsys, data=lst)
    assert "list.txt:2" in line and "UTF-8" in line


def test_crlf_list_and_bom_are_fine(ws, capsys):
    lst = ws / "list.txt"
    lst.write_bytes(b"\xef\xbb\xbfimgs/img0.png\r\nimgs/img1.png\r\n")
    calibrate(ws, capsys, data=lst, expect=0)
    assert (ws / "out" / "c.txt").read_text().startswith("TRT-8601-EntropyCalibration2")


def test_non_utf8_file_name_in_directory(ws):
    """A corrupt image whose name is not UTF-8: named (escaped) on one line, in a real process."""
    bad = os.path.join(os.fsencode(ws / "imgs"), b"bad\xff.png")
    with open(bad, "wb") as f:
        f.write(b"garbage")
    before = snapshot(ws / "out")
    proc = run_cli("calibrate", ws / "m.onnx", "--data", ws / "imgs", "--preprocess", ws / "spec.json",
                   "--cache", ws / "out" / "c.txt", "-q")
    assert proc.returncode == 2, proc.stderr
    assert "Traceback" not in proc.stderr and "bad" in proc.stderr and ".png" in proc.stderr
    assert snapshot(ws / "out") == before


def test_skip_bad_images_reports_count(ws, capsys):
    (ws / "imgs" / "bad1.png").write_bytes(b"nope")
    (ws / "imgs" / "bad2.jpg").write_bytes(b"\xff\xd8\xff garbage")
    err = calibrate(ws, capsys, "--skip-bad-images", expect=0)
    assert "skipped 2 unreadable sample(s)" in err
    assert (ws / "out" / "c.txt").read_text() != OLD_CACHE


def test_skip_bad_images_all_bad(ws, capsys):
    for p in (ws / "imgs").iterdir():
        p.write_bytes(b"nope")
    assert "no calibration sample" in calibrate(ws, capsys, "--skip-bad-images")


# ---- models -------------------------------------------------------------------
def test_model_not_onnx(ws, capsys):
    (ws / "fake.onnx").write_text("hello, I am a text file\n")
    assert "fake.onnx" in calibrate(ws, capsys, model=ws / "fake.onnx")


def test_model_truncated(ws, capsys):
    data = (ws / "m.onnx").read_bytes()
    (ws / "cut.onnx").write_bytes(data[: len(data) // 2])
    assert "cut.onnx" in calibrate(ws, capsys, model=ws / "cut.onnx")


def test_model_missing(ws, capsys):
    assert "nope.onnx" in calibrate(ws, capsys, model=ws / "nope.onnx")


def _external_model(ws, location: str):
    return with_external_data(ws / "m.onnx", location)


def test_model_external_data_works(ws, capsys):
    calibrate(ws, capsys, model=_external_model(ws, "ext.bin"), expect=0)


def test_model_missing_external_data(ws, capsys):
    path = _external_model(ws, "ext.bin")
    (ws / "ext.bin").unlink()
    line = calibrate(ws, capsys, model=path)
    assert "ext.bin" in line and "not found" in line


@pytest.mark.parametrize("location", ["../secret.bin", "/etc/passwd"])
def test_model_external_data_outside_folder(ws, capsys, location):
    line = calibrate(ws, capsys, model=_external_model(ws, location))
    assert location in line and "outside the model's folder" in line


def test_model_without_float_input(ws, capsys):
    line = calibrate(ws, capsys, model=make_model(ws / "int.onnx", elem=TensorProto.INT64))
    assert "input" in line and "float" in line


def test_model_without_inputs(ws, capsys):
    const = helper.make_node("Constant", [], ["c"], value=numpy_helper.from_array(np.ones(2, np.float32)))
    node = helper.make_node("Relu", ["c"], ["y"])
    graph = helper.make_graph([const, node], "g", [], [helper.make_tensor_value_info("y", TensorProto.FLOAT, [2])])
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]), str(ws / "noin.onnx"))
    line = calibrate(ws, capsys, model=ws / "noin.onnx")
    assert "noin.onnx" in line and "no input" in line


def _two_input_model(path):
    x = helper.make_tensor_value_info("a", TensorProto.FLOAT, ["N", 4])
    y = helper.make_tensor_value_info("b", TensorProto.FLOAT, ["N", 4])
    out = helper.make_tensor_value_info("s", TensorProto.FLOAT, ["N", 4])
    graph = helper.make_graph([helper.make_node("Add", ["a", "b"], ["s"])], "g", [x, y], [out])
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]), str(path))
    return path


def test_several_inputs_with_images(ws, capsys):
    line = calibrate(ws, capsys, model=_two_input_model(ws / "two.onnx"))
    assert "2 inputs" in line and "a, b" in line


def test_several_inputs_npz_missing_one(ws, capsys):
    np.savez(ws / "batch.npz", a=np.ones((3, 4), np.float32))
    line = calibrate(ws, capsys, model=_two_input_model(ws / "two.onnx"), data=ws / "batch.npz")
    assert "batch.npz" in line and "'b'" in line


def test_dynamic_dims_batch_in_groups_of_equal_shape(ws, capsys):
    """Model [N,3,H,W], spec resizes the shorter side only: images of two aspect ratios are batched
    in groups of equal shape (#16), no longer refused; the statistics equal batch size 1's."""
    from int8calib.stats import load

    model = make_model(ws / "dyn.onnx", input_shape=("N", 3, "H", "W"))
    (ws / "spec.json").write_text(json.dumps({"resize": SIZE, "mean": [127.0] * 3, "std": [128.0] * 3}))
    Image.new("RGB", (24, 12), (200, 10, 60)).save(ws / "imgs" / "wide.png")
    calibrate(ws, capsys, "--method", "minmax", model=model, expect=0)
    grouped = load(ws / "out" / "h.npz")
    calibrate(ws, capsys, "--method", "minmax", "--batch-size", "1", model=model, expect=0)
    single = load(ws / "out" / "h.npz")
    assert grouped.meta["samples"] == single.meta["samples"] >= 2
    for name, hist in single.tensors.items():
        assert np.array_equal(grouped.tensors[name].counts, hist.counts), name


def test_fixed_dims_the_spec_does_not_produce(ws, capsys):
    model = make_model(ws / "fixed.onnx", input_shape=(1, 3, 16, 16))
    line = calibrate(ws, capsys, model=model)
    assert "input 'input'" in line and "16" in line


def test_npy_with_pickled_objects_is_refused(ws, capsys):
    np.save(ws / "obj.npy", np.array([{"a": 1}], dtype=object), allow_pickle=True)
    assert "obj.npy" in calibrate(ws, capsys, data=ws / "obj.npy")


# ---- activations ----------------------------------------------------------------
def test_nan_activation_names_tensor_and_batch(ws, capsys):
    x = helper.make_tensor_value_info("input", TensorProto.FLOAT, ["N", 3, SIZE, SIZE])
    y = helper.make_tensor_value_info("root", TensorProto.FLOAT, ["N", 3, SIZE, SIZE])
    graph = helper.make_graph([helper.make_node("Sqrt", ["input"], ["root"])], "g", [x], [y])
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]), str(ws / "sqrt.onnx"))
    line = calibrate(ws, capsys, "--batch-size", "2", model=ws / "sqrt.onnx")
    assert "tensor 'root'" in line and "NaN/Inf" in line and "batch 0" in line


# ---- cache, statistics and option files ---------------------------------------
@pytest.mark.parametrize(
    "text, where",
    [
        ("TRT-8601\ninput: 3c010204\n", ":1: bad header"),
        ("", ":1: empty"),
        ("TRT-8601-EntropyCalibration2\ninput: 3c010204\nconv: zz01\n", ":3: bad hex"),
        ("TRT-8601-EntropyCalibration2\ninput: 3c010204\nconv: 123456789\n", ":3: bad hex"),
        ("TRT-8601-EntropyCalibration2\ninput: 3c010204\ninput: 3c010204\n", ":3: duplicate tensor 'input'"),
        ("TRT-8601-EntropyCalibration2\nno separator here\n", ":2: expected"),
    ],
)
def test_bad_cache_files(ws, capsys, text, where):
    (ws / "bad.cache").write_text(text)
    code = main(["inspect", str(ws / "bad.cache")])
    err = capsys.readouterr().err
    assert code == 2 and f"bad.cache{where}" in err and "Traceback" not in err, err
    # calibrate --reuse-cache=strict refuses to replace it; auto replaces it after saying why
    (ws / "out" / "c.txt").write_text(text)
    assert f"c.txt{where}" in calibrate(ws, capsys, "--reuse-cache", "strict")


def test_cache_not_utf8(ws, capsys):
    (ws / "bin.cache").write_bytes(b"TRT-8601-EntropyCalibration2\n\xff\xfe: 00\n")
    assert main(["inspect", str(ws / "bin.cache")]) == 2
    assert "not UTF-8" in capsys.readouterr().err


@pytest.mark.parametrize("content", [b"", b"PK\x03\x04 broken zip", b"not a zip at all"])
def test_bad_statistics_file(ws, capsys, content):
    (ws / "h.npz").write_bytes(content)
    before = snapshot(ws / "out")
    assert main(["calibrate", "--from-histograms", str(ws / "h.npz"), "--cache", str(ws / "out" / "c.txt")]) == 2
    err = capsys.readouterr().err
    assert "h.npz" in err and "Traceback" not in err
    assert snapshot(ws / "out") == before


def test_statistics_with_pickled_meta_is_refused(ws, capsys):
    np.savez(ws / "h.npz", format=np.array("int8calib-statistics/1"), meta=np.array([{"x": 1}], dtype=object))
    assert main(["calibrate", "--from-histograms", str(ws / "h.npz"), "--cache", str(ws / "out" / "c.txt")]) == 2
    assert "h.npz" in capsys.readouterr().err


def test_bad_preprocess_json_names_line(ws, capsys):
    (ws / "spec.json").write_text('{\n  "resize": 8,\n  "crop": [8, 8\n}\n')
    assert "spec.json:4" in calibrate(ws, capsys)


def test_bad_batch_size(ws, capsys):
    assert "--batch-size" in calibrate(ws, capsys, "--batch-size", "0")


def test_unknown_method(ws, capsys):
    assert "unknown method 'kl'" in calibrate(ws, capsys, "--method", "kl")


def test_subprocess_exit_code_and_no_traceback(ws):
    """The real entry point: exit status 2, one stderr line."""
    (ws / "fake.onnx").write_text("not a model")
    proc = run_cli("calibrate", ws / "fake.onnx", "--data", ws / "imgs", "--preprocess", ws / "spec.json",
                   "--cache", ws / "out" / "new.txt")
    assert proc.returncode == 2
    assert proc.stderr.count("\n") == 1 and proc.stderr.startswith("int8calib: error:") and "fake.onnx" in proc.stderr
    assert not (ws / "out" / "new.txt").exists()


@pytest.mark.parametrize("name, content", [("e.npy", b""), ("z.npz", b"PK\x03\x04 broken"), ("t.npy", b"\x93NUMPY\x01\x00v")])
def test_bad_tensor_data_files(ws, capsys, name, content):
    (ws / name).write_bytes(content)
    assert name in calibrate(ws, capsys, data=ws / name)


def test_tensor_file_missing_from_list(ws, capsys):
    np.save(ws / "a.npy", np.zeros((3, SIZE, SIZE), np.float32))
    lst = write_list(ws / "list.txt", ["a.npy", "b.npy"])
    line = calibrate(ws, capsys, data=lst)
    assert "b.npy" in line and "list.txt:2" in line
