import struct

import pytest

from int8calib.errors import CacheFormatError
from int8calib.writers.cache import format_cache, parse_cache, read_cache, write_cache


def test_written_lines_are_big_endian_float32_of_amax_over_127(tmp_path):
    path = tmp_path / "calibration.cache"
    write_cache(path, {"input": 127.0, "conv": 2.54}, "EntropyCalibration2", 100900)
    lines = path.read_text().splitlines()
    assert lines[0] == "TRT-100900-EntropyCalibration2"
    assert lines[1] == "input: 3f800000"  # scale 1.0
    assert lines[2] == "conv: " + struct.pack(">f", 2.54 / 127).hex()
    assert lines[2] == "conv: 3ca3d70a"  # 0.02 as float32, derived by hand: 0x3CA3D70A


def test_round_trip_keeps_names_order_and_float32_scales():
    amax = {"input": 2.0, "(Unnamed Layer* 46) [Constant]_output": 0.5, "a:b": 1e-3}
    cache = parse_cache(format_cache(amax, "MinMaxCalibration"))
    assert cache.version == 8601 and cache.algorithm == "MinMaxCalibration"
    assert list(cache.scales) == list(amax)
    for name, a in amax.items():
        assert cache.scales[name] == struct.unpack(">f", struct.pack(">f", a / 127))[0]


def test_reader_accepts_what_tensorrt_writes_in_the_wild():
    text = (
        "TRT-8601-EntropyCalibration2\n"
        "input: 3c010a14\n"
        "(Unnamed Layer* 46) [Constant]_output: 0\n"
        "onnx::Conv_123: 7f800000\n"
        "node [weird] *name*: 3F800000"  # no trailing newline, upper-case hex
    )
    cache = parse_cache(text)
    assert cache.scales["(Unnamed Layer* 46) [Constant]_output"] == 0.0
    assert cache.scales["onnx::Conv_123"] == float("inf")
    assert cache.scales["node [weird] *name*"] == 1.0
    # 0x3c010a14: exponent 0x78 -> 2**-7, mantissa 1 + 0x010a14 / 2**23
    assert cache.scales["input"] == 2**-7 * (1 + 0x010A14 / 2**23)


@pytest.mark.parametrize(
    "text, needle",
    [
        ("", ":1: empty"),
        ("TRT-8601\ninput: 3c010a14\n", ":1: bad header"),
        ("TRT-8601-EntropyCalibration2\ninput 3c010a14\n", ":2: expected"),
        ("TRT-8601-EntropyCalibration2\ninput: 3c01zz14\n", ":2: bad hex"),
        ("TRT-8601-EntropyCalibration2\ninput: 123456789\n", ":2: bad hex"),
        ("TRT-8601-EntropyCalibration2\na: 1\n\na: 2\n", ":4: duplicate tensor 'a'"),
    ],
)
def test_malformed_caches_name_the_line(text, needle):
    with pytest.raises(CacheFormatError, match=needle):
        parse_cache(text, "c.cache")


def test_read_cache_reports_missing_and_binary_files(tmp_path):
    with pytest.raises(CacheFormatError, match="not found"):
        read_cache(tmp_path / "none.cache")
    (tmp_path / "bin.cache").write_bytes(b"\xff\xfe\x00")
    with pytest.raises(CacheFormatError, match="not UTF-8"):
        read_cache(tmp_path / "bin.cache")


def test_writer_refuses_values_tensorrt_cannot_use():
    with pytest.raises(ValueError, match="not finite"):
        format_cache({"x": float("nan")}, "EntropyCalibration2")
    with pytest.raises(ValueError, match="unknown TensorRT calibration algorithm"):
        format_cache({"x": 1.0}, "Percentile")
