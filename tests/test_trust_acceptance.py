"""Acceptance: stale-cache detection on the real EfficientNet-Lite0 and photos (8 images, minmax: seconds)."""

from __future__ import annotations

import pytest

from int8calib.cli import main


@pytest.mark.acceptance
def test_real_model_cache_reuse_and_preprocessing_change(effnet_model, even_images, tmp_path, capsys):
    data = tmp_path / "list.txt"
    data.write_text("\n".join(even_images[:8]) + "\n")
    base = ["calibrate", str(effnet_model), "--data", str(data), "--method", "minmax", "--cache", str(tmp_path / "c.txt")]
    assert main(base + ["--preprocess", "efficientnet-lite"]) == 0
    capsys.readouterr()
    assert main(base + ["--preprocess", "efficientnet-lite"]) == 0
    assert "reusing calibration cache" in capsys.readouterr().err
    assert main(base + ["--preprocess", "imagenet", "--reuse-cache", "strict"]) == 2
    err = capsys.readouterr().err
    assert "preprocessing changed" in err and "mean [127.0, 127.0, 127.0] -> [123.675, 116.28, 103.53]" in err
    assert main(["inspect", str(tmp_path / "c.txt"), "--model", str(effnet_model)]) == 0
    out = capsys.readouterr().out
    assert "0 missing from the file, 0 not in the model" in out and "c.txt.json matches this file" in out
