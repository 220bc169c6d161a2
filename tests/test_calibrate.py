"""End to end on a generated CNN: CLI, API and the calibrator protocol."""

import json

import numpy as np
import pytest
from onnx import numpy_helper

import int8calib
from int8calib.cli import main
from int8calib.preprocess import Preprocess
from int8calib.sources import resolve
from int8calib.writers.cache import read_cache
from tinymodels import reference_activations, residual_cnn, write_images

SPEC = {"crop": 8, "mean": [128, 128, 128], "std": [64, 64, 64]}
TENSORS = ["input", "conv1", "relu1", "conv2", "clip2", "add", "pool", "flat", "gemm", "logits"]


@pytest.fixture
def setup(tmp_path):
    model_path = tmp_path / "model.onnx"
    model = residual_cnn(model_path)
    images = write_images(tmp_path / "images", 10)
    spec = tmp_path / "pre.json"
    spec.write_text(json.dumps(SPEC))
    return model, model_path, images, spec


def _reference_amax(model, images):
    batch = Preprocess.from_dict(SPEC).batch(images)
    acts = reference_activations(model, batch)
    return {name: float(np.abs(a).max()) for name, a in acts.items()}


def _constants_amax(model):
    """max |w| of the constants TensorRT calibrates (the Gemm's and MatMul's), under TensorRT 10's names."""
    return {f"{t.name}_output": float(np.abs(numpy_helper.to_array(t)).max())
            for t in model.graph.initializer if t.name in ("wg", "bg", "wm")}


def test_cli_minmax_cache_matches_a_numpy_forward_pass(setup, tmp_path, capsys):
    model, model_path, images, spec = setup
    cache, ranges = tmp_path / "calibration.cache", tmp_path / "ranges.json"
    code = main(["calibrate", str(model_path), "--data", str(tmp_path / "images"), "--preprocess", str(spec),
                 "--method", "minmax", "--batch-size", "4", "--cache", str(cache), "--ranges", str(ranges)])
    assert code == 0
    parsed = read_cache(cache)
    assert parsed.algorithm == "MinMaxCalibration" and parsed.version == 8601
    assert list(parsed.scales) == TENSORS
    expected = _reference_amax(model, images)
    for name in TENSORS:
        assert parsed.amax[name] == pytest.approx(expected[name], rel=1e-5), name
    # the Gemm's and MatMul's constants, which TensorRT turns into calibrated Constant layers, under
    # TensorRT 10's names: in the ranges (setDynamicRange), not in a cache with an 8.x header
    weights = _constants_amax(model)
    written = json.loads(ranges.read_text())
    assert written == pytest.approx(expected | weights, rel=1e-5)
    assert main(["calibrate", str(model_path), "--data", str(tmp_path / "images"), "--preprocess", str(spec),
                 "--method", "minmax", "--batch-size", "4", "--cache", str(cache), "--trt-version", "100900"]) == 0
    parsed = read_cache(cache)
    assert list(parsed.scales) == TENSORS + ["wg_output", "bg_output", "wm_output"]
    assert {n: parsed.amax[n] for n in weights} == pytest.approx(weights, rel=1e-6)


def test_entropy2_stays_within_the_observed_range(setup, tmp_path):
    model, model_path, images, spec = setup
    result = int8calib.calibrate(model_path, tmp_path / "images", spec, method="entropy2", cache=tmp_path / "c.cache")
    observed = _reference_amax(model, images) | _constants_amax(model)
    for name, amax in result.amax.items():
        assert 0 < amax <= observed[name] * 2048.5 / 2048 * (1 + 1e-5), name
    assert read_cache(tmp_path / "c.cache").algorithm == "EntropyCalibration2"


def test_valid_cache_is_reused_without_touching_data(setup, tmp_path, monkeypatch):
    model, model_path, images, spec = setup
    cache = tmp_path / "c.cache"
    first = int8calib.calibrate(model_path, tmp_path / "images", spec, method="minmax", cache=cache)

    def no_decoding(*args, **kwargs):
        raise AssertionError("a valid cache must be reused without decoding any image")

    with monkeypatch.context() as m:
        m.setattr(Preprocess, "__call__", no_decoding)
        second = int8calib.calibrate(model_path, tmp_path / "images", spec, method="minmax", cache=cache)
    # (the constants' lines are not in a cache with an 8.x header, so a reused one has none)
    assert second.from_cache and second.amax == pytest.approx({n: first.amax[n] for n in TENSORS}, rel=1e-6)
    # Other data makes the cache stale (docs/trust.md): it is recomputed on the remaining image.
    for p in images[1:]:
        p.unlink()
    third = int8calib.calibrate(model_path, tmp_path / "images", spec, method="minmax", cache=cache)
    assert not third.from_cache and third.samples == 1


def test_calibrator_protocol_serves_every_sample_once(setup, tmp_path):
    model, model_path, images, spec = setup
    from int8calib.runner import model_inputs

    calib = int8calib.EntropyCalibrator2(tmp_path / "images", model_inputs(model), spec, batch_size=4, cache_file=tmp_path / "x.cache")
    assert calib.get_batch_size() == 4 and calib.get_algorithm() == "EntropyCalibration2"
    assert calib.read_calibration_cache() is None
    sizes = []
    while (batch := calib.get_batch(["input"])) is not None:
        sizes.append(batch[0].shape[0])
    assert sizes == [4, 4, 2]
    calib.write_calibration_cache(b"TRT-8601-EntropyCalibration2\ninput: 3c010a14\n")
    assert calib.read_calibration_cache().startswith(b"TRT-8601-EntropyCalibration2")
    assert int8calib.MinMaxCalibrator(tmp_path / "images", model_inputs(model), spec, cache_file=tmp_path / "x.cache").read_calibration_cache() is None


def test_fixed_batch_padding_stays_out_of_the_statistics(tmp_path):
    model = residual_cnn(tmp_path / "fixed.onnx", batch=4)
    images = write_images(tmp_path / "images", 5)
    result = int8calib.calibrate(tmp_path / "fixed.onnx", tmp_path / "images", SPEC, method="minmax")
    expected = _reference_amax(model, images)
    assert result.samples == 5
    for name in TENSORS:
        assert result.amax[name] == pytest.approx(expected[name], rel=1e-5), name
    # the 3 padding rows of the last batch would add 3 x 3 x 8 x 8 values to the input's histogram
    assert result.statistics["input"].total == 5 * 3 * 8 * 8
    assert result.statistics["logits"].total == 5 * 5


def test_npy_data_without_preprocessing(tmp_path):
    model = residual_cnn(tmp_path / "m.onnx")
    x = np.random.default_rng(1).normal(size=(6, 3, 8, 8)).astype(np.float32)
    np.save(tmp_path / "x.npy", x)
    result = int8calib.calibrate(tmp_path / "m.onnx", tmp_path / "x.npy", method="minmax", batch_size=4)
    expected = {n: float(np.abs(a).max()) for n, a in reference_activations(model, x).items()}
    assert result.amax == pytest.approx(expected | _constants_amax(model), rel=1e-5)


def test_bad_usage_exits_2_with_one_line(setup, tmp_path, capsys):
    model, model_path, images, spec = setup
    assert main(["calibrate", str(model_path), "--data", str(tmp_path / "missing.txt"), "--preprocess", str(spec)]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "missing.txt" in err[0]
    assert main(["calibrate", str(model_path), "--data", str(tmp_path / "images"), "--preprocess", "nope"]) == 2
    assert "nope" in capsys.readouterr().err
    assert main(["calibrate", str(model_path), "--data", str(tmp_path / "images"), "--preprocess", str(spec), "--method", "magic"]) == 2
    assert "unknown method 'magic'" in capsys.readouterr().err


def test_resolve_is_used_for_lists_with_relative_paths(setup, tmp_path):
    model, model_path, images, spec = setup
    (tmp_path / "list.txt").write_text("\n".join(f"images/{p.name}" for p in images[:3]))
    assert len(resolve(tmp_path / "list.txt")) == 3
    result = int8calib.calibrate(model_path, tmp_path / "list.txt", spec, method="minmax")
    assert result.samples == 3


def test_outputs_get_the_usual_file_mode(tmp_path):
    import os
    import stat

    from int8calib.util.atomic import write_text

    from int8calib.util import atomic

    write_text(tmp_path / "a.cache", "x")
    assert stat.S_IMODE((tmp_path / "a.cache").stat().st_mode) == 0o666 & ~atomic._UMASK
    assert atomic._UMASK == (lambda m: (os.umask(m), m)[1])(os.umask(0))
