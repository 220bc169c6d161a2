"""NVIDIA's TensorRT cookbook (trt-samples-for-hackathon-cn), regenerated: the data its samples made."""

from __future__ import annotations

from functools import lru_cache

import numpy as np


def glibc_rand(seed: int, n: int) -> np.ndarray:
    """glibc's rand() after srand(seed): the TYPE_3 additive feedback generator."""
    r = [0] * (344 + n)
    r[0] = seed
    for i in range(1, 31):
        r[i] = (16807 * r[i - 1]) % 2147483647
    for i in range(31, 34):
        r[i] = r[i - 31]
    for i in range(34, 344 + n):
        r[i] = (r[i - 31] + r[i - 3]) & 0xFFFFFFFF
    return np.array(r[344:], np.int64) >> 1


# cookbook/02-API/Int8-PTQ/C++/model.INT8Cache (commit 794f2f9), TensorRT 8.6.0: its four Constant layers,
# (layer, values, line): the first fully connected layer's weight [3136, 1024] and bias, the second's [1024, 10] and bias.
COOKBOOK_8_6_CONSTANTS = [(7, 3136 * 1024, "3c010a13"), (9, 1024, "3c00f303"), (12, 10240, "3c0101ae"), (14, 10, "3bf4d0cd")]


@lru_cache(maxsize=1)
def cookbook_8_6_weights() -> np.ndarray:
    """main.cpp's weights: srand(31193); float(rand()) / RAND_MAX * 2 - 1 in float32, each Constant
    layer taking the first values of the stream (made once per test session: about a second)."""
    count = max(n for _, n, _ in COOKBOOK_8_6_CONSTANTS)
    return glibc_rand(31193, count).astype(np.float32) / np.float32(2147483647) * np.float32(2) - np.float32(1)
