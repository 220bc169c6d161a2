"""auto's selection rule (issue 23): the best held-out SQNR (a classifier's candidates clearly behind in top-1
agreement out first); the default whenever its noise sits in too few samples to rank on. And `shrunk`, the
second round's rule, still measured by benchmarks/auto_regret.py."""

from __future__ import annotations

import numpy as np
import pytest

from int8calib.evaluate.metrics import OutputComparison
from int8calib.evaluate.selection import (MIN_EFFECTIVE_SAMPLES, PRIOR_DB, PRIOR_SPREAD_DB, effective_samples, paired,
                                         paired_differences, select, shrunk, sqnr_db)


def _errors(noise: dict[str, list[float]], signal: float = 100.0) -> dict:
    return {name: {"signal": np.full(len(v), signal), "noise": np.array(v, float), "flips": None} for name, v in noise.items()}


def test_a_candidate_with_half_the_noise_on_every_sample_wins_by_3_dB_in_every_resample():
    errors = _errors({"mse": [2.0, 4.0, 1.0, 3.0] * 5, "percentile:99.99": [1.0, 2.0, 0.5, 1.5] * 5})
    diffs = paired_differences(errors, "mse")
    np.testing.assert_allclose(diffs["percentile:99.99"], 10 * np.log10(2.0))  # the same in every resample
    assert sqnr_db(errors["percentile:99.99"]) - sqnr_db(errors["mse"]) == pytest.approx(10 * np.log10(2.0))
    chosen = select(errors)
    assert chosen.chosen == "percentile:99.99" and chosen.within_noise == []
    assert chosen.reason == "the best held-out SQNR, +3.01 dB over mse"
    # shrunk: no resample disagrees (standard error 0), the measurement is taken as it is, whatever the record
    assert shrunk(errors).reason == "expected to beat mse: percentile:99.99 measured +3.01 dB, +3.01 dB expected " \
                                    "after shrinking toward its record on other models (+0.00 dB)"


def test_effective_samples_count_the_samples_that_carry_the_noise():
    assert effective_samples([2.0] * 24) == 24.0
    assert effective_samples([5.0, 0.0, 0.0, 0.0]) == 1.0
    assert effective_samples([3.0, 1.0]) == pytest.approx(16.0 / 10.0)
    assert effective_samples([1.0] * 19 + [30.0]) == pytest.approx(49.0 ** 2 / (19 + 900))


def test_one_sample_that_carries_the_noise_does_not_displace_the_default():
    # 20 samples alike for both candidates but one, where the other has a tenth of mse's noise: its total
    # SQNR is 8.9 dB higher, but that one sample holds 61 % of mse's noise: 2.6 effective samples, nothing to rank on
    mse = [1.0] * 19 + [30.0]
    other = [1.0] * 19 + [3.0]
    errors = _errors({"mse": mse, "percentile:99.99": other})
    assert sqnr_db(errors["percentile:99.99"]) - sqnr_db(errors["mse"]) == pytest.approx(10 * np.log10(49 / 22))
    chosen = select(errors)
    assert chosen.chosen == "mse" and chosen.within_noise == ["percentile:99.99"]
    assert chosen.reason == f"mse's error sits in 2.6 effective samples of 20, fewer than {MIN_EFFECTIVE_SAMPLES:g}: too few to rank on"
    # (the rule before it, paired 80 %, kept mse too: the bootstrap leaves that sample out of a third of the resamples)
    assert paired(errors).chosen == "mse"
    assert shrunk(errors).chosen == "mse"  # the same gate
    # ... past the gate the best SQNR wins, and for shrunk a gain seen on every sample is no luck, even for a
    # candidate with a poor record (percentile 99.9)
    errors = _errors({"mse": [1.0, 1.2] * 10, "percentile:99.9": [0.8, 1.0] * 10})
    assert select(errors).chosen == "percentile:99.9" and select(errors).reason.startswith("the best held-out SQNR, +")
    assert PRIOR_DB["percentile:99.9"] < -3.0 and shrunk(errors).chosen == "percentile:99.9"
    # the default with the best SQNR stays, and says so
    assert select(_errors({"mse": [1.0] * 10, "minmax": [1.1] * 10})).reason == "mse has the best held-out SQNR"


def test_a_modest_lead_wins_for_a_candidate_with_a_good_record_and_not_for_one_with_a_poor_record():
    # 16 samples of varied noise (12.8 effective); the challenger's noise is mse's times 0.3-1.4: a lead of
    # 0.38 dB measured with a standard error of 0.37 dB
    rng = np.random.default_rng(0)
    mse = rng.lognormal(0.0, 0.6, 16)
    other = mse * rng.uniform(0.3, 1.4, 16)
    measured = 10 * np.log10(mse.sum() / other.sum())
    for name, record in (("percentile:99.99", 0.0), ("minmax", -1.11), ("percentile:99.9", -3.23)):
        assert PRIOR_DB[name] == record
        errors = _errors({"mse": mse, name: other})
        se = float(np.std(paired_differences(errors, "mse")[name]))
        expected = (measured / se ** 2 + record / PRIOR_SPREAD_DB ** 2) / (1 / se ** 2 + 1 / PRIOR_SPREAD_DB ** 2)
        chosen = shrunk(errors)
        assert f"{name} measured {measured:+.2f} dB, {expected:+.2f} dB expected" in chosen.reason
        assert chosen.chosen == (name if expected > 0 else "mse")
    assert measured == pytest.approx(0.38, abs=0.01) and se == pytest.approx(0.37, abs=0.02)
    assert effective_samples(mse) == pytest.approx(12.8, abs=0.05)
    # level with mse on other models: any lead wins; 1.1 dB behind there: this lead still outweighs it; 3.2 dB: no
    assert [shrunk(_errors({"mse": mse, n: other})).chosen for n in ("percentile:99.99", "minmax", "percentile:99.9")] \
        == ["percentile:99.99", "minmax", "mse"]


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
