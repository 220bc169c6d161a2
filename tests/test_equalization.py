"""passes.equalization (issue 23): per-channel rescaling that keeps the float model and evens out activation ranges."""

from __future__ import annotations

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

from int8calib.batching import Batch
from int8calib.passes.equalization import ChannelStats, channel_ranges, choose_scales, equalize, find_chains, predicted_noise, rescale
from int8calib.runner import ActivationRunner
from int8calib.writers.qdq import activation_tensors, build_qdq


def _chain_model(seed: int, spread: float = 1.0) -> onnx.ModelProto:
    """x -> Conv -> BN -> Relu -> depthwise Conv -> Mul(c) -> Add(c) -> Conv -> LeakyRelu -> Conv (+ a second
    reader of the LeakyRelu) -> y: one tensor of each kind the pass rescales. ``spread``: how far apart the
    first Conv's output channels' ranges are (10 ** uniform(-spread, spread)); the depthwise Conv divides
    them back, so the small channels matter downstream as much as the large ones (as after BatchNorm folding)."""
    rng = np.random.default_rng(seed)
    c = 6

    def w(*shape):
        return rng.standard_normal(shape).astype(np.float32)

    gain = (10 ** rng.uniform(-spread, spread, c)).astype(np.float32)
    inits = {
        "w0": w(c, 3, 3, 3) * gain[:, None, None, None], "b0": w(c) * gain,
        "bn_s": np.abs(w(c)) + 0.5, "bn_b": w(c), "bn_m": w(c), "bn_v": np.abs(w(c)) + 0.1,
        "w1": w(c, 1, 3, 3) / gain[:, None, None, None], "b1": w(c), "k": np.array([0.7], np.float32), "a": np.array([0.3], np.float32),
        "w2": w(c, c, 1, 1), "b2": w(c), "w3": w(4, c, 3, 3), "w4": w(2, c, 1, 1),
    }
    nodes = [
        helper.make_node("Conv", ["x", "w0", "b0"], ["t0"], "conv0", pads=[1, 1, 1, 1]),
        helper.make_node("BatchNormalization", ["t0", "bn_s", "bn_b", "bn_m", "bn_v"], ["t1"], "bn"),
        helper.make_node("Relu", ["t1"], ["t2"], "relu"),
        helper.make_node("Conv", ["t2", "w1", "b1"], ["t3"], "dw", group=c, pads=[1, 1, 1, 1]),
        helper.make_node("Mul", ["t3", "k"], ["t4"], "mul"),
        helper.make_node("Add", ["a", "t4"], ["t5"], "add"),
        helper.make_node("Conv", ["t5", "w2", "b2"], ["t6"], "pw"),
        helper.make_node("LeakyRelu", ["t6"], ["t7"], "leaky", alpha=0.1),
        helper.make_node("Conv", ["t7", "w3"], ["y"], "conv3"),
        helper.make_node("Conv", ["t7", "w4"], ["z"], "conv4"),
    ]
    graph = helper.make_graph(
        nodes, "g", [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", 3, 8, 8])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["N", 4, 6, 6]),
         helper.make_tensor_value_info("z", TensorProto.FLOAT, ["N", 2, 8, 8])],
        [numpy_helper.from_array(v, k) for k, v in inits.items()],
    )
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)])


def _batches(seed: int, n: int = 16) -> list[Batch]:
    x = np.random.default_rng(100 + seed).standard_normal((n, 3, 8, 8)).astype(np.float32)
    return [Batch({"x": x[i:i + 8]}, len(x[i:i + 8]), []) for i in range(0, n, 8)]


def _outputs(model: onnx.ModelProto, batches) -> list[np.ndarray]:
    runner = ActivationRunner(model, None, ["y", "z"])
    return [np.concatenate([v["y"].ravel(), v["z"].ravel()]) for v in (runner.run(b.feeds) for b in batches)]


def test_the_chains_are_the_rescalable_tensors_with_their_producers():
    chains = {c.tensor: ([n.name for n in c.path], [n.name for n in c.readers], c.depthwise_only)
              for c in find_chains(_chain_model(0))}
    assert chains == {
        "t2": (["bn", "relu"], ["dw"], True),
        "t5": (["mul", "add"], ["pw"], False),
        "t7": (["pw", "leaky"], ["conv3", "conv4"], False),
    }


@pytest.mark.parametrize("seed", range(4))
def test_rescaling_keeps_the_float_outputs(seed):
    model = _chain_model(seed)
    batches = _batches(seed)
    rng = np.random.default_rng(seed)
    scales = {t: (10 ** rng.uniform(-1, 1, 6)).astype(np.float32) for t in ("t2", "t5", "t7")}
    rescaled = rescale(model, scales)
    onnx.checker.check_model(rescaled)
    for before, after in zip(_outputs(model, batches), _outputs(rescaled, batches)):
        np.testing.assert_allclose(after, before, rtol=1e-4, atol=1e-4 * np.abs(before).max())
    stats = channel_ranges(model, batches, list(scales), max_samples=None)[0]
    after = channel_ranges(rescaled, batches, list(scales), max_samples=None)[0]
    for t, s in scales.items():  # each rescaled tensor is the original divided by s, channel by channel
        np.testing.assert_allclose(after[t].max, stats[t].max / s, rtol=1e-4)
        np.testing.assert_allclose(after[t].mean_square, stats[t].mean_square / s.astype(np.float64) ** 2, rtol=1e-4)


@pytest.mark.parametrize("seed", range(3))
def test_equalize_evens_out_the_depthwise_input_and_keeps_the_outputs(seed):
    model = _chain_model(seed, spread=1.5)
    batches = _batches(seed)
    done = equalize(model, batches, max_samples=None)
    assert "t2" in done.tensors and done.samples == 16
    for before, after in zip(_outputs(model, batches), _outputs(done.model, batches)):
        np.testing.assert_allclose(after, before, rtol=1e-4, atol=1e-4 * np.abs(before).max())
    # the depthwise reader's input is equalized fully: every channel reaches the largest one's max, or 16 times its own
    before = channel_ranges(model, batches, ["t2"], max_samples=None)[0]["t2"].max
    after = channel_ranges(done.model, batches, ["t2"], max_samples=None)[0]["t2"].max
    np.testing.assert_allclose(after, np.minimum(before * 16, before.max()), rtol=1e-4)


def test_equalize_leaves_alone_what_it_predicts_would_not_help():
    # equal channel ranges and a dense reader: any rescaling only makes the weight columns uneven
    model = _chain_model(0, spread=0.0)
    stats = ChannelStats(np.ones(6), np.full(6, 0.3))
    done = equalize(model, None, ranges={"t5": stats}, depthwise_only=False)
    assert done.tensors == {}
    chain = next(c for c in find_chains(model) if c.tensor == "t5")
    readers = [(n, numpy_helper.to_array(next(i for i in model.graph.initializer if i.name == n.input[1])))
               for n in chain.readers]
    uneven = np.array([1, 1, 1, 1, 1, 0.1], np.float32)
    assert predicted_noise(readers, stats, uneven) > predicted_noise(readers, stats, np.ones(6))


def test_scales_golden():
    # depthwise readers: r / max r, clamped at 1 / max_gain
    np.testing.assert_allclose(choose_scales(np.array([1.0, 4.0, 0.01]), None, max_gain=16), [0.25, 1.0, 1 / 16])
    # dense: sqrt(r / w) = [1, 2], the largest channel after (4 / 2 = 2) brought back to 4: s = [0.5, 1]
    np.testing.assert_allclose(choose_scales(np.array([1.0, 4.0]), [np.array([1.0, 1.0])], alpha=0.5), [0.5, 1.0])
    # alpha 1 on dense readers is the depthwise rule; the max over the readers' columns is used
    np.testing.assert_allclose(choose_scales(np.array([2.0, 8.0]), [np.array([1.0, 3.0]), np.array([5.0, 1.0])], alpha=1.0),
                               [0.25, 1.0])
    np.testing.assert_allclose(choose_scales(np.zeros(3), None), np.ones(3))


def _sqnr(model, qdq, batches) -> float:
    ref, out = np.concatenate(_outputs(model, batches)), np.concatenate(_outputs(qdq, batches))
    return float(10 * np.log10(np.sum(ref.astype(np.float64) ** 2) / np.sum((ref - out).astype(np.float64) ** 2)))


def _minmax_qdq(model, batches):
    tensors = activation_tensors(model)
    runner = ActivationRunner(model, None, tensors)
    amax: dict[str, float] = {}
    for b in batches:
        for t, v in runner.run(b.feeds).items():
            amax[t] = max(amax.get(t, 0.0), float(np.abs(v).max()))
    return build_qdq(model, amax)[0]


def test_equalization_cuts_the_per_tensor_quantization_error_of_disparate_channels():
    model = _chain_model(1, spread=2.0)  # channel ranges 10^-2 .. 10^2 apart into the depthwise Conv
    batches = _batches(1, 32)
    before = _sqnr(model, _minmax_qdq(model, batches), batches)
    equalized = equalize(model, batches, max_samples=None, max_gain=1e4).model
    after = _sqnr(model, _minmax_qdq(equalized, batches), batches)
    assert after > before + 6, (before, after)


def test_calibrate_equalizes_only_the_qdq_route(tmp_path):
    from int8calib.api import calibrate
    from int8calib.cli import main
    from int8calib.errors import Int8CalibError
    from int8calib.runner.model import model_fingerprint
    from int8calib.writers.provenance import model_record

    onnx.save(_chain_model(2, spread=1.5), str(tmp_path / "m.onnx"))
    x = np.random.default_rng(5).standard_normal((24, 3, 8, 8)).astype(np.float32)
    np.save(tmp_path / "x.npy", x)
    batches = [Batch({"x": x}, 24, [])]
    sqnr, records = {}, {}
    for flag in ("--equalize", "--no-equalize", "default"):
        path = tmp_path / f"q{flag}.onnx"
        assert main(["calibrate", str(tmp_path / "m.onnx"), "--data", str(tmp_path / "x.npy"), "--method", "minmax",
                     "--qdq", str(path), "--high-precision", "fp32"] + ([flag] if flag != "default" else [])) == 0
        written = onnx.load(str(path))
        sqnr[flag] = _sqnr(_chain_model(2, spread=1.5), written, batches)
        records[flag] = model_record(written).get("equalization")
    assert sqnr["--equalize"] > sqnr["--no-equalize"] + 3, sqnr
    equalized = {"model_sha256": model_fingerprint(tmp_path / "m.onnx"), "tensors": 1, "samples": 24}
    assert records == {"--no-equalize": None, "--equalize": equalized, "default": equalized}  # on by default
    with pytest.raises(Int8CalibError, match="--equalize: a calibration cache"):
        calibrate(tmp_path / "m.onnx", str(tmp_path / "x.npy"), method="minmax", qdq=tmp_path / "a.onnx",
                  cache=tmp_path / "c.cache", equalize=True)
    assert main(["calibrate", str(tmp_path / "m.onnx"), "--data", str(tmp_path / "x.npy"), "--cache",
                 str(tmp_path / "c.cache"), "--equalize"]) == 2
    # by default, a Q/DQ model written beside a cache is the original model's: the cache's ranges fit it
    calibrate(tmp_path / "m.onnx", str(tmp_path / "x.npy"), method="minmax", qdq=tmp_path / "b.onnx", cache=tmp_path / "c.cache")
    assert "equalization" not in model_record(onnx.load(str(tmp_path / "b.onnx")))


def test_a_model_with_nothing_to_equalize_is_calibrated_as_it_is(tmp_path):
    from int8calib.api import calibrate
    from int8calib.writers.provenance import model_record
    from tinymodels import residual_cnn

    residual_cnn(tmp_path / "m.onnx")  # Conv -> Relu -> Conv -> Clip -> Add: no Conv reads a rescalable tensor
    np.save(tmp_path / "x.npy", np.random.default_rng(6).standard_normal((8, 3, 8, 8)).astype(np.float32))
    for flag in (True, False):
        calibrate(tmp_path / "m.onnx", str(tmp_path / "x.npy"), method="minmax", qdq=tmp_path / f"q{flag}.onnx", equalize=flag)
    a, b = (onnx.load(str(tmp_path / f"q{flag}.onnx")) for flag in (True, False))
    assert "equalization" not in model_record(a)
    assert [numpy_helper.to_array(i).tobytes() for i in a.graph.initializer] == \
        [numpy_helper.to_array(i).tobytes() for i in b.graph.initializer]
