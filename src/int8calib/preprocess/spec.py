"""The preprocessing spec: resize / letterbox / crop / colour / normalise / layout.

The same object is used to build calibration batches and, imported by the user, to
prepare inference inputs, so the two cannot drift apart (the most common cause of
INT8 accuracy loss). Keys follow the README:

``resize``        int (shorter side) or [H, W] (stretch)
``letterbox``     [H, W]: keep aspect ratio, pad to H x W with ``pad``
``crop``          int or [H, W], centred; an image smaller than the crop is padded with ``pad``
``interpolation`` nearest | bilinear | bicubic (default bilinear)
``color``         RGB | BGR | GRAY
``mean``, ``std`` per channel in 0-255 pixel units, in the model's channel order: (pixel - mean) / std
``layout``        NCHW | NHWC
``pad``           pad value in pixel units (default 0; 114 for the yolo preset)
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Sequence

import numpy as np
from PIL import Image, ImageOps

from ..errors import Int8CalibError

_INTERPOLATION = {
    "nearest": Image.Resampling.NEAREST,
    "bilinear": Image.Resampling.BILINEAR,
    "bicubic": Image.Resampling.BICUBIC,
}

PRESETS: dict[str, dict] = {
    "imagenet": {
        "resize": 256, "crop": 224, "interpolation": "bilinear", "color": "RGB",
        "mean": [123.675, 116.28, 103.53], "std": [58.395, 57.12, 57.375], "layout": "NCHW",
    },
    "efficientnet-lite": {
        "resize": 256, "crop": 224, "interpolation": "bicubic", "color": "RGB",
        "mean": [127.0, 127.0, 127.0], "std": [128.0, 128.0, 128.0], "layout": "NCHW",
    },
    "yolo": {
        "letterbox": [640, 640], "pad": 114, "interpolation": "bilinear", "color": "RGB",
        "mean": [0.0, 0.0, 0.0], "std": [255.0, 255.0, 255.0], "layout": "NCHW",
    },
}

_KEYS = {"resize", "letterbox", "crop", "interpolation", "color", "mean", "std", "layout", "pad", "name"}


def _size(value, key: str, source: str) -> tuple[int, int] | int:
    if isinstance(value, bool):
        raise Int8CalibError(f"{source}: '{key}' must be an int or [H, W], got {value!r}")
    if isinstance(value, int) and value > 0:
        return value
    if isinstance(value, (list, tuple)) and len(value) == 2 and all(isinstance(v, int) and not isinstance(v, bool) and v > 0 for v in value):
        return (value[0], value[1])
    raise Int8CalibError(f"{source}: '{key}' must be a positive int or [H, W], got {value!r}")


def load_image(path: str | Path, mode: str = "RGB") -> Image.Image:
    """Open an image, apply its EXIF orientation and convert it to ``mode``.

    Grayscale, palette, RGBA, CMYK and 16-bit images all end up as 8-bit ``mode``;
    unreadable or truncated files raise :class:`Int8CalibError` naming the file.
    """
    try:
        with Image.open(path) as img:
            img.load()
            img = ImageOps.exif_transpose(img)
            if img.mode in ("I;16", "I;16B", "I;16L", "I"):
                # 16-bit grayscale: scale to 8 bits instead of clipping at 255.
                arr = np.asarray(img, dtype=np.float64)
                peak = 65535.0 if img.mode.startswith("I;16") or arr.max() > 255 else 255.0
                img = Image.fromarray(np.clip(arr * (255.0 / peak) + 0.5, 0, 255).astype(np.uint8), "L")
            if img.mode in ("RGBA", "LA", "PA") or (img.mode == "P" and "transparency" in img.info):
                # Composite transparent pixels onto black, as decoders for inference do.
                img = img.convert("RGBA")
                background = Image.new("RGBA", img.size, (0, 0, 0, 255))
                img = Image.alpha_composite(background, img)
            return img.convert("L" if mode == "GRAY" else "RGB")
    except FileNotFoundError:
        raise Int8CalibError(f"{path}: image file not found") from None
    except IsADirectoryError:
        raise Int8CalibError(f"{path}: is a directory, not an image") from None
    except (OSError, SyntaxError, ValueError, Image.DecompressionBombError) as exc:
        raise Int8CalibError(f"{path}: cannot read image ({exc})") from None


@dataclass(frozen=True)
class Preprocess:
    """A validated preprocessing spec; call it on an image path or a PIL image."""

    resize: int | tuple[int, int] | None = None
    letterbox: tuple[int, int] | None = None
    crop: int | tuple[int, int] | None = None
    interpolation: str = "bilinear"
    color: str = "RGB"
    mean: tuple[float, ...] = (0.0, 0.0, 0.0)
    std: tuple[float, ...] = (1.0, 1.0, 1.0)
    layout: str = "NCHW"
    pad: float = 0.0
    name: str | None = field(default=None, compare=False)

    # ---- construction -------------------------------------------------
    @classmethod
    def from_dict(cls, spec: dict, source: str = "preprocessing spec") -> "Preprocess":
        if not isinstance(spec, dict):
            raise Int8CalibError(f"{source}: must be a JSON object, got {type(spec).__name__}")
        unknown = set(spec) - _KEYS
        if unknown:
            raise Int8CalibError(f"{source}: unknown key(s) {sorted(unknown)}; known: {sorted(_KEYS - {'name'})}")
        kw: dict = {}
        if "resize" in spec:
            kw["resize"] = _size(spec["resize"], "resize", source)
        if "letterbox" in spec:
            lb = _size(spec["letterbox"], "letterbox", source)
            kw["letterbox"] = (lb, lb) if isinstance(lb, int) else lb
        if "crop" in spec:
            kw["crop"] = _size(spec["crop"], "crop", source)
        if "resize" in kw and "letterbox" in kw:
            raise Int8CalibError(f"{source}: use either 'resize' or 'letterbox', not both")
        interp = spec.get("interpolation", "bilinear")
        if interp not in _INTERPOLATION:
            raise Int8CalibError(f"{source}: 'interpolation' must be one of {sorted(_INTERPOLATION)}, got {interp!r}")
        kw["interpolation"] = interp
        color = str(spec.get("color", "RGB")).upper()
        if color not in ("RGB", "BGR", "GRAY"):
            raise Int8CalibError(f"{source}: 'color' must be RGB, BGR or GRAY, got {spec.get('color')!r}")
        kw["color"] = color
        channels = 1 if color == "GRAY" else 3
        for key, default in (("mean", 0.0), ("std", 1.0)):
            value = spec.get(key, [default] * channels)
            if isinstance(value, (int, float)) and not isinstance(value, bool):
                value = [value] * channels
            if not isinstance(value, (list, tuple)) or len(value) != channels or not all(
                isinstance(v, (int, float)) and not isinstance(v, bool) for v in value
            ):
                raise Int8CalibError(f"{source}: '{key}' must be {channels} numbers, got {value!r}")
            kw[key] = tuple(float(v) for v in value)
        if any(s == 0 for s in kw["std"]):
            raise Int8CalibError(f"{source}: 'std' must not contain 0")
        layout = str(spec.get("layout", "NCHW")).upper()
        if layout not in ("NCHW", "NHWC"):
            raise Int8CalibError(f"{source}: 'layout' must be NCHW or NHWC, got {spec.get('layout')!r}")
        kw["layout"] = layout
        pad = spec.get("pad", 0.0)
        if not isinstance(pad, (int, float)) or isinstance(pad, bool):
            raise Int8CalibError(f"{source}: 'pad' must be a number, got {pad!r}")
        kw["pad"] = float(pad)
        kw["name"] = spec.get("name")
        return cls(**kw)

    @classmethod
    def load(cls, name_or_path: "str | Path | Preprocess | dict") -> "Preprocess":
        """A preset name (imagenet, efficientnet-lite, yolo), a JSON file, a dict or a Preprocess."""
        if isinstance(name_or_path, Preprocess):
            return name_or_path
        if isinstance(name_or_path, dict):
            return cls.from_dict(name_or_path)
        text = str(name_or_path)
        if text in PRESETS:
            return cls.from_dict({**PRESETS[text], "name": text}, source=f"preset {text}")
        path = Path(text)
        if not path.exists():
            raise Int8CalibError(f"{text}: not a preprocessing preset ({', '.join(PRESETS)}) nor a JSON file")
        try:
            spec = json.loads(path.read_text(encoding="utf-8"))
        except (OSError, UnicodeDecodeError) as exc:
            raise Int8CalibError(f"{path}: cannot read preprocessing spec ({exc})") from None
        except json.JSONDecodeError as exc:
            raise Int8CalibError(f"{path}:{exc.lineno}: invalid JSON ({exc.msg})") from None
        return cls.from_dict(spec, source=str(path))

    # ---- description -----------------------------------------------------
    def to_dict(self) -> dict:
        d = asdict(self)
        d.pop("name")
        return {k: (list(v) if isinstance(v, tuple) else v) for k, v in d.items() if v is not None}

    def fingerprint(self) -> str:
        """Stable hash of what the spec does (not of its name)."""
        return hashlib.sha256(json.dumps(self.to_dict(), sort_keys=True).encode()).hexdigest()[:16]

    @property
    def channels(self) -> int:
        return 1 if self.color == "GRAY" else 3

    def output_hw(self) -> tuple[int, int] | None:
        """The (H, W) the spec produces, or None when it depends on the image."""
        if self.crop is not None:
            return (self.crop, self.crop) if isinstance(self.crop, int) else self.crop
        if self.letterbox is not None:
            return self.letterbox
        if isinstance(self.resize, tuple):
            return self.resize
        return None

    def sample_shape(self) -> tuple[int | None, ...]:
        hw = self.output_hw() or (None, None)
        return (self.channels, *hw) if self.layout == "NCHW" else (*hw, self.channels)

    def check_input(self, input_name: str, shape: Sequence[int | str | None]) -> None:
        """Raise a one-line error when the spec cannot produce the model input ``shape``.

        ``shape`` includes the batch dimension; symbolic dimensions are str or None.
        """
        if len(shape) != 4:
            raise Int8CalibError(
                f"input '{input_name}': image preprocessing produces 4-D {self.layout} batches, "
                f"but the model input has shape {list(shape)}"
            )
        expected = self.sample_shape()
        for axis, (want, have) in enumerate(zip(expected, shape[1:]), start=1):
            if isinstance(have, int) and have > 0:
                if want is None:
                    raise Int8CalibError(
                        f"input '{input_name}': the model needs size {have} on axis {axis} of {list(shape)}, "
                        f"but the preprocessing spec does not fix the image size (add 'crop', 'letterbox' or resize [H, W])"
                    )
                if want != have:
                    raise Int8CalibError(
                        f"input '{input_name}': preprocessing produces {self.layout} samples of shape "
                        f"{list(expected)}, the model expects {list(shape[1:])} (axis {axis}: {want} vs {have})"
                    )

    # ---- the transform -------------------------------------------------------
    def __call__(self, image: "str | Path | Image.Image") -> np.ndarray:
        """Preprocess one image: float32 array [C, H, W] (NCHW) or [H, W, C] (NHWC)."""
        if not isinstance(image, Image.Image):
            image = load_image(image, "GRAY" if self.color == "GRAY" else "RGB")
        else:
            image = ImageOps.exif_transpose(image).convert("L" if self.color == "GRAY" else "RGB")
        image = self._geometry(image)
        arr = np.asarray(image, dtype=np.float32)
        if arr.ndim == 2:
            arr = arr[:, :, None]
        if self.color == "BGR":
            arr = arr[:, :, ::-1]
        arr = (arr - np.asarray(self.mean, np.float32)) / np.asarray(self.std, np.float32)
        if self.layout == "NCHW":
            arr = arr.transpose(2, 0, 1)
        return np.ascontiguousarray(arr, dtype=np.float32)

    def batch(self, images: Sequence["str | Path | Image.Image"]) -> np.ndarray:
        return np.stack([self(im) for im in images])

    def _geometry(self, image: Image.Image) -> Image.Image:
        resample = _INTERPOLATION[self.interpolation]
        w, h = image.size
        if isinstance(self.resize, int):
            scale = self.resize / min(w, h)
            size = (max(1, round(w * scale)), max(1, round(h * scale)))
            if size != (w, h):
                image = image.resize(size, resample)
        elif isinstance(self.resize, tuple):
            rh, rw = self.resize
            if (rw, rh) != (w, h):
                image = image.resize((rw, rh), resample)
        elif self.letterbox is not None:
            lh, lw = self.letterbox
            scale = min(lh / h, lw / w)
            size = (max(1, round(w * scale)), max(1, round(h * scale)))
            if size != (w, h):
                image = image.resize(size, resample)
            image = self._pad_to(image, lh, lw)
        if self.crop is not None:
            ch, cw = (self.crop, self.crop) if isinstance(self.crop, int) else self.crop
            w, h = image.size
            if w < cw or h < ch:
                image = self._pad_to(image, max(h, ch), max(w, cw))
                w, h = image.size
            left, top = int(round((w - cw) / 2.0)), int(round((h - ch) / 2.0))
            image = image.crop((left, top, left + cw, top + ch))
        return image

    def _pad_to(self, image: Image.Image, height: int, width: int) -> Image.Image:
        w, h = image.size
        if (w, h) == (width, height):
            return image
        fill = int(round(self.pad)) if image.mode == "L" else (int(round(self.pad)),) * 3
        canvas = Image.new(image.mode, (width, height), fill)
        canvas.paste(image, ((width - w) // 2, (height - h) // 2))
        return canvas
