"""--data DIR holding .npy / .npz files: the same samples, in the same order, as the glob of them.

Files are taken in plain sorted path order (the glob's), recursively like image directories;
a file of the input's rank is one batch whose rows stay in order, one rank short is one sample.
"""

from __future__ import annotations

import json

import numpy as np
import pytest

import int8calib
from int8calib.batching import BatchLoader
from int8calib.calibrator import Calibrator
from int8calib.cli import main
from int8calib.errors import Int8CalibError
from int8calib.runner.model import InputInfo
from int8calib.sources import resolve
from int8calib.writers.cache import read_cache
from tinymodels import reference_activations, residual_cnn, write_images

INPUT = InputInfo("input", ("N", 3, 8, 8), np.dtype("float32"))


def _data(n: int, seed: int = 1) -> np.ndarray:
    return np.random.default_rng(seed).normal(size=(n, 3, 8, 8)).astype(np.float32)


def _split(folder, x: np.ndarray, sizes, ext: str = "npy") -> list:
    """``x`` written as consecutive batches of ``sizes`` rows: folder/b0.npy, b1.npy, ..."""
    folder.mkdir(parents=True, exist_ok=True)
    paths, start = [], 0
    for i, size in enumerate(sizes):
        p = folder / f"b{i}.{ext}"
        np.save(p, x[start : start + size]) if ext == "npy" else np.savez(p, input=x[start : start + size])
        paths.append(p)
        start += size
    assert start == len(x)
    return paths


def _batches(data, batch_size: int) -> list[np.ndarray]:
    """The batches TensorRT would get from int8calib's calibrator, in order."""
    calibrator = Calibrator(data, [INPUT], batch_size=batch_size)
    out = []
    while (batch := calibrator.get_batch(["input"])) is not None:
        out.append(batch[0].copy())
    return out


def test_directory_glob_and_one_concatenated_file_give_identical_statistics_and_cache(tmp_path):
    model = residual_cnn(tmp_path / "m.onnx")
    x = _data(10)
    _split(tmp_path / "calib", x, [4, 4, 2])
    np.save(tmp_path / "all.npy", x)
    results = {}
    for name, data in [("dir", tmp_path / "calib"), ("glob", str(tmp_path / "calib" / "*.npy")), ("one", tmp_path / "all.npy")]:
        cache = tmp_path / f"{name}.cache"
        results[name] = (int8calib.calibrate(tmp_path / "m.onnx", data, method="entropy2", batch_size=3, cache=cache), cache)
    ref_result, ref_cache = results["one"]
    assert ref_result.samples == 10
    stats = ref_result.statistics
    assert stats["input"].trt.total == 10 * 3 * 8 * 8  # entropy2 collects TensorRT's histograms (no bit-pattern ones)
    assert (stats["input"].min, stats["input"].max) == (float(x.min()), float(x.max()))
    for name in ("dir", "glob"):
        result, cache = results[name]
        assert result.samples == 10, name
        assert result.amax == ref_result.amax, name
        assert cache.read_text() == ref_cache.read_text(), name
        for tensor, hist in stats.tensors.items():
            other = result.statistics[tensor]
            np.testing.assert_array_equal(other.trt.counts, hist.trt.counts, err_msg=f"{name} {tensor}")
            assert (other.min, other.max) == (hist.min, hist.max), (name, tensor)
    # the directory and its glob are the same files: the same data fingerprint in the sidecars
    data_hash = {n: json.loads((tmp_path / f"{n}.cache.json").read_text())["data_sha256"] for n in results}
    assert data_hash["dir"] == data_hash["glob"] != data_hash["one"]


def test_directory_minmax_matches_a_numpy_forward_pass_through_the_cli(tmp_path, capsys):
    model = residual_cnn(tmp_path / "m.onnx")
    x = _data(7, seed=4)
    _split(tmp_path / "calib", x, [3, 3, 1])
    cache = tmp_path / "c.cache"
    code = main(["calibrate", str(tmp_path / "m.onnx"), "--data", str(tmp_path / "calib"), "--method", "minmax",
                 "--batch-size", "3", "--cache", str(cache), "-q"])
    assert code == 0, capsys.readouterr().err
    expected = {n: float(np.abs(a).max()) for n, a in reference_activations(model, x).items()}
    assert read_cache(cache).amax == pytest.approx(expected, rel=1e-5)


def test_files_in_sorted_path_order_rows_in_row_order(tmp_path):
    """b1 < b10 < b2 (plain sort, not natural); with --batch-size equal to the files' batch each
    TensorRT batch is one file, and with any batch size the rows come in file-then-row order."""
    x = _data(9, seed=2)
    files = {"b1.npy": x[0:3], "b10.npy": x[3:6], "b2.npy": x[6:9]}
    (tmp_path / "calib").mkdir()
    for name in ["b2.npy", "b10.npy", "b1.npy"]:  # creation order must not matter
        np.save(tmp_path / "calib" / name, files[name])
    samples = resolve(tmp_path / "calib", {"input": 4})
    assert [(s.path.name, s.index) for s in samples] == [(n, i) for n in ["b1.npy", "b10.npy", "b2.npy"] for i in range(3)]
    assert samples == resolve(str(tmp_path / "calib" / "*.npy"), {"input": 4})
    by_file = _batches(tmp_path / "calib", batch_size=3)
    assert len(by_file) == 3
    for batch, name in zip(by_file, ["b1.npy", "b10.npy", "b2.npy"]):
        np.testing.assert_array_equal(batch, files[name])
    regrouped = _batches(tmp_path / "calib", batch_size=2)
    assert [len(b) for b in regrouped] == [2, 2, 2, 2, 1]
    np.testing.assert_array_equal(np.concatenate(regrouped), x)


def test_directory_is_recursive_in_the_order_of_the_recursive_glob(tmp_path):
    """Sorted as path strings: 'sub-x.npy' ('-' < '/') comes before 'sub/c.npy', as the glob has it."""
    root = tmp_path / "calib"
    (root / "sub").mkdir(parents=True)
    for name in ["a.npy", "sub/c.npy", "sub-x.npy"]:
        np.save(root / name, _data(2))
    (root / "README.txt").write_text("other files are ignored, as in image directories")
    samples = resolve(root, {"input": 4})
    assert [s.path.relative_to(root).as_posix() for s in samples[::2]] == ["a.npy", "sub-x.npy", "sub/c.npy"]
    assert samples == resolve(str(root / "**" / "*.npy"), {"input": 4})


def test_directory_of_single_samples(tmp_path):
    model = residual_cnn(tmp_path / "m.onnx")
    x = _data(5, seed=3)
    (tmp_path / "calib").mkdir()
    for i, row in enumerate(x):
        np.save(tmp_path / "calib" / f"s{i:02d}.npy", row)  # [3, 8, 8]: one rank short of the input
    samples = resolve(tmp_path / "calib", {"input": 4})
    assert [(s.path.name, s.index) for s in samples] == [(f"s{i:02d}.npy", None) for i in range(5)]
    batches = _batches(tmp_path / "calib", batch_size=2)
    assert [b.shape for b in batches] == [(2, 3, 8, 8), (2, 3, 8, 8), (1, 3, 8, 8)]
    np.testing.assert_array_equal(np.concatenate(batches), x)
    result = int8calib.calibrate(tmp_path / "m.onnx", tmp_path / "calib", method="minmax", batch_size=2)
    expected = {n: float(np.abs(a).max()) for n, a in reference_activations(model, x).items()}
    assert set(result.amax) == set(expected) | {"wg_output", "bg_output", "wm_output"}  # and the Gemm's, MatMul's constants
    assert result.samples == 5 and {n: result.amax[n] for n in expected} == pytest.approx(expected, rel=1e-5)


def test_directory_of_npz_and_of_npy_give_the_same_batches_and_statistics(tmp_path):
    residual_cnn(tmp_path / "m.onnx")
    x = _data(6, seed=5)
    _split(tmp_path / "npy", x, [4, 2])
    _split(tmp_path / "npz", x, [4, 2], ext="npz")
    for batch_size in (4, 5):
        for a, b in zip(_batches(tmp_path / "npy", batch_size), _batches(tmp_path / "npz", batch_size), strict=True):
            np.testing.assert_array_equal(a, b)
    npy = int8calib.calibrate(tmp_path / "m.onnx", tmp_path / "npy", method="entropy2")
    npz = int8calib.calibrate(tmp_path / "m.onnx", tmp_path / "npz", method="entropy2")
    assert npz.amax == npy.amax
    for tensor, hist in npy.statistics.tensors.items():
        np.testing.assert_array_equal(npz.statistics[tensor].counts, hist.counts)


# ---- bad directories: exit 2, one line naming the directory or file ---------------------
def _fails(tmp_path, capsys, data, *extra) -> str:
    if not (tmp_path / "m.onnx").exists():
        residual_cnn(tmp_path / "m.onnx")
    cache = tmp_path / "c.cache"
    code = main(["calibrate", str(tmp_path / "m.onnx"), "--data", str(data), "--cache", str(cache), "-q", *extra])
    err = capsys.readouterr().err
    assert code == 2, err
    lines = [line for line in err.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("int8calib: error:") and "Traceback" not in err, err
    assert not cache.exists()
    return lines[0]


def test_empty_directory(tmp_path, capsys):
    (tmp_path / "calib").mkdir()
    line = _fails(tmp_path, capsys, tmp_path / "calib")
    assert f"{tmp_path / 'calib'}: directory has no images" in line and "no tensor files (.npy, .npz)" in line


def test_directory_with_neither_images_nor_tensors(tmp_path, capsys):
    (tmp_path / "calib" / "sub").mkdir(parents=True)
    (tmp_path / "calib" / "sub" / "x.txt").write_text("1 2 3")
    line = _fails(tmp_path, capsys, tmp_path / "calib")
    assert f"{tmp_path / 'calib'}: directory has no images" in line


def test_directory_mixing_images_and_npy(tmp_path, capsys):
    write_images(tmp_path / "calib" / "imgs", 2)
    np.save(tmp_path / "calib" / "x.npy", _data(2))
    line = _fails(tmp_path, capsys, tmp_path / "calib", "--preprocess", "imagenet")
    assert f"{tmp_path / 'calib'}: directory mixes images (2, e.g. imgs/img000.png) and tensor files (1, e.g. x.npy)" in line


def test_file_of_the_wrong_rank_is_named(tmp_path, capsys):
    _split(tmp_path / "calib", _data(4), [2, 2])
    np.save(tmp_path / "calib" / "b1x.npy", np.zeros((8, 8), np.float32))
    line = _fails(tmp_path, capsys, tmp_path / "calib")
    assert f"{tmp_path / 'calib' / 'b1x.npy'}: array for input 'input' has shape [8, 8]" in line


@pytest.mark.parametrize("glob", [False, True], ids=["dir", "glob"])
@pytest.mark.parametrize("shape, axis", [((2, 4, 8, 8), 1), ((4, 8, 8), 1), ((2, 3, 8, 9), 3)])
def test_file_that_does_not_fit_the_input_is_named_even_mid_batch(tmp_path, capsys, shape, axis, glob):
    """The bad file sorts second and shares its batch with b0.npy: it is the one named."""
    _split(tmp_path / "calib", _data(4), [2, 2])
    np.save(tmp_path / "calib" / "b0z.npy", np.ones(shape, np.float32))
    data = str(tmp_path / "calib" / "*.npy") if glob else tmp_path / "calib"
    line = _fails(tmp_path, capsys, data, "--batch-size", "32")
    assert f"on axis {axis} (from {tmp_path / 'calib' / 'b0z.npy'}" in line
    assert "b0.npy" not in line and "b1.npy" not in line


def test_files_of_different_sizes_for_a_dynamic_axis_batch_in_groups(tmp_path):
    """A model dimension that is not fixed lets files of different sizes through: samples are
    batched within groups of equal shape (#16), not refused."""
    (tmp_path / "calib").mkdir()
    np.save(tmp_path / "calib" / "a.npy", np.ones((2, 3, 8, 8), np.float32))
    np.save(tmp_path / "calib" / "b.npy", np.ones((2, 3, 8, 8), np.float32))
    np.save(tmp_path / "calib" / "c.npy", np.ones((1, 3, 8, 6), np.float32))
    dynamic = InputInfo("input", ("N", 3, "H", "W"), np.dtype("float32"))
    loader = BatchLoader(resolve(tmp_path / "calib", {"input": 4}), [dynamic], batch_size=8)
    batches = list(loader)
    assert [b.feeds["input"].shape for b in batches] == [(4, 3, 8, 8), (1, 3, 8, 6)]
    assert [f"{s.path.name}[{s.index}]" for s in batches[0].samples] == ["a.npy[0]", "a.npy[1]", "b.npy[0]", "b.npy[1]"]
