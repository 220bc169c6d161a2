"""End to end on a generated CNN: CLI, API and the calibrator protocol."""

import json

import numpy as np
import pytest

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
    written = json.loads(ranges.read_text())
    assert written == pytest.approx(expected, rel=1e-5)


def test_entropy2_stays_within_the_observed_range(setup, tmp_path):
    model, model_path, images, spec = setup
    result = int8calib.calibrate(model_path, tmp_path / "images", spec, method="entropy2", cache=tmp_path / "c.cache")
    observed = _reference_amax(model, images)
    for name, amax in result.amax.items():
        assert 0 < amax <= observed[name] * 2048.5 / 2048 * (1 + 1e-5), name
    assert read_cache(tmp_path / "c.cache").algorithm == "EntropyCalibration2"


def test_valid_cache_is_reused_without_touching_data(setup, tmp_path):
    model, model_path, images, spec = setup
    cache = tmp_path / "c.cache"
    first = int8calib.calibrate(model_path, tmp_path / "images", spec, method="minmax", cache=cache)
    for p in images[1:]:
        p.unlink()  # a second run that read the data would now see other statistics
    second = int8calib.calibrate(model_path, tmp_path / "images", spec, method="minmax", cache=cache)
    assert second.from_cache and second.amax == pytest.approx(first.amax, rel=1e-6)


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
    assert result.amax == pytest.approx(expected, rel=1e-5)


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
