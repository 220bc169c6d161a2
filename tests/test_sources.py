import numpy as np
import pytest

from int8calib.errors import Int8CalibError
from int8calib.sources import data_fingerprint, resolve
from tinymodels import write_images


def test_list_file_resolves_relative_paths_skips_comments_and_tolerates_crlf(tmp_path):
    images = write_images(tmp_path / "imgs", 3)
    lst = tmp_path / "calibration_list_imagenet.txt"
    lst.write_bytes(b"# calibration images\r\nimgs/img002.png\r\n\r\n  imgs/img000.png  \r\n" + str(images[1]).encode() + b"\r\n")
    samples = resolve(lst)
    assert [s.path for s in samples] == [images[2], images[0], images[1]]
    assert samples[0].origin == f"{lst}:2"


def test_directory_is_recursive_and_sorted(tmp_path):
    write_images(tmp_path / "b", 2)
    write_images(tmp_path / "a", 1, ext="jpg")
    (tmp_path / "notes.txt").write_text("not an image")
    samples = resolve(tmp_path)
    assert [s.path.relative_to(tmp_path).as_posix() for s in samples] == ["a/img000.jpg", "b/img000.png", "b/img001.png"]


def test_glob_and_shuffle_are_deterministic(tmp_path):
    write_images(tmp_path, 6)
    ordered = resolve(str(tmp_path / "*.png"))
    assert len(ordered) == 6
    a, b = resolve(str(tmp_path / "*.png"), shuffle=3), resolve(str(tmp_path / "*.png"), shuffle=3)
    assert a == b and sorted(a, key=lambda s: s.path) == ordered and a != ordered


def test_npy_batch_or_single_sample(tmp_path):
    np.save(tmp_path / "batch.npy", np.zeros((5, 3, 4, 4), np.float32))
    np.save(tmp_path / "one.npy", np.zeros((3, 4, 4), np.float32))
    ranks = {"input": 4}
    assert [s.index for s in resolve(tmp_path / "batch.npy", ranks)] == [0, 1, 2, 3, 4]
    assert [s.index for s in resolve(tmp_path / "one.npy", ranks)] == [None]
    np.save(tmp_path / "bad.npy", np.zeros((4, 4), np.float32))
    with pytest.raises(Int8CalibError, match="bad.npy.*rank 4"):
        resolve(tmp_path / "bad.npy", ranks)


def test_npz_needs_an_array_per_input(tmp_path):
    np.savez(tmp_path / "feeds.npz", a=np.zeros((2, 3)), b=np.zeros((2, 5)))
    assert len(resolve(tmp_path / "feeds.npz", {"a": 2, "b": 2})) == 2
    with pytest.raises(Int8CalibError, match=r"no array for model input\(s\) \['c'\]"):
        resolve(tmp_path / "feeds.npz", {"a": 2, "c": 2})


def test_missing_and_empty_inputs_are_clear(tmp_path):
    with pytest.raises(Int8CalibError, match="not found"):
        resolve(tmp_path / "nope.txt")
    (tmp_path / "empty.txt").write_text("# nothing\n\n")
    with pytest.raises(Int8CalibError, match="empty.txt: calibration list has no entries"):
        resolve(tmp_path / "empty.txt")
    with pytest.raises(Int8CalibError, match="matches no files"):
        resolve(str(tmp_path / "*.jpg"))


def test_data_fingerprint_ignores_order_but_not_content(tmp_path):
    images = write_images(tmp_path, 3)
    samples = resolve(tmp_path)
    assert data_fingerprint(samples) == data_fingerprint(samples[::-1])
    before = data_fingerprint(samples)
    write_images(tmp_path, 1, seed=9)  # rewrites img000.png with other pixels
    assert data_fingerprint(resolve(tmp_path)) != before
    assert data_fingerprint(samples[:2]) != data_fingerprint(resolve(tmp_path))
    assert images
