"""The preprocessing spec: resize / letterbox / crop / colour / normalise / layout.

The same object is used to build calibration batches and, imported by the user, to
prepare inference inputs, so the two cannot drift apart (the most common cause of
INT8 accuracy loss). Keys follow the README:

``resize``        int (shorter side) or [H, W] (stretch), or keep the aspect ratio with one side given:
                  {"height": H}, {"width": W}, {"shorter": S} or {"longer": L}
``multiple``      round the sides a keep-ratio resize computes to the nearest multiple (at least one):
                  the width for {"height": H}, both sides for shorter / longer (PP-OCR's detector)
``letterbox``     [H, W]: keep aspect ratio, pad to H x W with ``pad``
``stride``        with ``letterbox``: pad only up to the next multiple of ``stride`` (YOLO's minimal letterbox)
``crop``          int or [H, W], centred; an image smaller than the crop is padded with ``pad``
``pad_min``       [H, W]: pad a smaller result up to H x W with ``pad`` (exact after normalisation)
``pad_position``  center (default) or top-left: where ``pad_min`` keeps the image (text recognisers pad right)
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

# Which real models each preset matches: docs/preprocessing.md.
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
    # PP-OCRv4 text detector as rapidocr-onnxruntime feeds it (images with a shorter side up to 736)
    "ppocr-det": {
        "resize": {"shorter": 736}, "multiple": 32, "interpolation": "bilinear", "color": "BGR",
        "mean": [127.5, 127.5, 127.5], "std": [127.5, 127.5, 127.5], "layout": "NCHW",
    },
    # PP-OCRv4 text-line recogniser: height 48 keeping the ratio, right-padded with 0 to width 320
    "ppocr-rec": {
        "resize": {"height": 48}, "pad_min": [48, 320], "pad_position": "top-left", "pad": 127.5,
        "interpolation": "bilinear", "color": "BGR", "mean": [127.5, 127.5, 127.5], "std": [127.5, 127.5, 127.5],
        "layout": "NCHW",
    },
}

_KEYS = {
    "resize", "letterbox", "crop", "interpolation", "color", "mean", "std", "layout", "pad", "name",
    "multiple", "stride", "pad_min", "pad_position",
}
_KEEP_RATIO_SIDES = ("height", "width", "shorter", "longer")


def _positive_int(value, key: str, source: str) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value <= 0:
        raise Int8CalibError(f"{source}: '{key}' must be a positive int, got {value!r}")
    return value


def _keep_ratio(value: dict, source: str) -> tuple[str, int]:
    if len(value) != 1 or next(iter(value)) not in _KEEP_RATIO_SIDES:
        raise Int8CalibError(
            f"{source}: 'resize' as an object keeps the aspect ratio and takes one of "
            f"{', '.join(_KEEP_RATIO_SIDES)}, got {value!r}"
        )
    side, size = next(iter(value.items()))
    return side, _positive_int(size, f"resize.{side}", source)


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

    resize: int | tuple[int, int] | tuple[str, int] | None = None  # ("height", 48): keep the aspect ratio
    letterbox: tuple[int, int] | None = None
    crop: int | tuple[int, int] | None = None
    interpolation: str = "bilinear"
    color: str = "RGB"
    mean: tuple[float, ...] = (0.0, 0.0, 0.0)
    std: tuple[float, ...] = (1.0, 1.0, 1.0)
    layout: str = "NCHW"
    pad: float = 0.0
    multiple: int | None = None
    stride: int | None = None
    pad_min: tuple[int, int] | None = None
    pad_position: str | None = None  # None: center
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
            r = spec["resize"]
            kw["resize"] = _keep_ratio(r, source) if isinstance(r, dict) else _size(r, "resize", source)
        if "multiple" in spec:
            kw["multiple"] = _positive_int(spec["multiple"], "multiple", source)
            if not (isinstance(kw.get("resize"), tuple) and isinstance(kw["resize"][0], str)):
                raise Int8CalibError(f"{source}: 'multiple' applies to a keep-ratio 'resize' ({{\"height\": H}}, ...)")
        if "stride" in spec:
            kw["stride"] = _positive_int(spec["stride"], "stride", source)
            if "letterbox" not in spec:
                raise Int8CalibError(f"{source}: 'stride' applies to 'letterbox'")
        if "pad_min" in spec:
            pm = _size(spec["pad_min"], "pad_min", source)
            kw["pad_min"] = (pm, pm) if isinstance(pm, int) else pm
        if "pad_position" in spec:
            position = str(spec["pad_position"]).lower()
            if position not in ("center", "top-left"):
                raise Int8CalibError(f"{source}: 'pad_position' must be center or top-left, got {spec['pad_position']!r}")
            kw["pad_position"] = None if position == "center" else position
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
        """The spec as ``from_dict`` reads it (keys left at None omitted, so older specs keep their fingerprint)."""
        d = asdict(self)
        d.pop("name")
        if isinstance(self.resize, tuple) and isinstance(self.resize[0], str):
            d["resize"] = {self.resize[0]: self.resize[1]}
        return {k: (list(v) if isinstance(v, tuple) else v) for k, v in d.items() if v is not None}

    def fingerprint(self) -> str:
        """Stable hash of what the spec does (not of its name)."""
        return hashlib.sha256(json.dumps(self.to_dict(), sort_keys=True).encode()).hexdigest()[:16]

    @property
    def channels(self) -> int:
        return 1 if self.color == "GRAY" else 3

    def output_hw(self) -> tuple[int, int] | None:
        """The (H, W) the spec produces, or None when it depends on the image."""
        hw = self._output_hw()
        return None if hw is None or None in hw else hw

    def _output_hw(self) -> tuple[int | None, int | None] | None:
        """(H, W), each None where it depends on the image."""
        if self.crop is not None:
            return (self.crop, self.crop) if isinstance(self.crop, int) else self.crop
        if self.letterbox is not None and self.stride is None:
            return self.letterbox
        if isinstance(self.resize, tuple) and isinstance(self.resize[0], str):
            side, size = self.resize
            hw = {"height": (size, None), "width": (None, size)}.get(side, (None, None))
            if self.pad_min is not None:  # a fixed side stays fixed when pad_min does not exceed it
                hw = tuple(None if h is None or h < m else h for h, m in zip(hw, self.pad_min))
            return hw
        if isinstance(self.resize, tuple):
            return self.resize
        return None

    def sample_shape(self) -> tuple[int | None, ...]:
        hw = self._output_hw() or (None, None)
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
        if self.pad_min is not None:
            arr = self._pad_min(arr)
        if self.layout == "NCHW":
            arr = arr.transpose(2, 0, 1)
        return np.ascontiguousarray(arr, dtype=np.float32)

    def _pad_min(self, arr: np.ndarray) -> np.ndarray:
        """[H, W, C] padded to at least ``pad_min`` with ``pad`` (pixel units, normalised exactly)."""
        h, w = arr.shape[:2]
        mh, mw = self.pad_min
        if h >= mh and w >= mw:
            return arr
        value = (np.float32(self.pad) - np.asarray(self.mean, np.float32)) / np.asarray(self.std, np.float32)
        out = np.empty((max(h, mh), max(w, mw), arr.shape[2]), np.float32)
        out[...] = value
        top, left = (0, 0) if self.pad_position == "top-left" else ((out.shape[0] - h) // 2, (out.shape[1] - w) // 2)
        out[top : top + h, left : left + w] = arr
        return out

    def batch(self, images: Sequence["str | Path | Image.Image"]) -> np.ndarray:
        return np.stack([self(im) for im in images])

    def _geometry(self, image: Image.Image) -> Image.Image:
        resample = _INTERPOLATION[self.interpolation]
        w, h = image.size
        if isinstance(self.resize, tuple) and isinstance(self.resize[0], str):
            size = self._keep_ratio_size(w, h)
            if size != (w, h):
                image = image.resize(size, resample)
        elif isinstance(self.resize, int):
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
            if self.stride is not None:  # minimal letterbox: pad up to the next multiple of the stride
                lh, lw = (-(-size[1] // self.stride) * self.stride, -(-size[0] // self.stride) * self.stride)
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

    def _keep_ratio_size(self, w: int, h: int) -> tuple[int, int]:
        """(width, height) after a keep-ratio resize, the computed sides rounded to ``multiple``."""
        side, size = self.resize
        reference = {"height": h, "width": w, "shorter": min(w, h), "longer": max(w, h)}[side]
        scale = size / reference
        nw, nh = max(1, round(w * scale)), max(1, round(h * scale))
        if side == "height":
            nh = size
        elif side == "width":
            nw = size
        if self.multiple is not None:
            m = self.multiple
            if side != "height":
                nh = max(m, round(nh / m) * m)
            if side != "width":
                nw = max(m, round(nw / m) * m)
        return nw, nh

    def _pad_to(self, image: Image.Image, height: int, width: int) -> Image.Image:
        w, h = image.size
        if (w, h) == (width, height):
            return image
        fill = int(round(self.pad)) if image.mode == "L" else (int(round(self.pad)),) * 3
        canvas = Image.new(image.mode, (width, height), fill)
        canvas.paste(image, ((width - w) // 2, (height - h) // 2))
        return canvas
