"""How ``--method auto`` picks among its candidates from their per-sample errors on held-out samples.

A few dozen held-out samples measure each candidate's output SQNR with an error of half a dB or more,
so the candidate that looks best is often best by chance (issue 23: with 26 samples auto ranked
percentile 99.999 first by 0.5 dB where percentile 99.99 was 1.1 dB better on new data). The rules
here differ in how they treat that noise; ``benchmarks/auto_regret.py`` measures each one's regret on
unseen data over many random splits of the real models, and docs/methods.md keeps the tables that chose
:func:`shrunk` (issue 23's second round) and then :func:`gated_best`, the rule auto uses (:data:`RULE`).

Every rule reads ``errors``: per candidate (in preference order) the held-out samples' ``signal`` and
``noise`` powers of the watched output and, for a classifier, each sample's ``flips`` (top-1 flip
probability), all paired: row i is the same sample for every candidate.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Callable, Mapping

import numpy as np

DEFAULT = "mse"  # the robust default: the candidate the rules keep unless another wins clearly
CONFIDENCE = 0.80  # `paired` (auto's rule before `shrunk`): one-sided confidence a candidate needs to replace the default
RESAMPLES = 500  # bootstrap resamples of the held-out samples (seeded: auto is deterministic)

# `shrunk` (auto's rule in issue 23's second round). Each candidate's record on other models: its output-SQNR gain over mse in dB on the
# four models of benchmarks/auto_regret.py (pool B, averaged over the range sets; the benchmark prints these),
# capped at 0: no candidate starts ahead of the default. entropy2 (not in the benchmark: its histograms follow
# the batches) takes entropy2-stable's. A candidate not listed starts level with the default.
PRIOR_DB = {"entropy2": -5.47, "entropy2-stable": -5.47, "minmax": -1.11, "mse": 0.0, "percentile:99.9": -3.23,
            "percentile:99.99": 0.0, "percentile:99.999": -0.68, "legacy": -0.68}
PRIOR_SPREAD_DB = 1.0  # how far a model may stray from that record (the prior's standard deviation)
MIN_EFFECTIVE_SAMPLES = 8.0  # below this many effective samples of the default's noise, nothing is ranked


@dataclass
class Selection:
    chosen: str
    # candidates whose SQNR is not told apart from the chosen one's by these samples (95 % bootstrap interval of the paired difference includes 0)
    within_noise: list[str] = field(default_factory=list)
    reason: str = ""


def sqnr_db(e: Mapping[str, np.ndarray]) -> float:
    noise = float(np.sum(e["noise"]))
    return 300.0 if noise <= 0 else 10.0 * np.log10(float(np.sum(e["signal"])) / noise)


def _resampled_noise(errors: Mapping[str, Mapping[str, np.ndarray]], resamples: int = RESAMPLES) -> dict[str, np.ndarray]:
    """Per candidate, its summed noise power over each bootstrap resample of the samples (the same resamples for all)."""
    n = len(next(iter(errors.values()))["noise"])
    picks = np.random.default_rng(0).integers(0, n, size=(resamples, n))
    return {name: np.asarray(e["noise"], np.float64)[picks].sum(axis=1) for name, e in errors.items()}


def paired_differences(errors, against: str, resamples: int = RESAMPLES) -> dict[str, np.ndarray]:
    """Per candidate, its SQNR minus ``against``'s in dB over each bootstrap resample (the signal cancels:
    every candidate is compared on the same samples)."""
    sums = _resampled_noise(errors, resamples)
    tiny = 1e-300
    return {name: 10.0 * np.log10(np.maximum(sums[against], tiny) / np.maximum(s, tiny)) for name, s in sums.items()}


def by_sqnr(errors) -> Selection:
    """The candidate with the best held-out SQNR, whatever the margin (auto before issue 23, for any output)."""
    return Selection(max(errors, key=lambda name: sqnr_db(errors[name])), reason="best held-out SQNR")


def by_agreement_then_sqnr(errors) -> Selection:
    """auto before issue 23: a classifier by expected top-1 agreement, candidates within one sample's worth
    (100 / n points) of the best by SQNR; any other output by SQNR."""
    if any(e.get("flips") is None for e in errors.values()):
        return by_sqnr(errors)
    n = len(next(iter(errors.values()))["noise"])
    agree = {name: 100.0 - 100.0 * float(np.mean(e["flips"])) for name, e in errors.items()}
    best = max(agree.values())
    close = [name for name in errors if agree[name] >= best - 100.0 / max(n, 1)]
    return Selection(max(close, key=lambda name: sqnr_db(errors[name])), reason="expected agreement, then SQNR")


def paired(errors, default: str = DEFAULT, confidence: float = CONFIDENCE, agreement_first: bool = True) -> Selection:
    """The default unless a candidate beats it clearly: the candidate with the best held-out SQNR replaces
    ``default`` only when the bootstrap of the paired per-sample noise puts its SQNR above the default's
    with ``confidence`` (one-sided).

    A classifier (``flips`` given, ``agreement_first``) is first judged by expected top-1 agreement:
    candidates whose expected agreement is below the best one's by more than one sample's worth with
    97.5 % confidence (bootstrap of the paired difference of flips) drop out, and the SQNR rule picks among the rest (the
    default among them, or the best SQNR when the default dropped out). SQNR sums power over samples,
    so a few samples with huge outputs can outweigh all others; agreement counts every sample alike.
    """
    kept, dropped = _agreeing(errors, default, agreement_first)
    if dropped is not None:
        return dropped
    diffs = paired_differences(kept, default)
    best = max(kept, key=lambda name: sqnr_db(kept[name]))
    chosen, reason = default, f"no candidate beats {default} with {confidence:.0%} confidence"
    if best != default and np.quantile(diffs[best], 1.0 - confidence) > 0:
        chosen, reason = best, f"beats {default} with {confidence:.0%} confidence"
    return Selection(chosen, reason=reason)


def effective_samples(noise) -> float:
    """Kish's effective sample size of the per-sample noise powers, (sum)^2 / sum of squares: n when every
    sample carries the same noise, 1 when one sample carries all of it. SQNR sums noise over samples, so a
    comparison of candidates rests on about this many samples, whatever the count."""
    noise = np.asarray(noise, np.float64)
    square = float(np.sum(noise ** 2))
    return float(len(noise)) if square <= 0 else float(np.sum(noise)) ** 2 / square


def shrunk(errors, default: str = DEFAULT, prior: Mapping[str, float] | None = None, spread: float = PRIOR_SPREAD_DB,
           min_effective: float = MIN_EFFECTIVE_SAMPLES, agreement_first: bool = True) -> Selection:
    """The candidate with the best expected SQNR gain over ``default``, each measured gain shrunk toward the
    candidate's record on other models (``prior``, default :data:`PRIOR_DB`); the default when no gain is
    expected, or when its noise sits in fewer than ``min_effective`` effective samples.

    A measured gain g with bootstrap standard error se (paired per-sample noise, as :func:`paired`) and a
    record m with spread s give the expected gain (g / se^2 + m / s^2) / (1 / se^2 + 1 / s^2): on a few
    samples, or where the samples disagree, a candidate is worth about its record; on many consistent ones,
    what it measured. Candidates that lost on other models (minmax, percentile 99.999) then rarely win by
    chance, and one that did well (percentile 99.99) wins on a modest lead.

    The gate: SQNR sums noise power over samples, so when a few samples carry most of it (the PP-OCRv4
    detector: text-free photos have no output, and 3 of 24 photos decide) the ranking on these samples says
    little about new ones, and the default is kept. A classifier's clearly less-agreeing candidates drop
    out first, as in :func:`paired`.
    """
    prior = PRIOR_DB if prior is None else prior
    kept, early = _agreeing_and_gated(errors, default, min_effective, agreement_first)
    if early is not None:
        return early
    diffs = paired_differences(kept, default)
    expected: dict[str, tuple[float, float, float]] = {}  # name -> (expected, measured, record) gain in dB
    for name in kept:
        if name == default:
            continue
        measured = sqnr_db(kept[name]) - sqnr_db(kept[default])
        record = float(prior.get(name, 0.0))
        se = float(np.std(diffs[name]))
        if se <= 0 or not np.isfinite(measured):
            gain = measured
        else:
            gain = (measured / se ** 2 + record / spread ** 2) / (1.0 / se ** 2 + 1.0 / spread ** 2)
        expected[name] = (gain, measured, record)
    if not expected:
        return Selection(default, reason="the only candidate")
    best = max(expected, key=lambda name: expected[name][0])
    gain, measured, record = expected[best]
    detail = (f"{best} measured {measured:+.2f} dB, {gain:+.2f} dB expected after shrinking toward its record on "
              f"other models ({record:+.2f} dB)")
    if gain <= 0:
        return Selection(default, reason=f"no candidate is expected to beat {default}: {detail}")
    return Selection(best, reason=f"expected to beat {default}: {detail}")


def gated_best(errors, default: str = DEFAULT, min_effective: float = MIN_EFFECTIVE_SAMPLES,
               agreement_first: bool = True) -> Selection:
    """auto's rule since weight rounding joined the default (issue 23, third round): the candidate with the
    best held-out SQNR; the default when its noise sits in fewer than ``min_effective`` effective samples
    (:func:`shrunk`'s gate). A classifier's clearly less-agreeing candidates drop out first, as in
    :func:`paired`. No record of other models: with weights rounded, the candidates' gains over mse moved
    by up to 1.4 dB on a model (the PP-OCRv4 recogniser's minmax: -0.43 -> +0.95 dB), and a record that moves
    with the pipeline shrinks good measurements toward a wrong value (docs/methods.md)."""
    kept, early = _agreeing_and_gated(errors, default, min_effective, agreement_first)
    if early is not None:
        return early
    best = max(kept, key=lambda name: sqnr_db(kept[name]))
    if best == default:
        return Selection(default, reason=f"{default} has the best held-out SQNR")
    gain = sqnr_db(kept[best]) - sqnr_db(kept[default])
    return Selection(best, reason=f"the best held-out SQNR, {gain:+.2f} dB over {default}")


def _agreeing_and_gated(errors, default: str, min_effective: float, agreement_first: bool) -> tuple[dict, Selection | None]:
    """The candidates :func:`_agreeing` keeps, and the selection made before any SQNR is compared: the best
    SQNR of them when the default dropped out, the default when its noise sits in fewer than
    ``min_effective`` effective samples (else None)."""
    kept, dropped = _agreeing(errors, default, agreement_first)
    if dropped is not None:
        return kept, dropped
    n = len(kept[default]["noise"])
    effective = effective_samples(kept[default]["noise"])
    if effective < min_effective:
        return kept, Selection(default, reason=f"{default}'s error sits in {effective:.1f} effective samples of {n}, "
                                               f"fewer than {min_effective:g}: too few to rank on")
    return kept, None


def _agreeing(errors, default: str, agreement_first: bool) -> tuple[dict, Selection | None]:
    """A classifier's candidates whose expected agreement is not clearly below the best one's (every candidate
    of any other output), and the selection when the default is not among them: the best SQNR of the rest."""
    kept = dict(errors)
    if agreement_first and all(e.get("flips") is not None for e in errors.values()):
        kept = {name: errors[name] for name in _not_clearly_less_agreeing(errors)}
    if default in kept:
        return kept, None
    why = "best SQNR" + (f" among the candidates whose agreement is not clearly below the best ({default}'s is)"
                         if default in errors else "")
    return kept, Selection(max(kept, key=lambda name: sqnr_db(kept[name])), reason=why)


def _not_clearly_less_agreeing(errors, resamples: int = RESAMPLES) -> list[str]:
    """The candidates whose expected agreement is not clearly (by more than one sample) below the best one's
    (paired bootstrap of flips)."""
    n = len(next(iter(errors.values()))["flips"])
    picks = np.random.default_rng(1).integers(0, n, size=(resamples, n))
    flips = {name: np.asarray(e["flips"], np.float64)[picks].sum(axis=1) for name, e in errors.items()}
    best = min(errors, key=lambda name: float(np.sum(errors[name]["flips"])))
    # out: more than one sample's worth of expected flips behind, with 97.5 % confidence (flips of candidates
    # are so correlated that a tenth of a point can be significant, and then means nothing)
    return [name for name in errors if name == best or np.quantile(flips[name] - flips[best], 0.025) <= 1.0]


def within_noise(errors, chosen: str) -> list[str]:
    """The candidates not told apart from ``chosen`` by these samples (95 % interval of the paired SQNR
    difference includes 0), in the order given."""
    diffs = paired_differences(errors, chosen)
    return [name for name, d in diffs.items() if name != chosen and np.quantile(d, 0.025) <= 0 <= np.quantile(d, 0.975)]


def _fixed(name: str) -> Callable:
    return lambda errors: Selection(name, reason="fixed")


def _gated(rule: Callable) -> Callable:
    """``rule`` behind :func:`shrunk`'s gate: the default when its noise sits in too few effective samples."""
    return lambda errors: (rule(errors) if effective_samples(errors[DEFAULT]["noise"]) >= MIN_EFFECTIVE_SAMPLES
                           else Selection(DEFAULT, reason="too few effective samples"))


# Rules measured by benchmarks/auto_regret.py (docs/methods.md; the table before issue 23's second round also
# had paired 95 / 90 %, a percentile 99.99 default and the candidates cut to three): the one auto uses is RULE.
RULES: dict[str, Callable] = {
    "before (agreement, SQNR)": by_agreement_then_sqnr,
    "best SQNR": by_sqnr,
    "paired 80 %": paired,
    "gate, best SQNR": _gated(by_sqnr),
    "gate, paired 80 %": _gated(paired),
    "shrunk": shrunk,
    "gate, agreement, best SQNR (auto)": gated_best,
    "always mse": _fixed("mse"),
    "always p99.99": _fixed("percentile:99.99"),
}
RULE = "gate, agreement, best SQNR (auto)"


def select(errors, default: str = DEFAULT) -> Selection:
    """auto's rule (:data:`RULE`), with the candidates the held-out samples do not tell apart from the chosen one."""
    selection = gated_best(errors, default)
    selection.within_noise = within_noise(errors, selection.chosen)
    return selection


RULE_TEXT = (f"the best held-out SQNR (a classifier's candidates clearly behind in top-1 agreement left out); "
             f"{DEFAULT} whenever its noise sits in fewer than {MIN_EFFECTIVE_SAMPLES:g} effective samples")
