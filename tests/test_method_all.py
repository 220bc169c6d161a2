"""--method all, --from-histograms, and caches that depend on neither batch size nor order
(every method but TensorRT's order-dependent entropy2 and entropy)."""

from __future__ import annotations

import time

import numpy as np
import pytest

from int8calib.api import calibrate, method_path
from int8calib.cli import main
from int8calib.methods import available
from int8calib.writers.cache import read_cache
from tinymodels import residual_cnn

METHODS = ["entropy2", "entropy2-stable", "entropy", "minmax", "percentile", "mse", "legacy"]
ORDER_FREE = [m for m in METHODS if m not in ("entropy2", "entropy")]
HEADERS = {
    "entropy2": "EntropyCalibration2", "entropy2-stable": "EntropyCalibration2", "entropy": "EntropyCalibration",
    "minmax": "MinMaxCalibration",
    "percentile": "EntropyCalibration2", "mse": "EntropyCalibration2", "legacy": "LegacyCalibration",
}


@pytest.fixture(scope="module")
def small(tmp_path_factory):
    folder = tmp_path_factory.mktemp("small")
    residual_cnn(folder / "model.onnx")  # Conv, Relu, Clip, Add residual, GlobalAveragePool, Gemm, MatMul
    rng = np.random.default_rng(3)
    x = rng.standard_normal((45, 3, 8, 8)).astype(np.float32) * rng.uniform(0.1, 3.0, (45, 1, 1, 1)).astype(np.float32)
    np.save(folder / "data.npy", x)
    return folder


def run_all(small, out, **kwargs):
    out.mkdir()
    return calibrate(
        small / "model.onnx", str(small / "data.npy"), method="all",
        cache=out / "cal.cache", histograms=out / "stats.npz", **kwargs,
    )


def cache_bytes(folder, methods=METHODS) -> dict[str, bytes]:
    return {m: method_path(folder / "cal.cache", m).read_bytes() for m in methods}


def order_free_statistics(path) -> list:
    """The statistics without TensorRT's order-dependent histograms."""
    from int8calib.stats import load

    stats = load(path)
    return [(name, h.counts.tobytes(), h.min, h.max) for name, h in stats.tensors.items()]


def test_method_all_writes_one_cache_per_method_with_its_header(small, tmp_path):
    result = run_all(small, tmp_path / "out")
    assert list(result.by_method) == METHODS == available()
    tensors = ["input", "conv1", "relu1", "conv2", "clip2", "add", "pool", "flat", "gemm", "logits"]
    for m in METHODS:
        cache = read_cache(tmp_path / "out" / f"cal.{m}.cache")
        assert cache.algorithm == HEADERS[m]
        assert list(cache.scales) == tensors
        for t in tensors:  # the cache holds float32(amax / 127)
            assert cache.scales[t] == float(np.float32(result.by_method[m][t] / 127))
    assert result.by_method["minmax"]["clip2"] == result.statistics["clip2"].amax
    assert not (tmp_path / "out" / "cal.cache").exists()


def test_caches_are_bit_identical_for_batch_sizes_and_order(small, tmp_path):
    reference = None
    for label, kwargs in [("bs1", {"batch_size": 1}), ("bs7", {"batch_size": 7}), ("bs32", {"batch_size": 32}),
                          ("shuffled", {"batch_size": 7, "shuffle": 11})]:
        run_all(small, tmp_path / label, **kwargs)
        got = cache_bytes(tmp_path / label, ORDER_FREE), order_free_statistics(tmp_path / label / "stats.npz")
        if reference is None:
            reference = got
        assert got == reference, label


def test_entropy2_follows_the_batches_not_how_collection_splits_them(small, tmp_path):
    # One sample per ONNX Runtime run (the first batch then runs twice, for its ranges first):
    # TensorRT's histograms, and so every cache and the whole statistics file, are unchanged.
    run_all(small, tmp_path / "whole", batch_size=7)
    run_all(small, tmp_path / "steps", batch_size=7, max_memory=1)
    assert cache_bytes(tmp_path / "steps") == cache_bytes(tmp_path / "whole")
    assert (tmp_path / "steps" / "stats.npz").read_bytes() == (tmp_path / "whole" / "stats.npz").read_bytes()


def test_from_histograms_reproduces_every_method_bit_for_bit_without_the_model(small, tmp_path):
    run_all(small, tmp_path / "direct")
    stats = tmp_path / "direct" / "stats.npz"
    (tmp_path / "again").mkdir()
    start = time.perf_counter()
    result = calibrate(from_histograms=stats, method="all", cache=tmp_path / "again" / "cal.cache")
    assert time.perf_counter() - start < 5  # generous; the real figure is in docs/methods.md
    assert cache_bytes(tmp_path / "again") == cache_bytes(tmp_path / "direct")
    assert result.samples == 45
    for m in METHODS:  # and one method at a time, as a direct single-method run writes it
        single = tmp_path / f"{m}.cache"
        calibrate(small / "model.onnx", str(small / "data.npy"), method=m, cache=single)
        replay = tmp_path / f"{m}.replay.cache"
        calibrate(from_histograms=stats, method=m, cache=replay)
        assert replay.read_bytes() == single.read_bytes() == cache_bytes(tmp_path / "direct")[m]


def test_statistics_metadata_describes_model_and_data(small, tmp_path):
    result = run_all(small, tmp_path / "out")
    from int8calib.stats import load

    meta = load(tmp_path / "out" / "stats.npz").meta
    assert meta["samples"] == 45 and meta["tool"].startswith("int8calib ")
    assert len(meta["model_sha256"]) == 64 and len(meta["data_sha256"]) == 64
    assert meta["data"] == sorted(meta["data"]) and len(meta["data"]) == 45
    assert result.statistics.meta == meta


def test_cli_method_all_prints_table_sorted_by_disagreement(small, tmp_path, capsys):
    code = main(["calibrate", str(small / "model.onnx"), "--data", str(small / "data.npy"), "--method", "all",
                 "--percentile", "99.9", "--cache", str(tmp_path / "c.cache"), "--ranges", str(tmp_path / "r.json"), "-q"])
    assert code == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[0].split() == ["tensor", "log2", "spread", *METHODS]
    rows = [line.split() for line in lines[3:]]
    assert len(rows) == 13  # 10 activations and the Gemm's and MatMul's 3 constants
    spreads = [float(r[1]) for r in rows]
    assert spreads == sorted(spreads, reverse=True)
    clip_row = next(r for r in rows if r[0] == "clip2")
    assert float(clip_row[2 + 2 * METHODS.index("minmax") + 1]) == 0.0  # minmax clips nothing
    assert read_cache(tmp_path / "c.percentile.cache").algorithm == "EntropyCalibration2"
    from int8calib.writers.ranges import read_ranges

    for m in METHODS:  # the table's amax (4 significant digits) is the one written
        written = read_ranges(tmp_path / f"r.{m}.json")
        assert float(clip_row[2 + 2 * METHODS.index(m)]) == pytest.approx(written["clip2"], rel=1e-3)


@pytest.mark.parametrize("args, message", [
    (["--method", "minmax", "--percentile", "99"], "--percentile applies to --method percentile"),
    (["--method", "nope"], "unknown method 'nope'"),
    (["--method", "percentile", "--percentile", "0"], "--percentile must be in"),
    (["--method", "legacy", "--quantile", "2"], "quantile must be in"),
])
def test_cli_method_errors_are_one_line_exit_2(small, tmp_path, capsys, args, message):
    code = main(["calibrate", str(small / "model.onnx"), "--data", str(small / "data.npy"), *args, "-q"])
    err = capsys.readouterr().err
    assert code == 2 and message in err and len(err.strip().splitlines()) == 1


def test_missing_output_folder_fails_before_running(small, tmp_path, capsys):
    code = main(["calibrate", str(small / "model.onnx"), "--data", str(small / "data.npy"),
                 "--histograms", str(tmp_path / "no" / "s.npz"), "-q"])
    assert code == 2 and "does not exist" in capsys.readouterr().err


def test_calibrator_classes_report_algorithm_and_legacy_parameters(small):
    import int8calib
    from int8calib.runner.model import load_model, model_inputs

    inputs = model_inputs(load_model(small / "model.onnx"))
    data = str(small / "data.npy")
    assert int8calib.EntropyCalibrator(data, inputs).get_algorithm() == "EntropyCalibration"
    legacy = int8calib.LegacyCalibrator(data, inputs, quantile=0.999, regression_cutoff=0.5)
    assert legacy.get_algorithm() == "LegacyCalibration"
    assert (legacy.get_quantile(), legacy.get_regression_cutoff()) == (0.999, 0.5)
    assert legacy.method_params == {"quantile": 0.999, "regression_cutoff": 0.5}


def test_legacy_calibrator_parameters_reach_the_method(small, tmp_path):
    import int8calib
    from int8calib.calibrator import run_calibrator
    from int8calib.methods import compute_amax
    from int8calib.runner import ActivationRunner

    runner = ActivationRunner(small / "model.onnx")
    legacy = int8calib.LegacyCalibrator(str(small / "data.npy"), runner.inputs, quantile=0.9, regression_cutoff=0.5)
    result = run_calibrator(legacy, runner)
    for t, h in result.statistics.tensors.items():
        assert result.amax[t] == compute_amax("legacy", h, quantile=0.9, regression_cutoff=0.5)


@pytest.mark.acceptance
def test_efficientnet_caches_identical_for_batch_sizes_and_order(effnet_model, even_images, tmp_path):
    images = even_images[:32]
    listing = tmp_path / "calib.txt"
    listing.write_text("\n".join(images) + "\n")
    reference = None
    # Three runs (the model dominates the time): 16 in shuffled order, then 7 and 1 in list order.
    for label, kwargs in [("bs16-shuffled", {"batch_size": 16, "shuffle": 5}), ("bs7", {"batch_size": 7}),
                          ("bs1", {"batch_size": 1})]:
        (tmp_path / label).mkdir()
        calibrate(effnet_model, str(listing), "efficientnet-lite", method="all", cache=tmp_path / label / "cal.cache",
                  histograms=tmp_path / label / "stats.npz", **kwargs)
        got = cache_bytes(tmp_path / label, ORDER_FREE), order_free_statistics(tmp_path / label / "stats.npz")
        if reference is None:
            reference = got
            (tmp_path / "replay").mkdir()
            calibrate(from_histograms=tmp_path / label / "stats.npz", method="all", cache=tmp_path / "replay" / "cal.cache")
            assert cache_bytes(tmp_path / "replay") == cache_bytes(tmp_path / label)
        assert got == reference, label
