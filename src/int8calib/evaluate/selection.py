"""How ``--method auto`` picks among its candidates from their per-sample errors on held-out samples.

A few dozen held-out samples measure each candidate's output SQNR with an error of half a dB or more,
so the candidate that looks best is often best by chance (issue 23: with 26 samples auto ranked
percentile 99.999 first by 0.5 dB where percentile 99.99 was 1.1 dB better on new data). The rules
here differ in how they treat that noise; ``benchmarks/auto_regret.py`` measures each one's regret on
unseen data over many random splits of the real models, and docs/methods.md keeps the table that chose
:func:`paired` at 80 % confidence, the rule auto uses (:data:`RULE`).

Every rule reads ``errors``: per candidate (in preference order) the held-out samples' ``signal`` and
``noise`` powers of the watched output and, for a classifier, each sample's ``flips`` (top-1 flip
probability), all paired: row i is the same sample for every candidate.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Callable, Mapping

import numpy as np

DEFAULT = "mse"  # the robust default: the candidate `paired` keeps unless another wins clearly
CONFIDENCE = 0.80  # one-sided: a candidate replaces the default when it is better with this confidence (of 0.8 /
# 0.9 / 0.95 / 0.99, the lowest worst-case and mean regret in benchmarks/auto_regret.py)
RESAMPLES = 500  # bootstrap resamples of the held-out samples (seeded: auto is deterministic)


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
    kept = dict(errors)
    if agreement_first and all(e.get("flips") is not None for e in errors.values()):
        kept = {name: errors[name] for name in _not_clearly_less_agreeing(errors)}
    if default not in kept:
        chosen = max(kept, key=lambda name: sqnr_db(kept[name]))
        why = "best SQNR" + (f" among the candidates whose agreement is not clearly below the best ({default}'s is)"
                             if default in errors else "")
        return Selection(chosen, reason=why)
    diffs = paired_differences(kept, default)
    best = max(kept, key=lambda name: sqnr_db(kept[name]))
    chosen, reason = default, f"no candidate beats {default} with {confidence:.0%} confidence"
    if best != default and np.quantile(diffs[best], 1.0 - confidence) > 0:
        chosen, reason = best, f"beats {default} with {confidence:.0%} confidence"
    return Selection(chosen, reason=reason)


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


def _restricted(names: tuple[str, ...], rule: Callable) -> Callable:
    return lambda errors: rule({k: v for k, v in errors.items() if k in names})


FEW = ("mse", "percentile:99.99", "minmax")

# Rules measured by benchmarks/auto_regret.py (docs/methods.md): the one auto uses is RULE.
RULES: dict[str, Callable] = {
    "before (agreement, SQNR)": by_agreement_then_sqnr,
    "best SQNR": by_sqnr,
    "paired 95 %": lambda errors: paired(errors, confidence=0.95),
    "paired 90 %": lambda errors: paired(errors, confidence=0.90),
    "paired 80 % (auto)": paired,
    "paired 80 %, default p99.99": lambda errors: paired(errors, "percentile:99.99"),
    "fewer: best SQNR": _restricted(FEW, by_sqnr),
    "fewer: paired 80 %": _restricted(FEW, paired),
    "always mse": _fixed("mse"),
    "always p99.99": _fixed("percentile:99.99"),
}
RULE = "paired 80 % (auto)"


def select(errors, default: str = DEFAULT) -> Selection:
    """auto's rule (:data:`RULE`), with the candidates the held-out samples do not tell apart from the chosen one."""
    selection = paired(errors, default)
    selection.within_noise = within_noise(errors, selection.chosen)
    return selection


RULE_TEXT = (f"{DEFAULT} unless the best held-out SQNR beats it with {CONFIDENCE:.0%} confidence "
             f"(bootstrap of the paired per-sample noise, {RESAMPLES} resamples)")
