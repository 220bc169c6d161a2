"""auto's selection rule (issue 23): the default unless a candidate beats it clearly on paired samples."""

from __future__ import annotations

import numpy as np
import pytest

from int8calib.evaluate.metrics import OutputComparison
from int8calib.evaluate.selection import CONFIDENCE, paired, paired_differences, select, sqnr_db


def _errors(noise: dict[str, list[float]], signal: float = 100.0) -> dict:
    return {name: {"signal": np.full(len(v), signal), "noise": np.array(v, float), "flips": None} for name, v in noise.items()}


def test_a_candidate_with_half_the_noise_on_every_sample_wins_by_3_dB_in_every_resample():
    errors = _errors({"mse": [2.0, 4.0, 1.0, 3.0] * 5, "percentile:99.99": [1.0, 2.0, 0.5, 1.5] * 5})
    diffs = paired_differences(errors, "mse")
    np.testing.assert_allclose(diffs["percentile:99.99"], 10 * np.log10(2.0))  # the same in every resample
    assert sqnr_db(errors["percentile:99.99"]) - sqnr_db(errors["mse"]) == pytest.approx(10 * np.log10(2.0))
    chosen = select(errors)
    assert chosen.chosen == "percentile:99.99" and chosen.within_noise == []
    assert f"beats mse with {CONFIDENCE:.0%} confidence" in chosen.reason


def test_one_lucky_sample_does_not_displace_the_default():
    # 20 samples alike for both candidates but one, where the other has a tenth of mse's noise: its total
    # SQNR is higher (1.2 dB), but the bootstrap leaves that sample out of about a third of the resamples
    mse = [1.0] * 19 + [30.0]
    other = [1.0] * 19 + [3.0]
    errors = _errors({"mse": mse, "percentile:99.9": other})
    assert sqnr_db(errors["percentile:99.9"]) > sqnr_db(errors["mse"]) + 1.0
    chosen = select(errors)
    assert chosen.chosen == "mse" and chosen.within_noise == ["percentile:99.9"]
    # ... and once that sample's gain is seen on most samples, it is no longer luck
    errors = _errors({"mse": [1.0, 1.2] * 10, "percentile:99.9": [0.8, 1.0] * 10})
    assert paired(errors).chosen == "percentile:99.9"


def test_without_the_default_the_best_sqnr_wins():
    errors = _errors({"minmax": [4.0] * 8, "percentile:99.9": [3.9] * 8})
    assert select(errors).chosen == "percentile:99.9"


def test_per_sample_powers_add_up_to_the_totals():
    rng = np.random.default_rng(3)
    ref, test = rng.standard_normal((7, 5)), rng.standard_normal((7, 5))
    comparison = OutputComparison()
    comparison.add(ref[:3], test[:3])
    other = OutputComparison()
    other.add(ref[3:], test[3:])
    comparison.merge(other)
    np.testing.assert_allclose(comparison.per_sample("signal"), (ref ** 2).sum(axis=1))
    np.testing.assert_allclose(comparison.per_sample("noise"), ((test - ref) ** 2).sum(axis=1))
    assert comparison.per_sample("signal").sum() == pytest.approx(comparison.power.signal)
    assert comparison.per_sample("flips").shape == (7,)


def test_a_classifier_drops_only_candidates_clearly_more_than_one_sample_behind_in_agreement():
    # 100 samples; p99.99 has 20 % more noise than mse but a fifth of a sample fewer expected flips in all:
    # a difference the paired bootstrap finds certain (the flips move together) and that means nothing
    errors = _errors({"mse": [1.0] * 100, "percentile:99.99": [1.2] * 100})
    errors["mse"]["flips"] = np.full(100, 0.010)
    errors["percentile:99.99"]["flips"] = np.full(100, 0.008)
    assert select(errors).chosen == "mse"
    # 40 samples' worth of flips behind: out, whatever its SQNR
    errors["mse"]["flips"] = np.full(100, 0.41)
    chosen = select(errors)
    assert chosen.chosen == "percentile:99.99" and "mse's is" in chosen.reason
