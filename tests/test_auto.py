"""--method auto (#15 point 1): every candidate from one pass, ranked on held-out samples."""

from __future__ import annotations

import json

import numpy as np
import pytest

from int8calib.api import AUTO_CANDIDATES, calibrate
from int8calib.cli import main
from int8calib.writers.cache import read_cache

from tinymodels import residual_cnn

LABELS = [label for label, _, _ in AUTO_CANDIDATES]


@pytest.fixture
def outliers(tmp_path):
    """residual_cnn and 200 samples of N(0, 1) where 4 calibration samples (never held out: index % 5 != 4)
    carry a few values of 1000: minmax stretches the ranges to them and loses every ordinary value.
    40 held out: enough for one split (fewer than CROSS_VALIDATE_BELOW: cross-validation, tested below)."""
    residual_cnn(tmp_path / "m.onnx")
    rng = np.random.default_rng(0)
    x = rng.standard_normal((200, 3, 8, 8)).astype(np.float32)
    for i in (0, 21, 42, 63):
        x[i, :, 0, 0] = 1000.0
    np.save(tmp_path / "x.npy", x)
    return tmp_path


def test_auto_picks_a_robust_method_and_tables_every_candidate(outliers):
    result = calibrate(outliers / "m.onnx", str(outliers / "x.npy"), method="auto", cache=outliers / "c.cache",
                       qdq=outliers / "q.onnx", batch_size=16)
    choice = result.auto
    assert [row["candidate"] for row in sorted(choice.table, key=lambda r: LABELS.index(r["candidate"]))] == LABELS
    assert choice.output == "logits" and choice.scores and choice.samples == 40 and not choice.folds
    by = {row["candidate"]: row for row in choice.table}
    best = choice.table[0]
    assert result.chosen_method == choice.chosen == best["candidate"] != "minmax"
    # minmax really is far behind: the outliers cost it most of the output SQNR
    assert _db(by["minmax"]) < _db(best) - 10
    # the rule (evaluate.selection): the best SQNR of the finalists (measured on all 40), mse where they cannot rank
    finalists = [r for r in choice.table if not r.get("screened_out") and not r.get("same_as")]
    assert "mse" in [r["candidate"] for r in finalists]  # the default is always measured on every sample
    assert choice.chosen == "mse" or _db(best) > _db(by["mse"])
    assert set(choice.within_noise) <= {r["candidate"] for r in finalists} - {choice.chosen}
    assert by["minmax"]["expected_top1_agreement"] < best["expected_top1_agreement"]
    assert result.method == "auto" and choice.refit  # (a robust winner is not entropy2, which keeps 4 in 5)
    # the winner's ranges are refit on all 200 samples: exactly what --method <winner> gives on all of them
    method, params = __import__("int8calib.api", fromlist=["auto_candidate"]).auto_candidate(choice.chosen)
    alone = calibrate(outliers / "m.onnx", str(outliers / "x.npy"), method=method, batch_size=16, **params)
    assert result.amax == alone.amax and result.samples == 200
    # the cache is the chosen method's, and its sidecar says auto chose it and why
    cache = read_cache(outliers / "c.cache")
    assert cache.algorithm == result.algorithm
    side = json.loads((outliers / "c.cache.json").read_text())
    assert side["method"] == method and side["chosen_by"]["chosen"] == choice.chosen
    assert len(side["chosen_by"]["candidates"]) == len(LABELS)
    assert (outliers / "q.onnx").is_file()


def test_with_an_accuracy_budget_the_held_out_samples_stay_out_of_the_ranges(outliers):
    result = calibrate(outliers / "m.onnx", str(outliers / "x.npy"), method="auto", qdq=outliers / "q.onnx",
                       accuracy_budget=100.0, batch_size=16)
    assert not result.auto.refit and result.samples == 160
    assert result.amax == result.by_method[result.chosen_method] and result.quantization.samples == 40


def test_auto_on_a_non_scores_output_ranks_by_sqnr(tmp_path):
    residual_cnn(tmp_path / "m.onnx", size=4)
    rng = np.random.default_rng(1)
    np.save(tmp_path / "x.npy", rng.standard_normal((20, 3, 4, 4)).astype(np.float32))
    # residual_cnn's only output is [N, 5] scores; drop the class count to make it "anything else"
    import onnx

    m = onnx.load(tmp_path / "m.onnx")
    m.graph.output[0].type.tensor_type.shape.dim[1].dim_param = "C"
    onnx.save(m, tmp_path / "m2.onnx")
    result = calibrate(tmp_path / "m2.onnx", str(tmp_path / "x.npy"), method="auto", batch_size=8)
    table = result.auto.table  # 20 samples: ranked by cross-validation, without TensorRT's entropy2
    assert not result.auto.scores and len(table) == len(LABELS) and result.auto.folds == 5
    assert table[0]["candidate"] == result.chosen_method  # the chosen one first, the others best first
    assert [_db(r) for r in table[1:]] == sorted((_db(r) for r in table[1:]), reverse=True)


def test_cli_prints_the_table(outliers, capsys):
    assert main(["calibrate", str(outliers / "m.onnx"), "--data", str(outliers / "x.npy"), "--method", "auto",
                 "--qdq", str(outliers / "q.onnx")]) == 0
    out = capsys.readouterr().out
    assert "--method auto: held-out error of 'logits' on 40 samples" in out
    for label in LABELS:
        assert label in out
    assert "<- chosen" in out and "chosen: " in out and ("ahead of" in out or "dB higher" in out)
    assert "why: " in out and "on 40 samples (95 % bootstrap interval of the paired SQNR difference)" in out


@pytest.mark.parametrize("extra, message", [
    (["--precision", "fp16", "--qdq", "OUT"], "--precision fp16"),
    (["--percentile", "99.9"], "--percentile applies to --method percentile"),
    (["--output", "nope"], "no output 'nope'"),
])
def test_bad_combinations_exit_2_before_reading_data(outliers, capsys, extra, message):
    extra = [str(outliers / "q.onnx") if a == "OUT" else a for a in extra]
    # the data does not exist: the flags must be refused before it is read
    code = main(["calibrate", str(outliers / "m.onnx"), "--data", str(outliers / "missing.npy"), "--method", "auto", *extra])
    assert code == 2
    err = capsys.readouterr().err
    assert message in err


def test_api_refuses_method_parameters(outliers):
    from int8calib.errors import Int8CalibError

    with pytest.raises(Int8CalibError, match="drop --percentile"):
        calibrate(outliers / "m.onnx", str(outliers / "missing.npy"), method="auto", percentile=99.9)


def test_from_histograms_without_data_exits_2(outliers, capsys):
    assert main(["calibrate", str(outliers / "m.onnx"), "--data", str(outliers / "x.npy"), "--method", "minmax",
                 "--histograms", str(outliers / "h.npz")]) == 0
    capsys.readouterr()
    assert main(["calibrate", "--from-histograms", str(outliers / "h.npz"), "--method", "auto"]) == 2
    assert "--method auto needs --data" in capsys.readouterr().err
    # with --data, the samples the statistics did not see are the held-out ones
    result = calibrate(from_histograms=outliers / "h.npz", data=str(outliers / "x.npy"), method="auto")
    assert len(result.auto.table) == len(LABELS) and result.auto.samples == 200


def _db(row) -> float:
    return 300.0 if row["sqnr_db"] is None else row["sqnr_db"]


def test_identical_ranges_are_measured_once_and_losers_screened_out_early(tmp_path, monkeypatch):
    """Six candidates, two with the same ranges, 40 held-out samples (over SCREEN_SAMPLES): every distinct
    candidate is screened on the first SCREEN_SAMPLES samples, the FINALISTS best are measured on all 40."""
    from int8calib.batching import Batch
    from int8calib.evaluate import mixed
    from tinymodels import reference_activations

    model = residual_cnn()
    x = np.random.default_rng(2).standard_normal((40, 3, 8, 8)).astype(np.float32)
    exact = {k: float(np.abs(v).max()) for k, v in reference_activations(model, x).items()}
    factors = {"x1": 1.0, "copy-of-x1": 1.0, "x1.2": 1.2, "x0.02": 0.02, "x1.5": 1.5, "x200": 200.0}
    candidates = {name: {k: v * f for k, v in exact.items()} for name, f in factors.items()}
    batches = [Batch({"input": x[i:i + 10]}, 10, []) for i in range(0, 40, 10)]
    calls = []
    measure = mixed._compare
    monkeypatch.setattr(mixed, "_compare", lambda *a, **k: calls.append(k.get("rows")) or measure(*a, **k))
    choice = mixed.choose_method(model, candidates, batches)
    assert calls == [mixed.SCREEN_SAMPLES] * 5 + [None] * mixed.FINALISTS  # five distinct candidates screened, three finalists
    by = {r["candidate"]: r for r in choice.table}
    assert by["copy-of-x1"]["same_as"] == "x1" and by["copy-of-x1"]["sqnr_db"] == by["x1"]["sqnr_db"]
    finalists = [r["candidate"] for r in choice.table if not r.get("screened_out") and not r.get("same_as")]
    assert len(finalists) == mixed.FINALISTS and "x0.02" not in finalists and "x200" not in finalists
    # the finalists' numbers are those of a full measurement on all 40 samples, best first
    full = mixed.choose_method(model, {k: candidates[k] for k in finalists}, batches)
    assert [r["candidate"] for r in full.table] == finalists and choice.chosen == full.chosen
    assert [r["sqnr_db"] for r in full.table] == [by[k]["sqnr_db"] for k in finalists]
    assert choice.runner_up["candidate"] == finalists[1]
    text = choice.format_table()
    assert "same ranges as x1" in text and f"screened out on the first {mixed.SCREEN_SAMPLES} samples" in text
    assert mixed.MethodChoice.from_dict(choice.to_dict()).format_table() == text


def test_a_feed_dict_source_is_split_like_sample_files(outliers):
    """A data-loader script's stream holds out the same samples (every 5th over the stream) as files do."""
    from int8calib.sources import FeedDictSource

    x = np.load(outliers / "x.npy")

    def load_data():
        for start in range(0, 200, 7):  # batches of 7: the split runs across batch boundaries
            yield {"input": x[start:start + 7]}

    # no bias correction (nor weight rounding): their float pass takes 128 calibration samples spread over a
    # list of files but the first 128 of a stream, and the split, not those passes, is what is compared here
    files = calibrate(outliers / "m.onnx", str(outliers / "x.npy"), method="auto", qdq=outliers / "a.onnx", batch_size=16,
                      bias_correction=False)
    script = calibrate(outliers / "m.onnx", FeedDictSource(load_data), method="auto", qdq=outliers / "b.onnx", batch_size=16,
                       bias_correction=False)
    assert script.chosen_method == files.chosen_method and script.auto.samples == files.auto.samples == 40
    for a, b in zip(files.auto.table, script.auto.table):
        assert a["candidate"] == b["candidate"] and a["sqnr_db"] == pytest.approx(b["sqnr_db"], abs=1e-3)
    # the winner's ranges, refit on all 200 samples, agree too (minmax-like methods do not depend on batching)
    assert script.amax == pytest.approx(files.amax, rel=1e-6)


def test_report_evaluate_and_inspect_show_what_auto_chose(outliers, capsys):
    pytest.importorskip("matplotlib")
    result = calibrate(outliers / "m.onnx", str(outliers / "x.npy"), method="auto", qdq=outliers / "q.onnx",
                       report=outliers / "r.html", batch_size=16)
    html = (outliers / "r.html").read_text()
    assert f"Method chosen by --method auto: {result.chosen_method}</h2>" in html
    assert all(f"<td>{label}</td>" in html or f"<td><b>{label}</b></td>" in html for label in LABELS)
    assert "with their biases corrected" in html
    assert "<h2>Float computation of the Q/DQ model: INT8 + FP16</h2>" in html  # the model written beside it
    capsys.readouterr()
    assert main(["evaluate", "--fp32", str(outliers / "m.onnx"), "--int8", str(outliers / "q.onnx"),
                 "--data", str(outliers / "x.npy"), "-q"]) == 0
    out = capsys.readouterr().out
    method, _ = __import__("int8calib.api", fromlist=["auto_candidate"]).auto_candidate(result.chosen_method)
    assert f"calibration        auto -> {method}, biases corrected (4 layers)" in out
    assert f"  chosen: {result.chosen_method}, ahead of" in out
    assert "precision          INT8 + FP16; FP32 kept: none" in out
    assert main(["inspect", str(outliers / "q.onnx")]) == 0
    shown = capsys.readouterr().out
    assert '"chosen": "' + result.chosen_method + '"' in shown and "biases corrected: yes, 4 layer(s)" in shown


def test_few_samples_are_ranked_by_cross_validation(outliers):
    """100 samples hold out only 20: every sample is held out once instead, in 5 folds."""
    x = np.load(outliers / "x.npy")[:100]
    np.save(outliers / "few.npy", x)
    result = calibrate(outliers / "m.onnx", str(outliers / "few.npy"), method="auto", cache=outliers / "c.cache",
                       qdq=outliers / "q.onnx", batch_size=16)
    choice = result.auto
    assert choice.folds == 5 and choice.samples == 100 and choice.refit and choice.bias_corrected
    labels = [r["candidate"] for r in choice.table]
    assert sorted(labels) == sorted(LABELS) and "entropy2" not in labels  # entropy2-stable stands for TensorRT's
    # the outliers are held out too now (in folds 0-3): SQNR follows them, agreement the ordinary samples
    minmax = choice.table[labels.index("minmax")]
    assert choice.chosen != "minmax" and minmax["expected_top1_agreement"] < choice.table[0]["expected_top1_agreement"] - 20
    # the winner's ranges come from all 100 samples: exactly --method <winner> on them
    method, params = __import__("int8calib.api", fromlist=["auto_candidate"]).auto_candidate(choice.chosen)
    alone = calibrate(outliers / "m.onnx", str(outliers / "few.npy"), method=method, batch_size=16, **params)
    assert result.amax == alone.amax and result.samples == 100
    side = json.loads((outliers / "c.cache.json").read_text())
    assert side["chosen_by"]["cross_validation_folds"] == 5 and side["chosen_by"]["chosen"] == choice.chosen
    assert "5-fold cross-validation: each held out once" in choice.format_table()
    # the default writes INT8 + FP16: its candidates were measured as float32 twins, and the table says so
    assert choice.twins and side["chosen_by"]["scoring_twins"] is True
    from int8calib.evaluate.mixed import MethodChoice

    assert "as INT8 + FP32 twins of the INT8 + FP16 models" in MethodChoice.from_dict(side["chosen_by"]).format_table()


def test_fold_comparisons_add_up_to_one_measurement_over_all_samples():
    """With the same ranges in every fold, cross-validation measures what one comparison over every
    sample does: signal and noise powers and agreement are sums over samples."""
    from int8calib.batching import Batch
    from int8calib.evaluate import mixed
    from tinymodels import reference_activations

    model = residual_cnn()
    x = np.random.default_rng(5).standard_normal((30, 3, 8, 8)).astype(np.float32)
    exact = {k: float(np.abs(v).max()) for k, v in reference_activations(model, x).items()}
    candidates = {"x1": exact, "x0.5": {k: v * 0.5 for k, v in exact.items()}}
    batches = [Batch({"input": x[i:i + 6]}, 6, []) for i in range(0, 30, 6)]
    whole = mixed.choose_method(model, candidates, batches)  # 30 samples: no screening
    folds = mixed.choose_method_by_folds(model, [(candidates, [b]) for b in batches])
    assert folds.folds == 5 and folds.samples == whole.samples == 30 and folds.chosen == whole.chosen
    for a, b in zip(whole.table, folds.table):
        assert a["candidate"] == b["candidate"]
        assert a["sqnr_db"] == pytest.approx(b["sqnr_db"], abs=1e-3)
        assert a["expected_top1_agreement"] == pytest.approx(b["expected_top1_agreement"], abs=1e-6)
        assert a["top1_agreement"] == b["top1_agreement"]


def test_screening_keeps_near_ties_beyond_the_finalists():
    """Screening drops clear losers only: a fourth candidate within SCREEN_MARGIN_DB of the best on the
    screening samples goes on to all of them."""
    from int8calib.batching import Batch
    from int8calib.evaluate import mixed
    from tinymodels import reference_activations

    model = residual_cnn()
    x = np.random.default_rng(2).standard_normal((40, 3, 8, 8)).astype(np.float32)
    exact = {k: float(np.abs(v).max()) for k, v in reference_activations(model, x).items()}
    factors = {"x1": 1.0, "x1.01": 1.01, "x0.99": 0.99, "x1.02": 1.02, "x200": 200.0}
    candidates = {name: {k: v * f for k, v in exact.items()} for name, f in factors.items()}
    batches = [Batch({"input": x[i:i + 10]}, 10, []) for i in range(0, 40, 10)]
    choice = mixed.choose_method(model, candidates, batches)
    screened = [r["candidate"] for r in choice.table if r.get("screened_out")]
    assert screened == ["x200"]  # the four near-ties all measured on every sample
    assert all(r["sqnr_db"] is not None for r in choice.table)
