"""Acceptance on real non-classifier models from PyPI wheels (#16 point 6): `calibrate --qdq`,
`evaluate --output` and a `--min-sqnr` budget run on each, invalid combinations refused before
any data is read. Models and data: tests/real_models.py."""

from __future__ import annotations

import json

import pytest

from int8calib.cli import main
from real_models import audio_chunks, real_model, text_lines, token_files

pytestmark = [pytest.mark.acceptance, pytest.mark.slow]


def _run(capsys, *args) -> tuple[int, str, str]:
    rc = main([str(a) for a in args])
    captured = capsys.readouterr()
    assert "Traceback" not in captured.err, captured.err
    return rc, captured.out, captured.err


def _case(name, tmp_path, even_images=None):
    """(model, calibration data, held-out data, extra flags) for each model."""
    model = real_model(name)
    if name == "ppocr-det":
        (tmp_path / "calib.txt").write_text("\n".join(even_images[0:20:2]) + "\n")
        (tmp_path / "held.txt").write_text("\n".join(even_images[1:8:2]) + "\n")
        return model, tmp_path / "calib.txt", tmp_path / "held.txt", ["--preprocess", "ppocr-det", "--batch-size", "4"]
    if name == "ppocr-rec":
        text_lines(tmp_path / "calib", 30, seed=0)
        text_lines(tmp_path / "held", 10, seed=1)
        return model, tmp_path / "calib", tmp_path / "held", ["--preprocess", "ppocr-rec", "--batch-size", "8"]
    if name == "minilm":
        token_files(tmp_path / "calib", 30, seed=0)
        token_files(tmp_path / "held", 10, seed=1)
        return model, tmp_path / "calib", tmp_path / "held", ["--batch-size", "8"]
    audio_chunks(tmp_path / "calib", 20, seed=0)
    audio_chunks(tmp_path / "held", 10, seed=1)
    return model, tmp_path / "calib", tmp_path / "held", ["--batch-size", "8"]


# (model, method, output watched by default, --min-sqnr target in dB, a second float output for evaluate --output)
CASES = [
    ("ppocr-det", "percentile", "sigmoid_0.tmp_0", 20.0, None),
    ("ppocr-rec", "minmax", "softmax_11.tmp_0", 20.0, None),
    ("minilm", "percentile", "onnx::Shape_422", 25.0, "461"),
    ("silero-vad", "minmax", "output", 30.0, "stateN"),
]


@pytest.mark.parametrize("name,method,output,target,other", CASES, ids=[c[0] for c in CASES])
def test_calibrate_evaluate_and_min_sqnr_on_a_real_model(tmp_path, capsys, request, name, method, output, target, other):
    even = request.getfixturevalue("even_images") if name == "ppocr-det" else None
    model, calib, held, flags = _case(name, tmp_path, even)
    qdq, budget = tmp_path / "q.onnx", tmp_path / "budget.onnx"

    rc, _, err = _run(capsys, "calibrate", model, "--data", calib, *flags, "--method", method, "--qdq", qdq)
    assert rc == 0 and qdq.is_file(), err

    rc, out, err = _run(capsys, "evaluate", "--fp32", model, "--int8", qdq, "--data", held, *flags,
                        "--json", tmp_path / "e.json")
    report = json.loads((tmp_path / "e.json").read_text())
    assert rc == 0 and out.splitlines()[0].split() == ["output", output] and report["output"] == output, err
    assert report["n"] == {"ppocr-det": 4, "ppocr-rec": 10, "minilm": 10, "silero-vad": 10}[name]
    if other is not None:
        rc, out, err = _run(capsys, "evaluate", "--fp32", model, "--int8", qdq, "--data", held, *flags, "--output", other)
        assert rc == 0 and out.splitlines()[0].split() == ["output", other], err

    from int8calib.api import calibrate

    pre = flags[1] if flags[0] == "--preprocess" else None
    batch = int(flags[-1])
    # the budget's search, without weight rounding: the CLI run above takes the default path with it, and
    # rounding the weights again here would only slow the test (the detector's Gram matrices at 736 px)
    result = calibrate(model, str(calib), pre, method=method, batch_size=batch, qdq=budget, min_sqnr=target,
                       weight_rounding=False)
    mixed = result.quantization
    assert mixed.output == output and mixed.min_sqnr == target
    assert mixed.sqnr_db is None or mixed.sqnr_db >= target  # None: identical to the float model
    # the held-out samples are every 5th calibration sample: the written model reaches the target on them
    samples = sorted(str(p) for p in (calib.iterdir() if calib.is_dir() else []))
    if not samples:
        samples = calib.read_text().split()
    from int8calib.evaluate import evaluate

    check = evaluate(model, budget, samples[4::5], pre, batch_size=batch).to_dict()
    assert check["sqnr_db"] == pytest.approx(mixed.sqnr_db, abs=2e-4)  # both rounded to 4 decimals
    if name == "silero-vad":  # its graph is one If on the sample rate: nothing at the top level to quantize
        assert mixed.int8_sqnr_db is None and mixed.kept == []
    else:
        assert mixed.int8_sqnr_db is not None and mixed.int8_sqnr_db < target and mixed.kept


@pytest.mark.parametrize("name,flags,message", [
    ("minilm", ["--accuracy-budget", "0.5"],
     "--accuracy-budget: output 'onnx::Shape_422' (float32 [LayerNormalizationonnx::Shape_422_dim_0, "
     "LayerNormalizationonnx::Shape_422_dim_1, 384]) is not [N, classes] scores"),
    ("minilm", ["--min-sqnr", "20", "--output", "output"],
     "--output output: output 'output' (int64 [batch_size, sequence_length]) is not floating-point"),
    ("ppocr-rec", ["--accuracy-budget", "1", "--output", "x"], "--output x: the model has no output 'x'"),
    ("silero-vad", ["--min-sqnr", "20", "--accuracy-budget", "1"], "give either --accuracy-budget"),
])
def test_invalid_combinations_exit_2_before_reading_data(tmp_path, capsys, name, flags, message):
    rc, _, err = _run(capsys, "calibrate", real_model(name), "--data", tmp_path / "missing", "--qdq", tmp_path / "q.onnx", *flags)
    assert rc == 2 and len(err.strip().splitlines()) == 1 and message in err, err
