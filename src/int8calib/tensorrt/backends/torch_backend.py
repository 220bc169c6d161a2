"""Copies through PyTorch: a CUDA tensor holds the device memory."""

from __future__ import annotations

import numpy as np

from . import BackendUnavailable


class TorchBackend:
    name = "torch"

    def __init__(self, torch):
        self.torch = torch
        if not torch.cuda.is_available():
            raise BackendUnavailable(f"PyTorch {torch.__version__} sees no CUDA GPU")

    def upload(self, host: np.ndarray, buffer=None):
        source = self.torch.from_numpy(np.ascontiguousarray(host))
        tensor = buffer.tensor if buffer is not None else None
        if tensor is None or tuple(tensor.shape) != tuple(source.shape) or tensor.dtype != source.dtype:
            tensor = self.torch.empty(source.shape, dtype=source.dtype, device="cuda")
        tensor.copy_(source)
        # copy_ is ordered on PyTorch's stream; TensorRT reads on its own.
        self.torch.cuda.synchronize()
        return _View(tensor)

    def download(self, ptr: int, shape: tuple[int, ...], dtype: np.dtype) -> np.ndarray:
        # PyTorch wraps a raw device address through the CUDA array interface.
        view = self.torch.as_tensor(_RawDeviceArray(ptr, tuple(shape), np.dtype(dtype)), device="cuda")
        return view.cpu().numpy().copy()

    def free(self, buffer) -> None:
        buffer.tensor = None  # the caching allocator takes the memory back


class _RawDeviceArray:
    """A device address dressed as ``__cuda_array_interface__`` (version 3) for torch.as_tensor."""

    def __init__(self, ptr: int, shape: tuple[int, ...], dtype: np.dtype):
        self.__cuda_array_interface__ = {"shape": shape, "typestr": dtype.str, "data": (ptr, False), "version": 3}


class _View:
    """A CUDA tensor seen as the ``ptr`` / ``nbytes`` the adapter reads."""

    def __init__(self, tensor):
        self.tensor = tensor

    @property
    def ptr(self) -> int:
        return int(self.tensor.data_ptr())

    @property
    def nbytes(self) -> int:
        return int(self.tensor.numel() * self.tensor.element_size())


def create() -> TorchBackend:
    try:
        import torch
    except ImportError as exc:
        raise BackendUnavailable(f"PyTorch is not installed ({exc})") from None
    return TorchBackend(torch)
