"""Acceptance: calibrate the real EfficientNet-Lite0 on real photos (../shared)."""

import math

import onnx
import pytest

from int8calib.cli import main
from int8calib.writers.cache import read_cache

pytestmark = pytest.mark.acceptance


def test_efficientnet_lite0_cache_covers_every_conv_clip_add_gemm(effnet_model, even_images, tmp_path):
    listing = tmp_path / "calibration_list_imagenet.txt"
    listing.write_text("\n".join(even_images[:100]) + "\n")
    cache = tmp_path / "calibration.cache"
    code = main(["calibrate", str(effnet_model), "--data", str(listing), "--preprocess", "efficientnet-lite",
                 "--method", "entropy2", "--cache", str(cache), "-q"])
    assert code == 0
    parsed = read_cache(cache)
    assert parsed.algorithm == "EntropyCalibration2"
    graph = onnx.load(str(effnet_model), load_external_data=False).graph
    initializers = {i.name for i in graph.initializer}
    needed = set()
    for node in graph.node:
        if node.op_type in ("Conv", "Clip", "Add", "Gemm"):
            needed.update(n for n in list(node.input) + list(node.output) if n and n not in initializers)
    needed -= {n.output[0] for n in graph.node if n.op_type == "Constant"}
    assert len(needed) > 90
    missing = needed - set(parsed.scales)
    assert not missing, sorted(missing)[:5]
    for name, amax in parsed.amax.items():
        assert math.isfinite(amax) and amax > 0, name
