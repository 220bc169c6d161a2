"""``int8calib demo``: bundled photos, deterministic calibration views, and the whole run end to end."""

from __future__ import annotations

import re

import numpy as np
import onnx
import pytest

from int8calib.cli import main
from int8calib.demo import PHOTOS, calibration_views, demo_photos, photo_bootstrap, sqnr_db
from int8calib.preprocess import Preprocess, load_image
from int8calib.writers.cache import read_cache


def test_all_bundled_photos_found_without_download():
    photos = demo_photos()
    assert [p.name for p in photos] == [name for *_, name in PHOTOS]
    for p in photos:
        assert p.path.is_file()
        assert {"site-packages", "dist-packages"} & set(p.path.parts)  # shipped inside an installed wheel
        image = load_image(p.path)
        assert image.mode == "RGB" and min(image.size) >= 224


def test_calibration_views_are_deterministic_crops_and_mirrors():
    photos = demo_photos()[:2]
    first = [f["input"] for _, f in calibration_views(photos)]
    second = [f["input"] for _, f in calibration_views(photos)]
    assert all(np.array_equal(a, b) for a, b in zip(first, second))
    rows = np.concatenate(first)
    assert rows.shape == (12, 3, 224, 224) and rows.dtype == np.float32  # 2 photos x 3 crops x (plain, mirrored)
    plain = Preprocess.load("efficientnet-lite")(photos[0].path)
    np.testing.assert_array_equal(rows[0], plain)  # first view: exactly the preset
    np.testing.assert_array_equal(rows[1], plain[..., ::-1])  # then its mirror image
    assert not np.array_equal(rows[2], rows[0])  # other crops differ


def test_sqnr_db():
    ref = np.array([[3.0, 4.0]])
    assert sqnr_db(ref, ref) == float("inf")
    assert sqnr_db(ref, ref + np.array([[0.5, 0.0]])) == pytest.approx(10 * np.log10(25 / 0.25))


def test_photo_bootstrap_resamples_photos_not_views():
    # 3 photos x 2 views x 4 classes: b's noise is twice a's on every view, and b flips view 1 of photo 2
    fp32 = np.zeros((3, 2, 4))
    fp32[..., 0] = 10.0
    a = fp32 + np.array([1.0, 0, 0, 0])
    b = fp32 + np.array([np.sqrt(2.0), 0, 0, 0])
    b[2, 1] = [np.sqrt(2.0), 10.0, 0, 0]  # noise (sqrt 2 - 10)^2 + 10^2
    flip = (np.sqrt(2.0) - 10.0) ** 2 + 100.0
    agree, sqnr = photo_bootstrap(fp32, a, b, resamples=400)
    # agreement: a 100 % on every photo, b 50 % on photo 2; resamples without photo 2 (8/27) give 0,
    # those of photo 2 three times (1/27, over 2.5 %) give 50 points
    assert agree == pytest.approx((50.0 / 3, 0.0, 50.0))
    assert sqnr[0] == pytest.approx(10 * np.log10((5 * 2.0 + flip) / 6.0))
    assert sqnr[1] == pytest.approx(10 * np.log10(2.0)) and sqnr[2] == pytest.approx(10 * np.log10((2.0 + flip) / 2.0))


@pytest.mark.slow
def test_demo_end_to_end(tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("INT8CALIB_CACHE", str(tmp_path / "cache"))
    monkeypatch.chdir(tmp_path)
    assert main(["demo"]) == 0
    printed = capsys.readouterr()
    out = printed.out
    assert printed.err.count("Q/DQ: ") == 1  # the written model's line, not again for auto's candidates or the baseline
    nexts = [line for line in out.splitlines() if line.startswith("next: ")]
    assert any("--int8 --calib=" in n and "8.x-10.0" in n for n in nexts) or any(n.startswith("next: TensorRT 1") for n in nexts)
    assert any("efficientnet_lite0_qdq.onnx" in n for n in nexts)
    rows = {line.split()[0]: line for line in out.splitlines() if line and line.split()[0] in {n for *_, n in PHOTOS}}
    assert len(rows) == len(PHOTOS)
    # real ImageNet weights: FP32 recognises the unambiguous photos
    assert re.match(r"coffee\s+espresso\s+9\d\.\d%", rows["coffee"])
    assert re.match(r"camera\s+tripod\s+9\d\.\d%", rows["camera"])
    agreement = re.search(r"top-1 agreement FP32 vs INT8: (\d+)/9", out)
    sqnr = re.search(r"output SQNR \(logits\): (-?[\d.]+|inf) dB", out)
    assert agreement and sqnr and "views of these 9 photos" in out and "auto (" in out
    # the pipeline end to end (statistics -> ranges -> Q/DQ -> ONNX Runtime) keeps most predictions; auto with
    # bias correction beats TensorRT's default by far in output SQNR (measured 22.8 against 13.6 dB)
    assert int(agreement.group(1)) >= 7
    baseline = re.search(r"entropy2 \(TensorRT default\) ranges from the same statistics, biases as exported: "
                         r"top-1 agreement (\d+)/9, output SQNR (-?[\d.]+) dB", out)
    assert baseline and int(baseline.group(1)) >= 7
    assert float(sqnr.group(1)) >= float(baseline.group(2)) + 5
    # scored again on 72 views the calibration never saw, with what 9 photos can tell apart
    assert "on 72 views of these 9 photos the calibration never saw (4 other crops, each mirrored):" in out
    gap = re.search(r"minus entropy2, 95 % interval over resampled photos: agreement ([-+][\d.]+) points "
                    r"\(([-+][\d.]+) to ([-+][\d.]+): (within|beyond) noise\), SQNR ([-+][\d.]+) dB "
                    r"\(([-+][\d.]+) to ([-+][\d.]+): (within|beyond) noise\)", out)
    assert gap and float(gap.group(2)) <= float(gap.group(1)) <= float(gap.group(3))
    assert gap.group(8) == "beyond" and float(gap.group(6)) > 3  # the SQNR gain is not luck of 9 photos

    folder = tmp_path / "int8calib-demo"
    cache = read_cache(folder / "calibration.cache")
    assert cache.algorithm == "EntropyCalibration2"
    fp32 = onnx.load(str(folder / "efficientnet_lite0.onnx"))
    assert {"input", "stem.relu6", "head.relu6", "logits"} <= set(cache.amax)
    assert len(cache.amax) == 1 + sum(len(n.output) for n in fp32.graph.node)  # every activation has a scale
    qdq = onnx.load(str(folder / "efficientnet_lite0_qdq.onnx"))
    assert any(n.op_type == "QuantizeLinear" for n in qdq.graph.node)
    try:
        import int8calib.report  # noqa: F401
    except ImportError:
        pass
    else:
        assert (folder / "report.html").stat().st_size > 10_000
