"""Q/DQ placement on a transformer encoder layer (#16 point 6): which tensors get Q/DQ and which stay float.

The rules and their sources: docs/qdq.md, "Transformers". The graph: qdq_graphs.attention_block.
"""

from __future__ import annotations

import numpy as np

import qdq_graphs as g
from int8calib.evaluate.metrics import PowerSum
from int8calib.writers.qdq import activation_tensors, build_qdq, check

# activation tensors with a Q/DQ pair: inputs of the projections and of both attention MatMuls
QUANTIZED = {"h", "q", "kt", "p", "v", "ctx", "h1", "g"}
WEIGHTS = {"wq", "wk", "wv", "wo", "w1", "w2"}


def _feeds(rng):
    mask = np.zeros((2, 1, 5), np.float32)
    mask[1, 0, 4] = -10000.0  # one padded token, as BERT's extended attention mask
    return {"x": rng.standard_normal((2, 5, 8)).astype(np.float32) * 2, "mask": mask}


def _build(rng):
    model = g.attention_block(rng)
    feeds = _feeds(rng)
    qdq, summary = build_qdq(model, g.amax_of(model, feeds))
    check(qdq)
    return model, feeds, qdq, summary


def test_quantized_tensors_are_the_matmul_inputs_only(rng):
    model, _, qdq, summary = _build(rng)
    assert set(summary.activations) == QUANTIZED and len(summary.activations) == len(QUANTIZED)
    assert set(summary.weights) == WEIGHTS and set(summary.weights.values()) == {1}  # MatMul weight [K, N]: axis N
    assert set(summary.quantized_nodes.values()) == {"MatMul"} and len(summary.quantized_nodes) == 8
    assert summary.residual_adds == []  # no Conv: transformer residual Adds are not quantized
    ops = [n.op_type for n in qdq.graph.node]
    assert ops.count("QuantizeLinear") == len(QUANTIZED) and ops.count("DequantizeLinear") == len(QUANTIZED) + len(WEIGHTS)
    # a --qdq-only run collects exactly these tensors (no Add inputs: no Add is fed by a Conv)
    assert set(activation_tensors(model)) == QUANTIZED


def test_every_dequantized_tensor_feeds_a_matmul_and_nothing_else(rng):
    _, _, qdq, _ = _build(rng)
    dq_outputs = {n.output[0] for n in qdq.graph.node if n.op_type == "DequantizeLinear"}
    readers = {n.op_type for n in qdq.graph.node for t in n.input if t in dq_outputs}
    assert readers == {"MatMul"}
    by_name = {n.name: n for n in qdq.graph.node}
    for name in ("qk", "pv"):  # activation x activation: both inputs
        assert all(t in dq_outputs for t in by_name[name].input), name
    for name in ("q_proj", "k_proj", "v_proj", "o_proj", "ffn1", "ffn2"):
        assert all(t in dq_outputs for t in by_name[name].input), name
    # q, k and v projections share one Q/DQ pair of the LayerNorm output
    assert len({by_name[n].input[0] for n in ("q_proj", "k_proj", "v_proj")}) == 1


def test_softmax_layernorm_gelu_mask_and_residual_adds_read_float(rng):
    _, _, qdq, _ = _build(rng)
    by_name = {n.name: n for n in qdq.graph.node}
    float_inputs = {
        "softmax": ["sm"], "ln0": ["x"], "mask_add": ["sd", "mask"], "qk_scale": ["s"],
        "residual1": ["o", "h"], "residual2": ["f2", "h1"],  # the residual stream stays float
        "ln1_mean": ["r"], "ln1_sub": ["r", "mu"], "ln1_pow": ["dev"], "ln1_div": ["dev", "sd1"], "ln1_beta": ["ng"],
        "gelu_div": ["f"], "gelu_erf": ["fs"], "gelu_mul": ["f", "e1"], "k_transpose": ["k"],
    }
    for name, inputs in float_inputs.items():
        assert [t for t in by_name[name].input if t in inputs] == inputs, name
    # no Q/DQ on any output of Softmax, LayerNormalization, Erf or the residual Adds other than the MatMul edges
    quantized_sources = {n.input[0] for n in qdq.graph.node if n.op_type == "QuantizeLinear"}
    assert quantized_sources == QUANTIZED
    assert not quantized_sources & {"sm", "r", "y", "e", "e1", "fe", "o", "f2", "nrm", "s", "sd"}


def test_the_quantized_layer_tracks_the_float_one(rng):
    model, feeds, qdq, _ = _build(rng)
    (ref,), (out,) = g.run(model, feeds), g.run(qdq, feeds)
    p = PowerSum()
    p.add(ref, out)
    assert p.sqnr_db > 25, p.sqnr_db
