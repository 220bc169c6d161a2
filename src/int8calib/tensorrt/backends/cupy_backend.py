"""Copies through CuPy: a CuPy array holds the device memory."""

from __future__ import annotations

import numpy as np

from . import BackendUnavailable


class CupyBackend:
    name = "cupy"

    def __init__(self, cupy):
        self.cp = cupy
        try:
            count = cupy.cuda.runtime.getDeviceCount()
        except Exception as exc:  # CuPy raises CUDARuntimeError or a driver error without a GPU
            raise BackendUnavailable(f"CuPy sees no GPU ({exc})") from None
        if count < 1:
            raise BackendUnavailable("CuPy sees no GPU")

    def upload(self, host: np.ndarray, buffer=None):
        host = np.ascontiguousarray(host)
        array = buffer.array if buffer is not None else None
        if array is None or array.shape != host.shape or array.dtype != host.dtype:
            array = self.cp.empty(host.shape, host.dtype)
        array.set(host)
        # set() runs on CuPy's current stream; TensorRT reads on another one.
        self.cp.cuda.get_current_stream().synchronize()
        return _View(array)

    def download(self, ptr: int, shape: tuple[int, ...], dtype: np.dtype) -> np.ndarray:
        dtype = np.dtype(dtype)
        nbytes = int(np.prod(shape)) * dtype.itemsize
        memory = self.cp.cuda.UnownedMemory(ptr, nbytes, owner=None)
        view = self.cp.ndarray(shape, dtype, self.cp.cuda.MemoryPointer(memory, 0))
        return self.cp.asnumpy(view)

    def free(self, buffer) -> None:
        buffer.array = None  # CuPy's pool takes the memory back once unreferenced


class _View:
    """A CuPy array seen as the ``ptr`` / ``nbytes`` the adapter reads."""

    def __init__(self, array):
        self.array = array

    @property
    def ptr(self) -> int:
        return int(self.array.data.ptr)

    @property
    def nbytes(self) -> int:
        return int(self.array.nbytes)


def create() -> CupyBackend:
    try:
        import cupy
    except ImportError as exc:
        raise BackendUnavailable(f"CuPy is not installed ({exc})") from None
    return CupyBackend(cupy)
