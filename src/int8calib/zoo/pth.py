"""Reading a PyTorch state dict (legacy ``torch.save`` format) into numpy, without PyTorch.

A ``.pth`` file is pickle, and unpickling runs whatever callables the file names; so a
general ``pickle.load`` of a downloaded file executes arbitrary code. The unpickler
here admits only the few globals a state dict uses, each mapped to a numpy stand-in,
and refuses every other one before anything runs.

The legacy format (PyTorch < 1.6, or ``_use_new_zipfile_serialization=False``) is
five pickles in a row followed by raw storage bytes:

1. magic number, 2. protocol version (1001), 3. system info (endianness, sizes),
4. the object: an ``OrderedDict`` of tensors, each ``_rebuild_tensor_v2(storage,
   offset, size, stride, requires_grad, hooks)`` where ``storage`` is a persistent id
   ``("storage", <FloatStorage>, key, location, numel, view_metadata)``,
5. the list of storage keys in the order their data follows,

then for each key: an int64 element count and that many elements, little endian.
"""

from __future__ import annotations

import collections
import io
import pickle
import struct
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ..errors import Int8CalibError

LEGACY_MAGIC = 0x1950A86A20F9469CFC6C
LEGACY_PROTOCOL = 1001

# torch.<Name>Storage -> element type of its data.
STORAGE_DTYPES = {
    "FloatStorage": np.float32,
    "DoubleStorage": np.float64,
    "HalfStorage": np.float16,
    "LongStorage": np.int64,
    "IntStorage": np.int32,
    "ShortStorage": np.int16,
    "CharStorage": np.int8,
    "ByteStorage": np.uint8,
    "BoolStorage": np.bool_,
}


@dataclass(frozen=True)
class _StorageType:
    dtype: np.dtype


@dataclass
class _TensorRef:
    """A tensor whose storage bytes come after the pickle; materialised in a second pass."""

    key: str
    offset: int
    size: tuple[int, ...]
    stride: tuple[int, ...]


def _rebuild_tensor_v2(storage, storage_offset, size, stride, requires_grad=False, backward_hooks=None, metadata=None):
    # Stand-in for torch._utils._rebuild_tensor_v2: records where the tensor lives.
    if not isinstance(storage, str):
        raise pickle.UnpicklingError("tensor without a storage reference")
    return _TensorRef(storage, int(storage_offset), tuple(int(s) for s in size), tuple(int(s) for s in stride))


def _allowed_globals() -> dict[tuple[str, str], object]:
    allowed: dict[tuple[str, str], object] = {
        ("collections", "OrderedDict"): collections.OrderedDict,
        ("torch._utils", "_rebuild_tensor_v2"): _rebuild_tensor_v2,
    }
    for name, dtype in STORAGE_DTYPES.items():
        allowed[("torch", name)] = _StorageType(np.dtype(dtype))
    return allowed


class RestrictedUnpickler(pickle.Unpickler):
    """An unpickler that resolves only the globals of a PyTorch state dict.

    Any other global (``os.system``, ``builtins.eval``, a model class, ...) raises
    :class:`pickle.UnpicklingError` at the moment the file names it, before it can be called.
    """

    def __init__(self, file, storages: dict[str, tuple[np.dtype, int]]):
        super().__init__(file)
        self._allowed = _allowed_globals()
        self._storages = storages  # key -> (dtype, element count), filled as ids appear

    def find_class(self, module: str, name: str):
        try:
            return self._allowed[(module, name)]
        except KeyError:
            raise pickle.UnpicklingError(f"global '{module}.{name}' is not allowed in a state dict") from None

    def persistent_load(self, pid):
        if not (isinstance(pid, tuple) and len(pid) == 6 and pid[0] == "storage"):
            raise pickle.UnpicklingError(f"unsupported persistent id {pid!r:.80}")
        _, storage_type, key, _location, numel, view_metadata = pid
        if not isinstance(storage_type, _StorageType):
            raise pickle.UnpicklingError("persistent id without a storage type")
        if view_metadata is not None:
            raise pickle.UnpicklingError("storage views are not supported")
        self._storages[str(key)] = (storage_type.dtype, int(numel))
        return str(key)


def _load_one(f, storages: dict) -> object:
    return RestrictedUnpickler(f, storages).load()


def _materialise(ref: _TensorRef, data: dict[str, np.ndarray]) -> np.ndarray:
    flat = data[ref.key]
    itemsize = flat.dtype.itemsize
    if ref.size:
        last = ref.offset + sum((n - 1) * s for n, s in zip(ref.size, ref.stride))
        if min(ref.size) > 0 and (ref.offset < 0 or last >= flat.size or min(ref.stride) < 0):
            raise pickle.UnpicklingError(f"tensor of size {ref.size} lies outside its storage {ref.key}")
    elif ref.offset >= flat.size:
        raise pickle.UnpicklingError(f"scalar lies outside its storage {ref.key}")
    view = np.lib.stride_tricks.as_strided(
        flat[ref.offset :], shape=ref.size, strides=tuple(s * itemsize for s in ref.stride), writeable=False
    )
    return np.array(view)  # own, contiguous copy


def load_state_dict(path: str | Path) -> dict[str, np.ndarray]:
    """The tensors of a legacy-format PyTorch state dict file as ``{name: ndarray}``.

    Raises :class:`Int8CalibError` naming ``path`` when the file is not such a state
    dict or names a global outside the allowed set.
    """
    path = Path(path)
    try:
        raw = path.read_bytes()
    except OSError as exc:
        raise Int8CalibError(f"{path}: cannot read weights ({exc.strerror})") from None
    if raw[:2] == b"PK":
        raise Int8CalibError(f"{path}: PyTorch zip serialization is not supported (only the legacy format)")
    f = io.BytesIO(raw)
    storages: dict[str, tuple[np.dtype, int]] = {}
    try:
        if _load_one(f, storages) != LEGACY_MAGIC:
            raise pickle.UnpicklingError("not a PyTorch legacy file (bad magic number)")
        if _load_one(f, storages) != LEGACY_PROTOCOL:
            raise pickle.UnpicklingError("unsupported protocol version")
        sys_info = _load_one(f, storages)
        if not isinstance(sys_info, dict) or not sys_info.get("little_endian", False):
            raise pickle.UnpicklingError("only little-endian files are supported")
        obj = _load_one(f, storages)
        keys = _load_one(f, storages)
        if not isinstance(obj, dict) or not isinstance(keys, list):
            raise pickle.UnpicklingError("the file does not hold a state dict")
        data: dict[str, np.ndarray] = {}
        for key in keys:
            dtype, numel = storages[str(key)]
            (count,) = struct.unpack("<q", f.read(8))
            if count != numel:
                raise pickle.UnpicklingError(f"storage {key}: {count} elements on disk, {numel} declared")
            buf = f.read(count * dtype.itemsize)
            if len(buf) != count * dtype.itemsize:
                raise pickle.UnpicklingError(f"storage {key}: file truncated")
            data[str(key)] = np.frombuffer(buf, dtype=dtype.newbyteorder("<"))
        tensors = {}
        for name, value in obj.items():
            if not isinstance(value, _TensorRef):
                raise pickle.UnpicklingError(f"entry {name!r} is not a tensor")
            tensors[str(name)] = _materialise(value, data)
    except (pickle.UnpicklingError, EOFError, KeyError, struct.error, ValueError, TypeError) as exc:
        raise Int8CalibError(f"{path}: not a readable PyTorch state dict ({exc})") from None
    return tensors
