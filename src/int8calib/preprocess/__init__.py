"""Preprocessing: one declarative spec shared by calibration and inference.

    from int8calib.preprocess import Preprocess
    pre = Preprocess.load("efficientnet-lite")     # or a JSON file
    x = pre("cat.jpg")                             # float32 [3, 224, 224]
    batch = pre.batch(["a.jpg", "b.jpg"])           # float32 [2, 3, 224, 224]
"""

from .spec import PRESETS, Preprocess, load_image

__all__ = ["PRESETS", "Preprocess", "load_image"]
