"""Copies through NVIDIA's cuda-python runtime bindings (``cuda.bindings.runtime``, or the
older ``cuda.cudart``): a plain cudaMalloc'd buffer and a synchronous cudaMemcpy."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from . import BackendUnavailable


def _import_cudart():
    try:
        from cuda.bindings import runtime as cudart  # cuda-python >= 12.6
    except ImportError:
        try:
            from cuda import cudart  # older cuda-python
        except ImportError as exc:
            raise BackendUnavailable(f"cuda-python is not installed ({exc})") from None
    return cudart


@dataclass
class CudaBuffer:
    ptr: int
    nbytes: int


class CudaPythonBackend:
    name = "cuda"

    def __init__(self, cudart):
        self.cudart = cudart
        err, count = cudart.cudaGetDeviceCount()
        if self._failed(err) or count < 1:
            raise BackendUnavailable(f"cuda-python sees no GPU ({self._describe(err)})")

    def _failed(self, err) -> bool:
        return int(err) != int(self.cudart.cudaError_t.cudaSuccess)

    def _describe(self, err) -> str:
        return getattr(err, "name", str(err))

    def _check(self, result, what: str):
        err, *rest = result if isinstance(result, tuple) else (result,)
        if self._failed(err):
            raise RuntimeError(f"{what} failed: {self._describe(err)}")
        return rest[0] if len(rest) == 1 else rest

    def upload(self, host: np.ndarray, buffer: CudaBuffer | None) -> CudaBuffer:
        host = np.ascontiguousarray(host)
        if buffer is None or buffer.nbytes < host.nbytes:
            if buffer is not None:
                self.free(buffer)
            buffer = CudaBuffer(int(self._check(self.cudart.cudaMalloc(max(host.nbytes, 1)), "cudaMalloc")), host.nbytes)
        kind = self.cudart.cudaMemcpyKind.cudaMemcpyHostToDevice
        # A synchronous copy: the data is on the GPU before TensorRT reads it on its own stream.
        self._check(self.cudart.cudaMemcpy(buffer.ptr, host.ctypes.data, host.nbytes, kind), "cudaMemcpy to device")
        return buffer

    def download(self, ptr: int, shape: tuple[int, ...], dtype: np.dtype) -> np.ndarray:
        out = np.empty(shape, dtype)
        kind = self.cudart.cudaMemcpyKind.cudaMemcpyDeviceToHost
        self._check(self.cudart.cudaMemcpy(out.ctypes.data, ptr, out.nbytes, kind), "cudaMemcpy to host")
        return out

    def free(self, buffer: CudaBuffer) -> None:
        self._check(self.cudart.cudaFree(buffer.ptr), "cudaFree")


def create() -> CudaPythonBackend:
    return CudaPythonBackend(_import_cudart())
