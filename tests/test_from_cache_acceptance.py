"""Acceptance on ../shared (issue 17): on EfficientNet-Lite0, calibrate --cache then --from-cache --qdq
writes the Q/DQ model calibrate --qdq writes directly (same tensors, same scale bits), and
evaluate --cache gives the figures of evaluating that model."""

from __future__ import annotations

import numpy as np
import onnx
import pytest
from onnx import numpy_helper

import int8calib
from int8calib.cli import main
from int8calib.evaluate import evaluate

pytestmark = pytest.mark.acceptance
PRESET = "efficientnet-lite"


def qdq_scales(path) -> dict[str, bytes]:
    """{tensor: its scale's bytes} of every QuantizeLinear, and {weight: bytes} of every weight DequantizeLinear."""
    model = onnx.load(str(path))
    inits = {i.name: numpy_helper.to_array(i) for i in model.graph.initializer}
    out = {}
    for node in model.graph.node:
        if node.op_type == "QuantizeLinear":
            out[node.input[0]] = inits[node.input[1]].tobytes()
        elif node.op_type == "DequantizeLinear" and node.input[0] in inits:
            out["weight " + node.input[0]] = inits[node.input[1]].tobytes() + inits[node.input[0]].tobytes()
    return out


@pytest.fixture(scope="module")
def routes(tmp_path_factory, effnet_model, even_images):
    folder = tmp_path_factory.mktemp("from-cache")
    calib = folder / "calib.txt"
    calib.write_text("".join(f"{p}\n" for p in even_images[:100]))
    common = [str(effnet_model), "--data", str(calib), "--preprocess", PRESET, "--method", "minmax", "-q"]
    assert main(["calibrate", *common, "--cache", str(folder / "c.cache")]) == 0
    # float32 scales: the cache's bits kept exactly (the default INT8 + FP16 model rounds them to float16);
    # weights rounded to nearest, as a cache's route has no data to round them on
    assert main(["calibrate", *common, "--qdq", str(folder / "direct.onnx"), "--high-precision", "fp32",
                 "--no-weight-rounding"]) == 0
    assert main(["calibrate", str(effnet_model), "--from-cache", str(folder / "c.cache"),
                 "--qdq", str(folder / "from_cache.onnx"), "--high-precision", "fp32", "-q"]) == 0
    assert main(["calibrate", str(effnet_model), "--from-cache", str(folder / "c.cache"),
                 "--qdq", str(folder / "from_cache_fp16.onnx"), "-q"]) == 0  # the default: INT8 + FP16
    return folder


def test_from_cache_quantizes_the_same_tensors_with_the_same_scales(routes):
    direct, imported = qdq_scales(routes / "direct.onnx"), qdq_scales(routes / "from_cache.onnx")
    activations = [t for t in direct if not t.startswith("weight ")]
    assert len(activations) > 40
    assert direct.keys() == imported.keys()
    assert direct == imported  # every scale bit for bit, weights included
    cache = int8calib.read_cache(routes / "c.cache").scales
    assert all(imported[t] == np.float32(cache[t]).tobytes() for t in activations)


def test_evaluate_cache_gives_the_figures_of_the_written_model(routes, effnet_model, odd_images, tmp_path):
    data = odd_images[:50]
    expected = evaluate(effnet_model, routes / "from_cache_fp16.onnx", data, PRESET, per_layer=True).to_dict()
    got = int8calib.evaluate_cache(effnet_model, routes / "c.cache", data, PRESET, per_layer=True).to_dict()
    assert got == expected and len(got["per_layer"]) > 40
