"""Property tests of the cache reader and writer, and the zero-tensor scale."""

from __future__ import annotations

import struct

import numpy as np
from hypothesis import given, settings, strategies as st

from int8calib.errors import CacheFormatError
from int8calib.writers.cache import ZERO_TENSOR_SCALE, format_cache, parse_cache, read_cache
from int8calib.writers.ranges import format_ranges

# Any name without a line break (TensorRT's names may hold spaces, colons, brackets, \x0b, \u2028 ...).
NAME = st.text(st.characters(blacklist_categories=("Cs",), blacklist_characters="\r\n"), min_size=1, max_size=30)
# Every positive normal float32 (the scales TensorRT can use).
NORMAL_SCALE = st.floats(min_value=2.0**-126, max_value=float(np.finfo(np.float32).max), width=32, allow_nan=False)


@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=400))
def test_reader_raises_only_its_format_error_on_any_bytes(tmp_path_factory, data):
    path = tmp_path_factory.mktemp("c") / "cache"
    path.write_bytes(data)
    try:
        read_cache(path)
    except CacheFormatError:
        pass


@settings(max_examples=300, deadline=None)
@given(st.text(max_size=300))
def test_parser_raises_only_its_format_error_on_any_text(text):
    try:
        parse_cache(text)
    except CacheFormatError:
        pass


@settings(max_examples=300, deadline=None)
@given(st.lists(st.text(alphabet="TRT-0123456789abcdefEntropyCalibration2:\n x", max_size=40), max_size=8))
def test_parser_on_near_miss_caches(lines):
    try:
        parse_cache("TRT-8601-EntropyCalibration2\n" + "\n".join(lines))
    except CacheFormatError:
        pass


@settings(max_examples=200, deadline=None)
@given(st.dictionaries(NAME, NORMAL_SCALE, max_size=20))
def test_round_trip_of_any_normal_scale_is_exact(scales):
    amax = {n: s * 127.0 for n, s in scales.items()}  # exact in float64
    cache = parse_cache(format_cache(amax, "MinMaxCalibration", 10003))
    assert cache.version == 10003 and cache.algorithm == "MinMaxCalibration"
    assert cache.scales == scales  # bit for bit, names and order
    assert list(cache.scales) == list(scales)


@given(st.floats(min_value=0.0, max_value=127 * 2.0**-126, exclude_max=True))
def test_zero_and_subnormal_scales_become_the_floor(a):
    cache = parse_cache(format_cache({"t": a}, "EntropyCalibration2"))
    assert cache.scales["t"] == ZERO_TENSOR_SCALE == 2.0**-14


def test_floor_is_normal_in_fp16_and_fp32():
    assert np.float16(ZERO_TENSOR_SCALE) == ZERO_TENSOR_SCALE and ZERO_TENSOR_SCALE >= np.finfo(np.float16).tiny
    assert np.isfinite(np.float16(1 / ZERO_TENSOR_SCALE))
    assert format_cache({"z": 0.0}, "EntropyCalibration2").splitlines()[1] == "z: " + struct.pack(">f", 2.0**-14).hex()
    assert '"z": 0.00775146484375' in format_ranges({"z": 0.0})  # 127 * 2^-14, exactly
