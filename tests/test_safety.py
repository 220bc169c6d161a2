"""Safety: user files are never unpickled; model external data stays in the model's folder."""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np
import onnx
import pytest

from int8calib.errors import Int8CalibError
from int8calib.runner.model import load_model, model_fingerprint
from trust_helpers import make_model, with_external_data

SRC = Path(__file__).resolve().parents[1] / "src" / "int8calib"


def test_every_numpy_load_refuses_pickles():
    calls = []
    for path in SRC.rglob("*.py"):
        text = path.read_text()
        for m in re.finditer(r"np\.load\(([^)]*)\)", text):
            calls.append((path.name, m.group(1)))
        if path.relative_to(SRC).as_posix() == "zoo/pth.py":
            # The one pickle reader: the shipped weights file, through an allow-list unpickler.
            assert "def find_class" in text and "pickle.load(" not in text and "pickle.loads(" not in text
        else:
            assert not re.search(r"^\s*(import pickle|from pickle|import dill|import joblib)", text, re.M), path
        assert "allow_pickle=True" not in text, path
    assert calls and all("allow_pickle=False" in args for _, args in calls), calls


def _with_location(folder, location):
    make_model(folder / "m.onnx")
    return with_external_data(folder / "m.onnx", location, "w.bin")


@pytest.mark.parametrize("location", ["../w.bin", "/etc/hostname", "sub/../../w.bin"])
def test_external_data_outside_the_folder_is_refused_before_reading(tmp_path, location):
    (tmp_path / "model").mkdir()
    path = _with_location(tmp_path / "model", location)
    (tmp_path / "w.bin").write_bytes(np.zeros(1000, np.float32).tobytes())
    for fn in (load_model, model_fingerprint):
        with pytest.raises(Int8CalibError, match="outside the model's folder"):
            fn(path)


def test_external_data_symlink_out_of_the_folder_is_refused(tmp_path):
    (tmp_path / "model").mkdir()
    path = _with_location(tmp_path / "model", "w.bin")
    (tmp_path / "model" / "w.bin").rename(tmp_path / "real.bin")
    (tmp_path / "model" / "w.bin").symlink_to(tmp_path / "real.bin")
    with pytest.raises(Int8CalibError, match="outside the model's folder"):
        load_model(path)


def test_external_data_in_a_subfolder_is_fine(tmp_path):
    path = _with_location(tmp_path, "weights/w.bin")
    (tmp_path / "weights").mkdir()
    (tmp_path / "w.bin").rename(tmp_path / "weights" / "w.bin")
    model = load_model(path)
    assert onnx.numpy_helper.to_array(model.graph.initializer[0]).shape == (4, 3, 3, 3)
    assert model_fingerprint(path) != model_fingerprint(tmp_path / "m.onnx")
