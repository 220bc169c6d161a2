import json

import numpy as np
import pytest
from PIL import Image

from int8calib.errors import Int8CalibError
from int8calib.preprocess import PRESETS, Preprocess


def _image(w, h, seed=0):
    rng = np.random.default_rng(seed)
    return Image.fromarray(rng.integers(0, 256, (h, w, 3), dtype=np.uint8))


def test_presets_match_the_documented_values():
    eff = Preprocess.load("efficientnet-lite")
    assert (eff.resize, eff.crop, eff.interpolation) == (256, 224, "bicubic")
    assert eff.mean == (127.0,) * 3 and eff.std == (128.0,) * 3
    imnet = Preprocess.load("imagenet")
    assert imnet.mean == (123.675, 116.28, 103.53) and imnet.std == (58.395, 57.12, 57.375)
    yolo = Preprocess.load("yolo")
    assert yolo.letterbox == (640, 640) and yolo.pad == 114 and yolo.std == (255.0,) * 3
    det, rec = Preprocess.load("ppocr-det"), Preprocess.load("ppocr-rec")
    assert (det.resize, det.multiple, det.color, det.mean, det.std) == (("shorter", 736), 32, "BGR", (127.5,) * 3, (127.5,) * 3)
    assert (rec.resize, rec.pad_min, rec.pad_position, rec.pad) == (("height", 48), (48, 320), "top-left", 127.5)
    assert set(PRESETS) == {"imagenet", "efficientnet-lite", "yolo", "ppocr-det", "ppocr-rec"}


def test_normalisation_is_pixel_minus_mean_over_std_per_channel():
    img = Image.new("RGB", (4, 4), (10, 20, 30))
    pre = Preprocess.from_dict({"mean": [1, 2, 3], "std": [3, 6, 9]})
    out = pre(img)
    assert out.shape == (3, 4, 4) and out.dtype == np.float32
    np.testing.assert_allclose(out[:, 0, 0], [(10 - 1) / 3, (20 - 2) / 6, (30 - 3) / 9], rtol=1e-6)


def test_bgr_and_nhwc_reorder_channels_and_axes():
    img = Image.new("RGB", (5, 3), (10, 20, 30))
    out = Preprocess.from_dict({"color": "BGR", "layout": "NHWC"})(img)
    assert out.shape == (3, 5, 3)
    np.testing.assert_array_equal(out[0, 0], [30, 20, 10])


def test_resize_shorter_side_then_centre_crop():
    img = _image(300, 200)
    pre = Preprocess.from_dict({"resize": 100, "crop": 64})
    assert pre._geometry(img.copy()).size == (64, 64)
    # shorter side 200 -> 100, so the long side 300 -> 150 before the crop
    assert Preprocess.from_dict({"resize": 100})._geometry(img.copy()).size == (150, 100)


def test_centre_crop_takes_the_middle_pixels():
    arr = np.arange(6 * 6 * 3, dtype=np.uint8).reshape(6, 6, 3)
    out = Preprocess.from_dict({"crop": 2, "layout": "NHWC"})(Image.fromarray(arr))
    np.testing.assert_array_equal(out, arr[2:4, 2:4].astype(np.float32))


def test_letterbox_keeps_aspect_and_pads_with_the_pad_value():
    img = Image.new("RGB", (40, 20), (200, 200, 200))
    out = Preprocess.from_dict({"letterbox": [40, 40], "pad": 114, "interpolation": "nearest", "layout": "NHWC"})(img)
    assert out.shape == (40, 40, 3)
    assert (out[:10] == 114).all() and (out[30:] == 114).all() and (out[10:30] == 200).all()


def test_image_smaller_than_crop_is_padded():
    img = Image.new("RGB", (4, 4), (50, 50, 50))
    out = Preprocess.from_dict({"crop": 8, "pad": 0, "layout": "NHWC"})(img)
    assert out.shape == (8, 8, 3)
    assert out.sum() == 50 * 16 * 3


def test_json_spec_file_and_fingerprint(tmp_path):
    spec = {"resize": 256, "crop": 224, "mean": [127, 127, 127], "std": [128, 128, 128], "interpolation": "bicubic"}
    path = tmp_path / "pre.json"
    path.write_text(json.dumps(spec))
    loaded = Preprocess.load(path)
    assert loaded == Preprocess.load("efficientnet-lite")
    assert loaded.fingerprint() == Preprocess.load("efficientnet-lite").fingerprint()
    assert loaded.fingerprint() != Preprocess.load("imagenet").fingerprint()


@pytest.mark.parametrize(
    "spec, needle",
    [
        ({"resize": -3}, "resize"),
        ({"crop": [1, 2, 3]}, "crop"),
        ({"interpolation": "lanczos"}, "interpolation"),
        ({"color": "CMYK"}, "color"),
        ({"mean": [1, 2]}, "mean"),
        ({"std": [1, 0, 1]}, "std"),
        ({"layout": "CHW"}, "layout"),
        ({"rezise": 3}, "unknown key"),
        ({"resize": 3, "letterbox": [4, 4]}, "either"),
    ],
)
def test_bad_specs_are_named(spec, needle):
    with pytest.raises(Int8CalibError, match=needle):
        Preprocess.from_dict(spec)


def test_invalid_json_names_file_and_line(tmp_path):
    path = tmp_path / "bad.json"
    path.write_text('{\n "resize": 3,\n}')
    with pytest.raises(Int8CalibError, match=r"bad\.json:3"):
        Preprocess.load(path)


def test_check_input_against_model_shape():
    pre = Preprocess.load("efficientnet-lite")
    pre.check_input("input", ("N", 3, 224, 224))
    with pytest.raises(Int8CalibError, match="axis 2: 224 vs 256"):
        pre.check_input("input", ("N", 3, 256, 256))
    with pytest.raises(Int8CalibError, match="4-D"):
        pre.check_input("input", ("N", 3, 224))
    with pytest.raises(Int8CalibError, match="does not fix the image size"):
        Preprocess.from_dict({"resize": 256}).check_input("input", (1, 3, 224, 224))
    Preprocess.from_dict({"resize": 256}).check_input("input", ("N", 3, "H", "W"))


# ---- keep-ratio resize, rounding to a multiple, padding to a minimum, letterbox to a stride (#16) ----
@pytest.mark.parametrize("resize,multiple,size", [
    ({"height": 48}, None, (144, 48)),      # 300 x 100 -> keep the ratio at height 48
    ({"width": 150}, None, (150, 50)),
    ({"shorter": 736}, 32, (2208, 736)),    # 2208 = 69 * 32
    ({"longer": 100}, 32, (96, 32)),        # 100 x 33.3 -> 96 x 32
    ({"height": 48}, 32, (128, 48)),        # only the computed side is rounded: 144 -> 128 (4.5 rounds to even, as PP-OCR)
])
def test_keep_ratio_resize_and_multiple(resize, multiple, size):
    spec = {"resize": resize, **({"multiple": multiple} if multiple else {})}
    assert Preprocess.from_dict(spec)._geometry(_image(300, 100)).size == size


def test_ppocr_rec_preset_pads_right_with_exact_zero_to_the_minimum_width():
    """rapidocr's recogniser input: BGR, (x / 255 - 0.5) / 0.5, height 48, right-padded with 0 to 320."""
    img = _image(100, 40, seed=3)
    out = Preprocess.load("ppocr-rec")(img)
    assert out.shape == (3, 48, 320)
    resized = np.asarray(img.resize((120, 48), Image.Resampling.BILINEAR), np.float32)[:, :, ::-1]
    np.testing.assert_allclose(out[:, :, :120], ((resized / 255 - 0.5) / 0.5).transpose(2, 0, 1), atol=1e-6)
    assert np.all(out[:, :, 120:] == 0.0)
    wide = Preprocess.load("ppocr-rec")(_image(1000, 40))
    assert wide.shape == (3, 48, 1200)  # wider than the minimum: not padded
    Preprocess.load("ppocr-rec").check_input("x", ("N", 3, 48, "W"))
    with pytest.raises(Int8CalibError, match="axis 2"):
        Preprocess.load("ppocr-rec").check_input("x", ("N", 3, 32, "W"))


def test_ppocr_det_preset_matches_rapidocr_sizes():
    """rapidocr's DetPreProcess (limit_type min, 736): shorter side to 736, both sides rounded to 32."""
    for w, h in ((500, 375), (256, 341), (333, 256)):
        ratio = 736 / min(w, h)
        want = (int(round(int(w * ratio) / 32) * 32), int(round(int(h * ratio) / 32) * 32))
        assert Preprocess.load("ppocr-det")._geometry(_image(w, h)).size == want


def test_letterbox_to_a_stride_pads_only_to_the_next_multiple():
    pre = Preprocess.from_dict({"letterbox": [640, 640], "stride": 32, "pad": 114, "interpolation": "nearest"})
    out = pre._geometry(_image(500, 300))  # 640 x 384 after scaling: already multiples of 32
    assert out.size == (640, 384)
    out = pre._geometry(_image(500, 310))  # 640 x 397 -> padded to 640 x 416, centred
    assert out.size == (640, 416) and np.asarray(out)[0, 0].tolist() == [114, 114, 114]
    assert pre.output_hw() is None and Preprocess.load("yolo").output_hw() == (640, 640)


@pytest.mark.parametrize("spec,words", [
    ({"resize": {"heigth": 48}}, "one of height, width, shorter, longer"),
    ({"resize": {"height": 0}}, "resize.height"),
    ({"resize": 64, "multiple": 32}, "'multiple' applies to a keep-ratio"),
    ({"resize": 64, "stride": 32}, "'stride' applies to 'letterbox'"),
    ({"pad_min": [48, -1]}, "pad_min"),
    ({"pad_min": 8, "pad_position": "left"}, "center or top-left"),
])
def test_new_spec_keys_bad_values(spec, words):
    with pytest.raises(Int8CalibError, match=words):
        Preprocess.from_dict(spec)


def test_new_keys_round_trip_and_old_specs_keep_their_fingerprint():
    spec = Preprocess.load("ppocr-rec")
    assert Preprocess.from_dict(spec.to_dict()) == spec
    assert Preprocess.load("imagenet").fingerprint() == Preprocess.from_dict(PRESETS["imagenet"]).fingerprint()
    assert "multiple" not in Preprocess.load("imagenet").to_dict()
