"""On a machine with an NVIDIA GPU: what ``get_batch`` points to is the preprocessed batch.

For every installed host-to-device backend (cuda-python, CuPy, PyTorch), the adapter
uploads each batch; the test copies the memory behind every returned pointer back to
the host through *every* working backend (so a backend cannot agree only with itself)
and compares it with a batch built independently from ``Preprocess`` and the cyclic
padding rule. TensorRT itself is replaced by tests/fake_tensorrt.py: only the copies
need the GPU. Skipped when no backend can reach a GPU.
"""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper
from PIL import Image

sys.path.insert(0, str(Path(__file__).parent))
import fake_tensorrt  # noqa: E402

from int8calib.preprocess import Preprocess  # noqa: E402
from int8calib.tensorrt import backends, get_class  # noqa: E402

STATUS = backends.available()
WORKING = [name for name, state in STATUS.items() if state == "ok"]
pytestmark = pytest.mark.skipif(not WORKING, reason=f"no GPU copy backend works here: {STATUS}")


def _model(path: Path, inputs: dict[str, list]) -> Path:
    ins = [helper.make_tensor_value_info(n, TensorProto.FLOAT, s) for n, s in inputs.items()]
    nodes = [helper.make_node("Relu", [n], [f"{n}_out"]) for n in inputs]
    outs = [helper.make_tensor_value_info(f"{n}_out", TensorProto.FLOAT, None) for n in inputs]
    onnx.save(helper.make_model(helper.make_graph(nodes, "g", ins, outs), opset_imports=[helper.make_opsetid("", 17)], ir_version=8), path)
    return path


@pytest.fixture(scope="module")
def trt():
    return fake_tensorrt.make("8.6.1")


@pytest.fixture(scope="module")
def images(tmp_path_factory) -> list[Path]:
    folder = tmp_path_factory.mktemp("images")
    rng = np.random.default_rng(7)
    paths = []
    for i, (h, w) in enumerate([(300, 400), (256, 256), (480, 320), (240, 260), (500, 375)]):
        path = folder / f"img{i}.png"
        Image.fromarray(rng.integers(0, 256, (h, w, 3), dtype=np.uint8)).save(path)
        paths.append(path)
    return paths


def _read_back(ptr: int, shape, dtype) -> dict[str, np.ndarray]:
    return {reader: backends.load(reader).download(ptr, shape, dtype) for reader in WORKING}


@pytest.mark.parametrize("backend", WORKING)
def test_get_batch_points_to_the_preprocessed_batch(backend, trt, images, tmp_path):
    listing = tmp_path / "calib_list.txt"
    listing.write_text("\n".join(str(p) for p in images) + "\n")
    model = _model(tmp_path / "m.onnx", {"input": ["N", 3, 224, 224]})
    cal = get_class("EntropyCalibrator2", trt)(str(listing), model=str(model), preprocess="imagenet",
                                               batch_size=4, backend=backend)
    assert cal.backend.name == backend
    pre = Preprocess.load("imagenet")
    expected = [np.stack([pre(images[i]) for i in rows]) for rows in ([0, 1, 2, 3], [4, 4, 4, 4])]
    served = 0
    while (ptrs := cal.get_batch(["input"])) is not None:
        (ptr,) = ptrs
        assert isinstance(ptr, int) and ptr != 0
        for reader, got in _read_back(ptr, (4, 3, 224, 224), np.float32).items():
            np.testing.assert_array_equal(got, expected[served], err_msg=f"uploaded by {backend}, read by {reader}")
        served += 1
    assert served == 2 and cal.samples_served == 5 and cal.error is None


@pytest.mark.parametrize("backend", WORKING)
def test_two_inputs_are_matched_by_name(backend, trt, tmp_path):
    rng = np.random.default_rng(3)
    a = rng.normal(size=(5, 8)).astype(np.float32)
    b = rng.normal(size=(5, 2, 3)).astype(np.float32)
    np.savez(tmp_path / "d.npz", a=a, b=b)
    model = _model(tmp_path / "m.onnx", {"a": ["N", 8], "b": ["N", 2, 3]})
    cal = get_class("MinMaxCalibrator", trt)(str(tmp_path / "d.npz"), model=str(model), batch_size=3, backend=backend)
    # Each batch is read back before the next call: buffers live until then.
    for rows in ([0, 1, 2], [3, 4, 3]):
        ptr_b, ptr_a = cal.get_batch(["b", "a"])
        for reader, got in _read_back(ptr_b, (3, 2, 3), np.float32).items():
            np.testing.assert_array_equal(got, b[rows], err_msg=f"b uploaded by {backend}, read by {reader}")
        for reader, got in _read_back(ptr_a, (3, 8), np.float32).items():
            np.testing.assert_array_equal(got, a[rows], err_msg=f"a uploaded by {backend}, read by {reader}")
    assert cal.get_batch(["b", "a"]) is None
