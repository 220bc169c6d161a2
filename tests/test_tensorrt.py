"""int8calib.tensorrt driven through a stand-in ``tensorrt`` module (tests/fake_tensorrt.py)
and a fake device memory: the calling protocol, padding, names, caches, build routes."""

from __future__ import annotations

import ctypes
import logging
import sys
import types
from pathlib import Path

import numpy as np
import onnx
import pytest
from hypothesis import given, settings, strategies as st
from onnx import TensorProto, helper

sys.path.insert(0, str(Path(__file__).parent))
import fake_tensorrt  # noqa: E402

from int8calib.errors import Int8CalibError  # noqa: E402
from int8calib.methods import available  # noqa: E402
from int8calib.tensorrt import full_batch, get_class  # noqa: E402
from int8calib.tensorrt.backends import get_backend  # noqa: E402
from int8calib.writers.cache import parse_cache  # noqa: E402


def relu_model(path: Path, inputs: dict[str, list], opset: int = 17) -> Path:
    """A model that applies Relu to each input (and adds them when there are two)."""
    ins = [helper.make_tensor_value_info(n, TensorProto.FLOAT, s) for n, s in inputs.items()]
    names = list(inputs)
    nodes = [helper.make_node("Relu", [n], [f"{n}_relu"]) for n in names]
    out = f"{names[0]}_relu"
    if len(names) == 2:
        nodes.append(helper.make_node("Add", [f"{names[0]}_relu", f"{names[1]}_relu"], ["sum"]))
        out = "sum"
    graph = helper.make_graph(nodes, "g", ins, [helper.make_tensor_value_info(out, TensorProto.FLOAT, None)])
    # IR 8 keeps the model loadable by older ONNX Runtime builds (the GPU machine has 1.30).
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", opset)], ir_version=8)
    onnx.save(model, path)
    return path


@pytest.fixture
def trt(monkeypatch):
    module = fake_tensorrt.make("10.0.1")
    monkeypatch.setitem(sys.modules, "tensorrt", module)
    return module


@pytest.fixture
def data10(tmp_path):
    """10 samples of 4 floats with distinct values; sample i is i*10 + [0, 1, 2, 3] - 50."""
    arr = (np.arange(10)[:, None] * 10 + np.arange(4)[None, :] - 50).astype(np.float32)
    np.save(tmp_path / "x.npy", arr)
    return arr, tmp_path / "x.npy"


def make(trt, name, data, model, **kw):
    return get_class(name, trt)(str(data), model=str(model), backend=fake_tensorrt.FakeBackend(), **kw)


# ---- without TensorRT -----------------------------------------------------------
def test_import_does_not_need_tensorrt_and_use_says_what_is_missing(monkeypatch, tmp_path):
    monkeypatch.setitem(sys.modules, "tensorrt", None)  # "import tensorrt" raises ImportError
    import int8calib.tensorrt as itrt

    cls = itrt.EntropyCalibrator2
    with pytest.raises(Int8CalibError, match="needs TensorRT's Python package"):
        cls("calib_list.txt", model="model.onnx")


def test_tensorrt_11_without_calibrators_points_to_the_qdq_build(monkeypatch):
    module = fake_tensorrt.make("11.0.0", calibrators=False)
    with pytest.raises(Int8CalibError, match="removed in 11.0.*int8calib build"):
        get_class("EntropyCalibrator2", module)("x.npy", model="m.onnx")


def test_classes_subclass_the_matching_tensorrt_base(trt):
    for name, base in [("EntropyCalibrator2", "IInt8EntropyCalibrator2"), ("EntropyCalibrator", "IInt8EntropyCalibrator"),
                       ("MinMaxCalibrator", "IInt8MinMaxCalibrator"), ("LegacyCalibrator", "IInt8LegacyCalibrator")]:
        assert issubclass(get_class(name, trt), getattr(trt, base))
    import int8calib.tensorrt as itrt

    assert itrt.MinMaxCalibrator is get_class("MinMaxCalibrator", trt)  # module attribute uses the loaded tensorrt


# ---- the calling protocol ---------------------------------------------------------
def test_protocol_cache_read_first_batches_until_exhausted_then_cache_written(trt, tmp_path, data10):
    arr, npy = data10
    model = relu_model(tmp_path / "m.onnx", {"x": ["N", 4]})
    cache = tmp_path / "calibration.cache"
    cal = make(trt, "EntropyCalibrator2", npy, model, batch_size=4, cache_file=cache)
    assert cal._base_initialised
    seen = fake_tensorrt.calibrate(trt, cal, {"x": (4, 4)}, {"x": np.float32})

    kinds = [c[0] for c in trt.calls]
    assert kinds == ["read_calibration_cache", "get_batch_size", "get_batch", "get_batch", "get_batch", "get_batch",
                     "get_algorithm", "write_calibration_cache"]
    assert [c[1] for c in trt.calls if c[0] == "get_batch"] == [True, True, True, False]
    assert trt.calls[0] == ("read_calibration_cache", False)
    assert trt.calls[-2] == ("get_algorithm", trt.CalibrationAlgoType.ENTROPY_CALIBRATION_2)
    # Batches are exactly the data in order; the last (2 real rows) is padded with rows 8, 9, 8, 9.
    np.testing.assert_array_equal(trt.batches[0]["x"], arr[0:4])
    np.testing.assert_array_equal(trt.batches[1]["x"], arr[4:8])
    np.testing.assert_array_equal(trt.batches[2]["x"], arr[[8, 9, 8, 9]])
    assert cal.batches_served == 3 and cal.samples_served == 10
    # The cache TensorRT wrote went through: header and the scale of max|x| = 50.
    parsed = parse_cache(cache.read_text())
    assert parsed.algorithm == "EntropyCalibration2"
    assert parsed.amax["x"] == pytest.approx(seen["x"]) == pytest.approx(float(np.abs(arr).max()))

    # A second build reads the cache and touches no data.
    trt.calls.clear()
    again = make(trt, "EntropyCalibrator2", npy, model, batch_size=4, cache_file=cache)
    fake_tensorrt.calibrate(trt, again, {"x": (4, 4)}, {"x": np.float32})
    assert trt.calls == [("read_calibration_cache", True)]
    assert again.cache_used and again.batches_served == 0


def test_cache_of_another_algorithm_is_not_used(trt, tmp_path, data10):
    _, npy = data10
    model = relu_model(tmp_path / "m.onnx", {"x": ["N", 4]})
    cache = tmp_path / "c.cache"
    cache.write_text("TRT-8601-MinMaxCalibration\nx: 3c010204\nx_relu: 3c010204\n")  # every tensor of the model
    cal = make(trt, "EntropyCalibrator2", npy, model, batch_size=5, cache_file=cache)
    assert cal.read_calibration_cache() is None
    mm = make(trt, "MinMaxCalibrator", npy, model, batch_size=5, cache_file=cache)
    assert mm.read_calibration_cache() == cache.read_bytes()
    assert mm.get_algorithm() == trt.CalibrationAlgoType.MINMAX_CALIBRATION


def test_pointers_follow_the_order_of_names_for_two_inputs(trt, tmp_path):
    model = relu_model(tmp_path / "m.onnx", {"a": ["N", 2], "b": ["N", 3]})
    a = np.arange(6, dtype=np.float32).reshape(3, 2)
    b = -np.arange(9, dtype=np.float32).reshape(3, 3)
    np.savez(tmp_path / "d.npz", a=a, b=b)
    cal = make(trt, "MinMaxCalibrator", tmp_path / "d.npz", model, batch_size=3)
    ptrs = cal.get_batch(["b", "a"])
    np.testing.assert_array_equal(cal.backend.download(ptrs[0], (3, 3), np.float32), b)
    np.testing.assert_array_equal(cal.backend.download(ptrs[1], (3, 2), np.float32), a)


def test_buffers_live_until_the_next_call_and_are_freed_at_the_end(trt, tmp_path, data10):
    arr, npy = data10
    model = relu_model(tmp_path / "m.onnx", {"x": ["N", 4]})
    cal = make(trt, "EntropyCalibrator2", npy, model, batch_size=6)
    backend = cal.backend
    (p1,) = cal.get_batch(["x"])
    np.testing.assert_array_equal(backend.download(p1, (6, 4), np.float32), arr[:6])
    (p2,) = cal.get_batch(["x"])
    np.testing.assert_array_equal(backend.download(p2, (6, 4), np.float32), arr[[6, 7, 8, 9, 6, 7]])
    assert backend.freed == []
    assert cal.get_batch(["x"]) is None
    assert backend.freed == [p2] and backend.memory == {}


def test_unknown_input_stops_calibration_and_no_cache_is_written(trt, tmp_path, data10, caplog):
    _, npy = data10
    model = relu_model(tmp_path / "m.onnx", {"x": ["N", 4]})
    cache = tmp_path / "c.cache"
    cal = make(trt, "EntropyCalibrator2", npy, model, batch_size=4, cache_file=cache)
    with caplog.at_level(logging.ERROR, logger="int8calib"):
        assert cal.get_batch(["images"]) is None
    assert isinstance(cal.error, Int8CalibError) and "'images'" in str(cal.error)
    cal.write_calibration_cache(b"TRT-8601-EntropyCalibration2\nx: 3c010204\n")
    assert not cache.exists()
    assert "calibration stopped" in caplog.text


def test_fixed_batch_model_pads_with_real_rows_not_zeros(trt, tmp_path, data10):
    arr, npy = data10
    model = relu_model(tmp_path / "m.onnx", {"x": [4, 4]})
    cal = make(trt, "EntropyCalibrator2", npy, model, batch_size=3)  # the model's fixed 4 wins
    assert cal.get_batch_size() == 4
    fake_tensorrt.calibrate(trt, cal, {"x": (4, 4)}, {"x": np.float32})
    np.testing.assert_array_equal(trt.batches[-1]["x"], arr[[8, 9, 8, 9]])


@settings(max_examples=60, deadline=None)
@given(st.integers(1, 9), st.integers(1, 9), st.integers(0, 3))
def test_full_batch_repeats_real_rows_cyclically(n, extra, pad_rows):
    size = n + extra - 1  # size >= n
    rows = np.random.default_rng(n).normal(size=(n + pad_rows, 3)).astype(np.float32)
    rows[n:] = 0  # what a loader's zero padding looks like
    out = full_batch(rows, n, max(size, n))
    assert out.shape == (max(size, n), 3)
    for i in range(out.shape[0]):
        np.testing.assert_array_equal(out[i], rows[i % n])


def test_cache_only_calibrator_serves_the_file_and_refuses_to_calibrate(trt, tmp_path):
    cache = tmp_path / "c.cache"
    cache.write_text("TRT-8601-EntropyCalibration2\nx: 3c010204\n")
    cal = get_class("EntropyCalibrator2", trt)(cache_file=cache)
    assert cal.read_calibration_cache() == cache.read_bytes()
    missing = get_class("EntropyCalibrator2", trt)(cache_file=tmp_path / "none.cache")
    assert missing.read_calibration_cache() is None
    assert missing.get_batch(["x"]) is None and "no calibration data" in str(missing.error)


# ---- LegacyCalibrator ----------------------------------------------------------------
needs_legacy = pytest.mark.skipif("legacy" not in available(), reason="methods registry has no 'legacy' yet")


@needs_legacy
def test_legacy_calibrator_hooks(trt, tmp_path, data10):
    _, npy = data10
    model = relu_model(tmp_path / "m.onnx", {"x": ["N", 4]})
    hist = tmp_path / "hist.bin"
    cal = make(trt, "LegacyCalibrator", npy, model, quantile=0.25, regression_cutoff=0.75, histogram_cache_file=hist)
    assert (cal.get_quantile(), cal.get_regression_cutoff()) == (0.25, 0.75)
    assert cal.get_algorithm() == trt.CalibrationAlgoType.LEGACY_CALIBRATION
    assert cal.read_histogram_cache(0) is None
    payload = b"\x01\x02histogram\x00\xff"
    raw = ctypes.create_string_buffer(payload, len(payload))
    cal.write_histogram_cache(ctypes.addressof(raw), len(payload))  # TensorRT may hand an address
    assert cal.read_histogram_cache(len(payload)) == payload
    cal.write_histogram_cache(memoryview(payload[:4]))  # or a buffer
    assert hist.read_bytes() == payload[:4]
    with pytest.raises(Int8CalibError, match="quantile"):
        make(trt, "LegacyCalibrator", npy, model, quantile=1.5)


# ---- dynamic shapes ------------------------------------------------------------------
def test_attach_sets_calibrator_and_calibration_profile_from_the_data(trt, tmp_path, data10):
    _, npy = data10
    model = relu_model(tmp_path / "m.onnx", {"x": ["N", 4]})
    cal = make(trt, "EntropyCalibrator2", npy, model, batch_size=8)
    builder = trt.Builder(trt.Logger())
    network = builder.create_network(0)
    trt.OnnxParser(network, None).parse(model.read_bytes())
    config = builder.create_builder_config()
    profile = cal.attach(config, builder, network)
    assert config.int8_calibrator is cal
    assert config.calibration_profile is profile
    assert profile.shapes == {"x": ((8, 4), (8, 4), (8, 4))}

    static = builder.create_network(0)
    trt.OnnxParser(static, None).parse(relu_model(tmp_path / "s.onnx", {"x": [8, 4]}).read_bytes())
    config2 = builder.create_builder_config()
    assert cal.attach(config2, builder, static) is None and config2.calibration_profile is None


# ---- copy backends ---------------------------------------------------------------------
def test_backend_choice(monkeypatch):
    fake = fake_tensorrt.FakeBackend()
    assert get_backend(fake) is fake
    with pytest.raises(Int8CalibError, match="unknown CUDA copy backend 'opencl'"):
        get_backend("opencl")
    from int8calib.tensorrt import backends

    def unavailable(name):
        raise backends.BackendUnavailable(f"{name} missing")

    monkeypatch.setattr(backends, "load", unavailable)
    with pytest.raises(Int8CalibError, match="install cuda-python, CuPy or PyTorch.*cuda: cuda missing"):
        get_backend()
    monkeypatch.setenv(backends.ENV, "torch")
    with pytest.raises(Int8CalibError, match="'torch' cannot be used: torch missing"):
        get_backend()


# ---- the tutorial one-liner on the real model and photos ------------------------------
@pytest.mark.acceptance
def test_one_line_replacement_on_efficientnet(trt, effnet_model, even_images, tmp_path):
    from int8calib.preprocess import Preprocess

    images = even_images[:10]
    listing = tmp_path / "calib_list.txt"
    listing.write_text("\n".join(images) + "\n")
    cache = tmp_path / "calibration.cache"
    import int8calib.tensorrt

    config = types.SimpleNamespace(int8_calibrator=None)  # the user's builder config
    config.int8_calibrator = int8calib.tensorrt.EntropyCalibrator2(
        str(listing), model=str(effnet_model), preprocess="efficientnet-lite", cache_file=str(cache),
        batch_size=4, backend=fake_tensorrt.FakeBackend())
    fake_tensorrt.calibrate(trt, config.int8_calibrator, {"input": (4, 3, 224, 224)}, {"input": np.float32})
    pre = Preprocess.load("efficientnet-lite")
    rows = [[0, 1, 2, 3], [4, 5, 6, 7], [8, 9, 8, 9]]
    assert len(trt.batches) == 3
    for batch, idx in zip(trt.batches, rows):
        np.testing.assert_array_equal(batch["input"], np.stack([pre(images[i]) for i in idx]))
    assert parse_cache(cache.read_text()).algorithm == "EntropyCalibration2"
