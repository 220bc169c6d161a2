"""Stale-cache detection: each of the four kinds of change is detected and named; a valid
cache is reused without running the model; strict fails, never recomputes."""

from __future__ import annotations

import json
import shutil

import numpy as np
import pytest
from PIL import Image

import int8calib.api
import int8calib.runner
from int8calib.cli import main
from int8calib.stats import load as load_statistics
from int8calib.writers.cache import read_cache
from int8calib.writers.provenance import changes, provenance_dict, sidecar_path
from trust_helpers import make_images, make_model, snapshot, write_spec


@pytest.fixture
def ws(tmp_path):
    make_model(tmp_path / "m.onnx")
    make_images(tmp_path / "imgs", 5)
    write_spec(tmp_path / "spec.json")
    return tmp_path


def run(ws, capsys, *extra, model="m.onnx", data="imgs", spec="spec.json", method="entropy2"):
    code = main(["calibrate", str(ws / model), "--data", str(ws / data), "--preprocess", str(ws / spec),
                 "--method", method, "--cache", str(ws / "c.txt"), *map(str, extra)])
    return code, capsys.readouterr().err


@pytest.fixture
def calibrated(ws, capsys):
    code, err = run(ws, capsys)
    assert code == 0, err
    return ws


def test_sidecar_records_what_produced_the_cache(calibrated):
    record = json.loads(sidecar_path(calibrated / "c.txt").read_text())
    assert record["method"] == "entropy2" and record["algorithm"] == "EntropyCalibration2"
    assert record["preprocess"]["mean"] == [127.0] * 3 and record["preprocess"]["crop"] == 8
    assert len(record["model_sha256"]) == 64 and len(record["data_sha256"]) == 64
    import hashlib

    assert record["output_sha256"] == hashlib.sha256((calibrated / "c.txt").read_bytes()).hexdigest()


def test_valid_cache_is_reused_without_running_anything(calibrated, capsys, monkeypatch):
    def boom(*a, **k):
        raise AssertionError("the model must not run when the cache is valid")

    monkeypatch.setattr(int8calib.runner, "ActivationRunner", boom)  # api imports it when the model runs
    monkeypatch.setattr("int8calib.preprocess.spec.Preprocess.__call__", boom)
    before = snapshot(calibrated)
    code, err = run(calibrated, capsys)
    assert code == 0 and "reusing calibration cache" in err and "unchanged" in err
    assert snapshot(calibrated) == before


def test_moved_data_is_still_valid(calibrated, capsys, monkeypatch):
    """The data fingerprint is content, not paths: the same images elsewhere reuse the cache."""
    shutil.move(calibrated / "imgs", calibrated / "elsewhere")
    code, err = run(calibrated, capsys, data="elsewhere")
    assert code == 0 and "reusing" in err


def _change(ws, kind):
    """Make one kind of change; returns extra run() keyword arguments."""
    if kind == "model":
        make_model(ws / "m.onnx", seed=1)
    elif kind == "method":
        return {"method": "minmax"}
    elif kind == "preprocessing":
        write_spec(ws / "spec.json", mean=[120.0, 127.0, 127.0])
    elif kind == "data":
        arr = np.asarray(Image.open(ws / "imgs" / "img2.png")).copy()
        arr[0, 0, 0] ^= 1  # one bit of one pixel
        Image.fromarray(arr).save(ws / "imgs" / "img2.png")
    return {}


@pytest.mark.parametrize("kind", ["model", "method", "preprocessing", "data"])
def test_each_change_is_named_and_recomputed(calibrated, capsys, kind):
    old = (calibrated / "c.txt").read_bytes()
    old_record = json.loads(sidecar_path(calibrated / "c.txt").read_text())
    code, err = run(calibrated, capsys, **_change(calibrated, kind))
    assert code == 0, err
    assert f"stale: {kind} changed" in err and "recalibrating and replacing it" in err
    for other in {"model", "method", "preprocessing", "data"} - {kind}:
        assert f"{other} changed" not in err
    new_record = json.loads(sidecar_path(calibrated / "c.txt").read_text())
    assert changes(old_record, new_record) and changes(old_record, new_record)[0].startswith(kind)
    if kind != "data":  # one bit of one pixel may not move a scale
        assert (calibrated / "c.txt").read_bytes() != old
    # and the replacement is valid for the changed inputs
    code, err = run(calibrated, capsys, **_change(calibrated, "method") if kind == "method" else {})
    assert code == 0 and "reusing" in err


@pytest.mark.parametrize("kind", ["model", "method", "preprocessing", "data"])
def test_strict_fails_naming_the_change(calibrated, capsys, kind):
    before = snapshot(calibrated)
    kwargs = _change(calibrated, kind)
    before = {k: v for k, v in before.items() if k.startswith("c.txt")}
    code, err = run(calibrated, capsys, "--reuse-cache", "strict", **kwargs)
    assert code == 2 and f"{kind} changed" in err and "Traceback" not in err
    assert {k: v for k, v in snapshot(calibrated).items() if k.startswith("c.txt")} == before


def test_preprocessing_change_names_the_key(calibrated, capsys):
    _change(calibrated, "preprocessing")
    _, err = run(calibrated, capsys)
    assert "preprocessing changed (mean [127.0, 127.0, 127.0] -> [120.0, 127.0, 127.0])" in err


def test_never_recomputes_a_valid_cache(calibrated, capsys, monkeypatch):
    built = []
    real = int8calib.runner.ActivationRunner
    monkeypatch.setattr(int8calib.runner, "ActivationRunner", lambda *a, **k: built.append(1) or real(*a, **k))
    code, err = run(calibrated, capsys, "--reuse-cache", "never")
    assert code == 0 and built == [1] and "reusing" not in err


def test_hand_edited_cache_does_not_match_its_sidecar(calibrated, capsys):
    lines = (calibrated / "c.txt").read_text().splitlines()
    lines[1] = "input: 3c010204"  # another scale for the first tensor
    (calibrated / "c.txt").write_text("\n".join(lines) + "\n")
    code, err = run(calibrated, capsys)
    assert code == 0 and "describes another version of the file" in err


def test_cache_without_sidecar_matching_model_is_reused(calibrated, capsys):
    sidecar_path(calibrated / "c.txt").unlink()
    code, err = run(calibrated, capsys)
    assert code == 0 and "no provenance sidecar" in err and "reusing" in err


def test_foreign_cache_with_tensorrt_10_lines_is_reused(calibrated, capsys):
    """TensorRT 10 also writes its broadcasts, reformat copies and the model's constants (<constant>_output)."""
    import onnx

    sidecar_path(calibrated / "c.txt").unlink()
    constant = onnx.load(str(calibrated / "m.onnx")).graph.initializer[0].name
    extra = ["ONNXTRT_Broadcast_3_output", "relu output reformatter 0", f"{constant}_output"]
    with open(calibrated / "c.txt", "a") as f:
        f.write("".join(f"{name}: 3c010204\n" for name in extra))
    code, err = run(calibrated, capsys)
    assert code == 0 and "reusing" in err and "stale" not in err


def test_cache_without_sidecar_names_mismatches(calibrated, capsys):
    """A foreign cache (TensorRT's): tensors checked against the model, the header against the method."""
    sidecar_path(calibrated / "c.txt").unlink()
    lines = (calibrated / "c.txt").read_text().splitlines()
    lines[0] = "TRT-8601-MinMaxCalibration"
    lines = [ln.replace("relu:", "other_relu:") for ln in lines if not ln.startswith("pool:")]
    lines.append("(Unnamed Layer* 3) [Shuffle]_output: 3c010204")  # TensorRT-internal: ignored
    (calibrated / "c.txt").write_text("\n".join(lines) + "\n")
    before = (calibrated / "c.txt").read_bytes()
    code, err = run(calibrated, capsys, "--reuse-cache", "strict")
    assert code == 2
    assert "algorithm is MinMaxCalibration" in err and "'relu', 'pool'" in err and "'other_relu'" in err
    assert "Unnamed" not in err and (calibrated / "c.txt").read_bytes() == before
    code, err = run(calibrated, capsys)
    assert code == 0 and "stale" in err and read_cache(calibrated / "c.txt").algorithm == "EntropyCalibration2"


def test_statistics_and_ranges_carry_provenance(ws, capsys):
    code, err = run(ws, capsys, "--histograms", ws / "h.npz", "--ranges", ws / "r.json")
    assert code == 0, err
    cache_record = json.loads(sidecar_path(ws / "c.txt").read_text())
    ranges_record = json.loads(sidecar_path(ws / "r.json").read_text())
    meta = load_statistics(ws / "h.npz").meta
    for key in ("model_sha256", "preprocess", "data_sha256"):
        assert meta[key] == cache_record[key] == ranges_record[key]
    assert meta["samples"] == 5


def test_cache_from_histograms_is_valid_for_the_same_inputs(ws, capsys):
    assert run(ws, capsys, "--histograms", ws / "h.npz", "--method", "minmax")[0] == 0
    (ws / "c.txt").unlink()
    assert main(["calibrate", "--from-histograms", str(ws / "h.npz"), "--cache", str(ws / "c.txt")]) == 0
    code, err = run(ws, capsys)  # entropy2, same model, spec and data
    assert code == 0 and "reusing" in err


def test_histograms_with_strict_refuses_a_stale_cache(calibrated, capsys):
    _change(calibrated, "data")
    code, err = run(calibrated, capsys, "--reuse-cache", "strict", "--histograms", calibrated / "h.npz")
    assert code == 2 and "data changed" in err and not (calibrated / "h.npz").exists()


def test_changes_compares_params_and_ignores_unknown_fields():
    a = provenance_dict("m" * 64, "percentile", {"percentile": 99.99}, {"resize": 256}, "d" * 64, "X")
    b = provenance_dict("m" * 64, "percentile", {"percentile": 99.9}, {"resize": 256}, "d" * 64, "X")
    assert changes(a, b) == ["method changed (params {\"percentile\": 99.99} -> {\"percentile\": 99.9})"]
    assert changes(a, provenance_dict(None, "percentile", {"percentile": 99.99}, None, None, "X")) == []


def test_entropy2_cache_is_stale_when_batch_size_or_order_changes_minmax_is_not(ws, capsys):
    # entropy2 follows TensorRT's batches (its histograms start from the first batch); minmax
    # depends on the data alone.
    code, err = run(ws, capsys, "--batch-size", "2")
    assert code == 0, err
    code, err = run(ws, capsys, "--batch-size", "3")
    assert code == 0 and "batch size or order changed" in err, err
    code, err = run(ws, capsys, "--batch-size", "3", "--shuffle", "1")
    assert code == 0 and "batch size or order changed" in err, err
    code, err = run(ws, capsys, "--batch-size", "3", "--shuffle", "1")
    assert code == 0 and "reusing calibration cache" in err, err
    code, err = run(ws, capsys, "--batch-size", "2", method="minmax")
    assert code == 0, err
    code, err = run(ws, capsys, "--batch-size", "3", "--shuffle", "1", method="minmax")
    assert code == 0 and "reusing calibration cache" in err, err
    record = json.loads(sidecar_path(ws / "c.txt").read_text())
    assert "batching" not in record
