import numpy as np
import pytest

from int8calib.batching import BatchLoader
from int8calib.errors import Int8CalibError
from int8calib.preprocess import Preprocess
from int8calib.runner.model import InputInfo
from int8calib.sources import resolve
from tinymodels import write_images

PRE = Preprocess.from_dict({"crop": 8, "mean": [0, 0, 0], "std": [1, 1, 1]})


def test_last_partial_batch_is_kept_as_it_is(tmp_path):
    write_images(tmp_path, 7)
    loader = BatchLoader(resolve(tmp_path), [InputInfo("input", ("N", 3, 8, 8), np.dtype("float32"))], PRE, batch_size=3)
    batches = list(loader)
    assert [b.n for b in batches] == [3, 3, 1]
    assert [b.feeds["input"].shape[0] for b in batches] == [3, 3, 1]
    assert len(loader) == 3


def test_fixed_batch_models_get_zero_padding_marked_by_n(tmp_path):
    write_images(tmp_path, 5)
    loader = BatchLoader(resolve(tmp_path), [InputInfo("input", (4, 3, 8, 8), np.dtype("float32"))], PRE, batch_size=32)
    batches = list(loader)
    assert loader.batch_size == 4
    assert [b.n for b in batches] == [4, 1]
    last = batches[-1].feeds["input"]
    assert last.shape == (4, 3, 8, 8) and not last[1:].any() and last[0].any()


def test_pixels_reach_the_batch_unchanged(tmp_path):
    from PIL import Image

    arr = np.arange(8 * 8 * 3, dtype=np.uint8).reshape(8, 8, 3)
    Image.fromarray(arr).save(tmp_path / "a.png")
    (batch,) = BatchLoader(resolve(tmp_path), [InputInfo("input", ("N", 3, 8, 8), np.dtype("float32"))], PRE)
    np.testing.assert_array_equal(batch.feeds["input"][0], arr.transpose(2, 0, 1).astype(np.float32))


def test_float16_inputs_are_cast(tmp_path):
    np.save(tmp_path / "x.npy", np.ones((3, 2, 4), np.float32))
    info = InputInfo("x", ("N", 2, 4), np.dtype("float16"))
    (batch,) = BatchLoader(resolve(tmp_path / "x.npy", {"x": 3}), [info], batch_size=8)
    assert batch.feeds["x"].dtype == np.float16 and batch.n == 3


def test_shape_mismatch_names_the_input_and_sample(tmp_path):
    np.save(tmp_path / "x.npy", np.ones((2, 2, 5), np.float32))
    info = InputInfo("x", ("N", 2, 4), np.dtype("float32"))
    with pytest.raises(Int8CalibError, match=r"input 'x'.*axis 2.*x\.npy"):
        list(BatchLoader(resolve(tmp_path / "x.npy", {"x": 3}), [info]))


def test_images_need_a_preprocessing_spec_and_a_single_input(tmp_path):
    write_images(tmp_path, 1)
    info = InputInfo("input", ("N", 3, 8, 8), np.dtype("float32"))
    with pytest.raises(Int8CalibError, match="--preprocess"):
        BatchLoader(resolve(tmp_path), [info])
    with pytest.raises(Int8CalibError, match="2 inputs"):
        BatchLoader(resolve(tmp_path), [info, InputInfo("b", ("N", 1), np.dtype("float32"))], PRE)


def _prefetch_threads_stop(timeout: float = 5.0) -> bool:
    """Whether every prefetch thread ends within ``timeout`` seconds once garbage is collected."""
    import gc
    import threading
    import time

    gc.collect()
    deadline = time.monotonic() + timeout
    while any(t.name == "int8calib-prefetch" for t in threading.enumerate()):
        if time.monotonic() > deadline:
            return False
        time.sleep(0.05)
    return True


def test_prefetch_starts_producing_before_the_first_next_and_stops_when_dropped():
    import threading

    from int8calib.batching import prefetch

    started = threading.Event()

    def items():
        started.set()
        yield from range(100)

    it = prefetch(items(), depth=1)
    assert started.wait(5)  # producing already, nobody asked yet
    assert next(it) == 0
    del it
    assert _prefetch_threads_stop()

    unstarted = prefetch(iter(range(100)), depth=1)  # dropped before its first next
    del unstarted
    assert _prefetch_threads_stop()
