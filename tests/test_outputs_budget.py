"""--output and the budgets (#16 point 4): the output watched, --min-sqnr, checks before any data is read."""

from __future__ import annotations

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

from int8calib.cli import main


def _multi_output_model(rng) -> onnx.ModelProto:
    """x [N, 6] -> MatMul -> Relu -> MatMul -> feat [N, 2, 4]; feat -> MatMul -> scores [N, 3];
    the first graph output is an int64 pass-through (ArgMax), as in exported transformers."""
    inits = {
        "w1": rng.standard_normal((6, 16)).astype(np.float32),
        "w2": rng.standard_normal((16, 8)).astype(np.float32),
        "w3": rng.standard_normal((8, 3)).astype(np.float32),
        "shape": np.array([-1, 2, 4], np.int64),
    }
    nodes = [
        helper.make_node("MatMul", ["x", "w1"], ["h"], "fc1"),
        helper.make_node("Relu", ["h"], ["r"], "relu"),
        helper.make_node("MatMul", ["r", "w2"], ["f"], "fc2"),
        helper.make_node("Reshape", ["f", "shape"], ["feat"], "reshape"),
        helper.make_node("MatMul", ["f", "w3"], ["scores"], "fc3"),
        helper.make_node("ArgMax", ["scores"], ["idx"], "argmax", axis=1, keepdims=0),
    ]
    outputs = [
        helper.make_tensor_value_info("idx", TensorProto.INT64, ["N"]),
        helper.make_tensor_value_info("feat", TensorProto.FLOAT, ["N", 2, 4]),
        helper.make_tensor_value_info("scores", TensorProto.FLOAT, ["N", 3]),
    ]
    graph = helper.make_graph(
        nodes, "g", [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", 6])], outputs,
        [numpy_helper.from_array(v, k) for k, v in inits.items()],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    onnx.checker.check_model(model, full_check=True)
    return model


@pytest.fixture
def multi(tmp_path, rng):
    onnx.save(_multi_output_model(rng), tmp_path / "m.onnx")
    np.save(tmp_path / "x.npy", rng.standard_normal((40, 6)).astype(np.float32))
    return tmp_path


def test_choose_output_skips_integer_outputs(rng):
    from int8calib.errors import Int8CalibError
    from int8calib.evaluate.outputs import check_budget, choose_output

    model = _multi_output_model(rng)
    assert choose_output(model).name == "feat"
    assert choose_output(model, "scores").is_scores and not choose_output(model).is_scores
    with pytest.raises(Int8CalibError, match="output 'idx' .*int64.* is not floating-point"):
        choose_output(model, "idx")
    assert check_budget(model, None, None, 20.0).name == "feat"
    assert check_budget(model, "scores", 0.5, None).name == "scores"
    assert check_budget(model, None, None, None) is None


BAD = [
    (["--accuracy-budget", "0.5"], "--accuracy-budget: output 'feat' (float32 [N, 2, 4]) is not [N, classes] scores"),
    (["--accuracy-budget", "0.5", "--output", "idx"], "--output idx: output 'idx' (int64 [N]) is not floating-point"),
    (["--min-sqnr", "30", "--output", "nope"], "--output nope: the model has no output 'nope' (outputs: 'idx'"),
    (["--output", "feat", "--method", "mse"], "--output feat applies to --method auto, --accuracy-budget or --min-sqnr, and none is given"),
    (["--min-sqnr", "30", "--accuracy-budget", "1"], "give either --accuracy-budget (top-1 agreement) or --min-sqnr"),
    (["--min-sqnr", "30", "--precision", "fp16"], "--accuracy-budget / --min-sqnr apply to --precision int8, not fp16"),
    (["--min-sqnr", "inf"], "--min-sqnr must be a finite number of dB"),
]


@pytest.mark.parametrize("flags,message", BAD)
def test_calibrate_bad_budget_flags_exit_2_before_reading_data(multi, capsys, flags, message):
    """The data does not exist: the flags are refused from the model alone."""
    rc = main(["calibrate", str(multi / "m.onnx"), "--data", str(multi / "missing" / "*.npy"),
               "--qdq", str(multi / "q.onnx"), *flags])
    err = capsys.readouterr().err.strip()
    assert rc == 2 and len(err.splitlines()) == 1 and message in err, err
    assert not (multi / "q.onnx").exists()


def test_evaluate_bad_output_exit_2_before_reading_data(multi, capsys):
    rc = main(["evaluate", "--fp32", str(multi / "m.onnx"), "--int8", str(multi / "m.onnx"),
               "--data", str(multi / "missing.npy"), "--output", "idx"])
    err = capsys.readouterr().err.strip()
    assert rc == 2 and err == ("int8calib: error: --output idx: output 'idx' (int64 [N]) is not floating-point; "
                               "quantization error is measured on float outputs")


def test_min_sqnr_reaches_its_target_on_held_out_data(multi):
    """All-INT8 SQNR of 'feat' is below the target; the layers kept in float bring it above, and the
    written Q/DQ model measures the same SQNR on the held-out samples with `evaluate`."""
    from int8calib.api import calibrate
    from int8calib.evaluate import evaluate

    x = np.load(multi / "x.npy")
    base = calibrate(multi / "m.onnx", str(multi / "x.npy"), method="minmax", qdq=multi / "q0.onnx", min_sqnr=-100.0,
                     batch_size=4).quantization
    assert base.kept == [] and base.output == "feat" and base.samples == 8
    target = base.int8_sqnr_db + 6.0
    result = calibrate(multi / "m.onnx", str(multi / "x.npy"), method="minmax", qdq=multi / "q.onnx", min_sqnr=target,
                       batch_size=4)
    mixed = result.quantization
    assert mixed.int8_sqnr_db == base.int8_sqnr_db and mixed.kept and mixed.agreement is None
    assert mixed.sqnr_db is None or mixed.sqnr_db >= target  # None: identical to the float model
    np.save(multi / "held.npy", x[4::5])  # the held-out samples: every 5th
    check = evaluate(multi / "m.onnx", multi / "q.onnx", str(multi / "held.npy")).to_dict()
    assert check["output"] == "feat" and check["n"] == 8 and check["sqnr_db"] == mixed.sqnr_db


def test_accuracy_budget_on_a_named_scores_output(multi):
    from int8calib.api import calibrate

    result = calibrate(multi / "m.onnx", str(multi / "x.npy"), method="minmax", qdq=multi / "q.onnx",
                       accuracy_budget=0.0, output="scores", batch_size=4)
    mixed = result.quantization
    assert mixed.output == "scores" and mixed.samples == 8 and mixed.min_sqnr is None
    assert mixed.expected_loss <= 0.0 and mixed.agreement == 100.0


def test_evaluate_defaults_to_the_first_float_output_and_names_it(multi, capsys):
    rc = main(["evaluate", "--fp32", str(multi / "m.onnx"), "--int8", str(multi / "m.onnx"), "--data", str(multi / "x.npy")])
    out = capsys.readouterr().out
    assert rc == 0 and out.splitlines()[0].split() == ["output", "feat"] and "output SQNR        inf dB" in out
    rc = main(["evaluate", "--fp32", str(multi / "m.onnx"), "--int8", str(multi / "m.onnx"), "--data", str(multi / "x.npy"),
               "--output", "scores"])
    out = capsys.readouterr().out
    assert rc == 0 and "top-1 agreement    100.00 %" in out
