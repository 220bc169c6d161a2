"""Host-to-device copies for calibration batches, through whichever CUDA library is installed.

TensorRT's ``get_batch`` wants device pointers. Three small backends can produce them:

========== ======================================== ==================================
name       package                                  module here
========== ======================================== ==================================
cuda       cuda-python (``cuda.bindings`` / ``cuda.cudart``)  :mod:`.cuda_python`
cupy       CuPy (``cupy-cuda12x`` / ``cupy-cuda13x``)         :mod:`.cupy_backend`
torch      PyTorch with CUDA                                   :mod:`.torch_backend`
========== ======================================== ==================================

:func:`get_backend` picks the first one that imports (in that order: cuda-python is the
thinnest), unless a name is given or ``INT8CALIB_CUDA_BACKEND`` names one. Any object with
the :class:`Backend` methods can be passed instead (the tests pass a fake).
"""

from __future__ import annotations

import importlib
import os
from typing import Protocol

import numpy as np

from ...errors import Int8CalibError

MODULES = {"cuda": "cuda_python", "cupy": "cupy_backend", "torch": "torch_backend"}
ENV = "INT8CALIB_CUDA_BACKEND"


class DeviceBuffer(Protocol):
    ptr: int  # the device address TensorRT reads
    nbytes: int


class Backend(Protocol):
    name: str

    def upload(self, host: np.ndarray, buffer: "DeviceBuffer | None") -> DeviceBuffer:
        """Copy ``host`` to the GPU, reusing ``buffer`` when it is large enough; finish before returning."""

    def download(self, ptr: int, shape: tuple[int, ...], dtype: np.dtype) -> np.ndarray:
        """Copy ``prod(shape)`` elements at device address ``ptr`` back to a new host array."""

    def free(self, buffer: DeviceBuffer) -> None:
        """Release ``buffer``'s device memory."""


class BackendUnavailable(Exception):
    """The backend's package is missing or cannot reach a GPU (why is the message)."""


def load(name: str) -> Backend:
    """The backend called ``name``; :class:`BackendUnavailable` when it cannot be used here."""
    if name not in MODULES:
        raise Int8CalibError(f"unknown CUDA copy backend {name!r}; choose from {', '.join(MODULES)}")
    module = importlib.import_module(f"{__name__}.{MODULES[name]}")
    return module.create()


def available() -> dict[str, str]:
    """{backend name: 'ok' or why it cannot be used} for every backend, without raising."""
    out = {}
    for name in MODULES:
        try:
            load(name)
            out[name] = "ok"
        except BackendUnavailable as exc:
            out[name] = str(exc)
    return out


def get_backend(choice: "str | Backend | None" = None) -> Backend:
    """The backend to copy batches with: ``choice`` (a name or an object), else the
    ``INT8CALIB_CUDA_BACKEND`` environment variable, else the first that works."""
    if choice is not None and not isinstance(choice, str):
        return choice
    name = choice or os.environ.get(ENV) or None
    if name:
        try:
            return load(name)
        except BackendUnavailable as exc:
            raise Int8CalibError(f"CUDA copy backend {name!r} cannot be used: {exc}") from None
    reasons = []
    for candidate in MODULES:
        try:
            return load(candidate)
        except BackendUnavailable as exc:
            reasons.append(f"{candidate}: {exc}")
    raise Int8CalibError(
        "no way to copy calibration batches to the GPU: install cuda-python, CuPy or PyTorch with CUDA ("
        + "; ".join(reasons) + ")"
    )
