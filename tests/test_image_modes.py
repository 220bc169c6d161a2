"""Image modes end up as the same 8-bit RGB the model expects: each case against an independent conversion."""

from __future__ import annotations

import numpy as np
import pytest
from PIL import Image

from int8calib.preprocess import Preprocess
from int8calib.preprocess.spec import load_image

RGB = np.random.default_rng(3).integers(0, 256, (5, 7, 3), dtype=np.uint8)


def test_grayscale_is_replicated_to_three_channels(tmp_path):
    gray = RGB[:, :, 0]
    Image.fromarray(gray, "L").save(tmp_path / "g.png")
    out = np.asarray(load_image(tmp_path / "g.png"))
    assert out.shape == (5, 7, 3) and all(np.array_equal(out[:, :, c], gray) for c in range(3))


def test_rgba_is_composited_on_black(tmp_path):
    alpha = np.random.default_rng(4).integers(0, 256, (5, 7), dtype=np.uint8)
    Image.fromarray(np.dstack([RGB, alpha]), "RGBA").save(tmp_path / "a.png")
    out = np.asarray(load_image(tmp_path / "a.png")).astype(int)
    expected = RGB.astype(int) * alpha[:, :, None].astype(int) / 255.0
    assert np.abs(out - expected).max() <= 1  # alpha_composite rounds


def test_cmyk_jpeg_is_converted_to_rgb(tmp_path):
    # C=M=Y=0, K=0 is white; pure cyan is (0,255,255) in RGB
    cmyk = np.zeros((8, 8, 4), np.uint8)
    cmyk[:4, :, 0] = 255  # top half cyan
    Image.fromarray(cmyk, "CMYK").save(tmp_path / "c.tif")
    out = np.asarray(load_image(tmp_path / "c.tif")).astype(int)
    assert np.array_equal(out[0, 0], [0, 255, 255]) and np.array_equal(out[7, 7], [255, 255, 255])


def test_palette_image(tmp_path):
    img = Image.fromarray(RGB, "RGB").quantize(colors=16)
    img.save(tmp_path / "p.png")
    expected = np.asarray(img.convert("RGB"))
    palette = np.array(img.getpalette()[: 16 * 3]).reshape(16, 3)
    assert np.array_equal(np.asarray(load_image(tmp_path / "p.png")), palette[np.asarray(img)])
    assert np.array_equal(np.asarray(load_image(tmp_path / "p.png")), expected)


def test_sixteen_bit_grayscale_is_scaled_not_clipped(tmp_path):
    values = np.array([[0, 257, 32896, 65535]], np.uint16)  # 257 * {0, 1, 128, 255}
    Image.fromarray(values).save(tmp_path / "s.png")
    assert Image.open(tmp_path / "s.png").mode.startswith("I")
    out = np.asarray(load_image(tmp_path / "s.png"))
    assert np.array_equal(out[0, :, 0], [0, 1, 128, 255])


def test_exif_orientation_is_applied(tmp_path):
    # A 4 x 2 (w x h) image stored sideways with orientation 6 (rotate 90 CW to display) shows as 2 x 4.
    stored = np.zeros((2, 4, 3), np.uint8)
    stored[0, 0] = [255, 0, 0]  # top-left red in storage
    img = Image.fromarray(stored, "RGB")
    exif = Image.Exif()
    exif[0x0112] = 6
    img.save(tmp_path / "r.jpg", exif=exif.tobytes(), quality=100, subsampling=0)
    out = np.asarray(load_image(tmp_path / "r.jpg"))
    assert out.shape == (4, 2, 3)
    # rotating 90 CW moves the stored top-left corner to the top-right
    assert out[0, 1, 0] > 200 and out[0, 1, 1] < 60 and out[0, 0, 0] < 60


def test_image_smaller_than_crop_is_padded_with_pad(tmp_path):
    Image.fromarray(np.full((2, 4, 3), 200, np.uint8), "RGB").save(tmp_path / "tiny.png")
    spec = Preprocess.from_dict({"crop": [4, 6], "pad": 10, "layout": "NHWC"})
    out = spec(tmp_path / "tiny.png")
    assert out.shape == (4, 6, 3)
    # the 2 x 4 image is centred: rows 1-2, columns 1-4
    inside = np.zeros((4, 6), bool)
    inside[1:3, 1:5] = True
    assert np.all(out[inside] == 200) and np.all(out[~inside] == 10)


@pytest.mark.parametrize("mode", ["1", "LA", "I;16", "F"])
def test_other_modes_load_as_rgb(tmp_path, mode):
    img = Image.fromarray(RGB[:, :, 0], "L").convert(mode)
    path = tmp_path / ("x.tif" if mode == "F" else "x.png")
    img.save(path)
    assert np.asarray(load_image(path)).shape == (5, 7, 3)
