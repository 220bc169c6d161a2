"""passes.scoring_model: the twin auto and the accuracy budget rank candidates with (same INT8 weights,
scales and corrected biases as the written model, float32 elsewhere, weights stored dequantized)."""

from __future__ import annotations

import numpy as np
import onnx
import pytest
from onnx import numpy_helper

import qdq_graphs as g
from int8calib.passes import measure_shifts, quantized_model, scoring_model
from int8calib.batching import Batch
from int8calib.runner import ActivationRunner
from int8calib.runner.model import runs_qdq_as_written
from int8calib.writers.precision import PrecisionOptions
from test_precision import _sqnr, detector_head
from tinymodels import residual_cnn


def _out(model, feeds, name):
    return ActivationRunner(model, None, [name]).run(feeds)[name]


@pytest.fixture
def cnn():
    model = residual_cnn()
    rng = np.random.default_rng(5)
    x = (rng.standard_normal((6, 3, 8, 8)) + 0.5).astype(np.float32)
    amax = g.amax_of(model, {"input": x})
    shifts = measure_shifts(model, [Batch({"input": x}, 6, [])], max_samples=None, high_precision="fp16")
    return model, x, amax, shifts


def test_scoring_model_has_the_written_models_weights_scales_and_biases(cnn):
    model, x, amax, shifts = cnn
    written = quantized_model(model, amax, shifts=shifts, precision=PrecisionOptions("fp16"))
    scoring = scoring_model(model, amax, shifts=shifts, precision=PrecisionOptions("fp16"))
    assert scoring.qdq.activations == written.qdq.activations and scoring.corrected == written.corrected
    assert not any(n.op_type == "DequantizeLinear" and n.input[0].endswith("_int8") for n in scoring.model.graph.node)
    assert runs_qdq_as_written(scoring.model) and scoring.precision.precision == "fp32"
    inits = {i.name: numpy_helper.to_array(i) for i in written.model.graph.initializer}
    folded = {i.name: numpy_helper.to_array(i) for i in scoring.model.graph.initializer}
    # every weight the written model dequantizes is held by the scoring model as (q - 0) * scale, bit for bit
    weights = 0
    for node in written.model.graph.node:
        if node.op_type == "DequantizeLinear" and node.input[0] in inits and inits[node.input[0]].dtype == np.int8:
            q, scale = inits[node.input[0]].astype(np.float32), inits[node.input[1]].astype(np.float32)
            if scale.ndim:
                axis = next((a.i for a in node.attribute if a.name == "axis"), 1)
                scale = np.expand_dims(scale, [d for d in range(q.ndim) if d != axis % q.ndim])
            np.testing.assert_array_equal(folded[node.output[0]], q * scale)
            weights += 1
    assert weights == len(written.qdq.weights) > 0
    # activation scales: the written model's float16 values, here in float32
    for node in scoring.model.graph.node:
        if node.op_type == "QuantizeLinear":
            s = folded[node.input[1]]
            assert s.dtype == np.float32 and s == s.astype(np.float16).astype(np.float32)


def test_scoring_model_output_is_the_written_models_within_fp16_rounding(cnn):
    model, x, amax, shifts = cnn
    feeds, out = {"input": x}, model.graph.output[0].name
    ref = _out(model, feeds, out)
    written = _out(quantized_model(model, amax, shifts=shifts, precision=PrecisionOptions("fp16")).model, feeds, out)
    scoring = _out(scoring_model(model, amax, shifts=shifts, precision=PrecisionOptions("fp16")).model, feeds, out)
    assert _sqnr(written, scoring) > 45  # FP16 rounding apart, far below INT8's error
    assert abs(_sqnr(ref, written) - _sqnr(ref, scoring)) < 0.1
    assert _sqnr(ref, scoring) < 40  # INT8 error is there at all


def test_scoring_model_equals_the_fp32_model_run_as_written(rng):
    """With --high-precision fp32 the only difference left is where the weights are dequantized."""
    model = detector_head(rng)
    x = rng.standard_normal((3, 3, 8, 8)).astype(np.float32)
    amax = g.amax_of(model, {"x": x})
    fp32 = quantized_model(model, amax, precision=PrecisionOptions("fp32")).model
    fp32.metadata_props.add(key="int8calib_emulate_qdq", value="1")  # ONNX Runtime's fusions off for both
    scoring = scoring_model(model, amax, precision=PrecisionOptions("fp32")).model
    np.testing.assert_allclose(_out(scoring, {"x": x}, "y"), _out(fp32, {"x": x}, "y"), rtol=1e-6, atol=1e-7)


def test_bf16_candidates_are_scored_as_written(cnn):
    model, _, amax, _ = cnn
    built = scoring_model(model, amax, precision=PrecisionOptions("bf16"))
    assert built.precision.precision == "bf16" and any(i.data_type == onnx.TensorProto.BFLOAT16 for i in built.model.graph.initializer)
