"""Automatic mixed precision: keep the most sensitive layers in float until an accuracy budget holds.

1. Hold out every ``HOLDOUT_EVERY``-th calibration sample (20 %, deterministic, spread over the
   data): ranges come from the rest, accuracy is measured on these.
2. Sensitivity of a layer = how much the output SQNR of the fully quantized model improves
   when that layer alone stays in float (one run over the first ``RANK_SAMPLES`` held-out
   samples per layer).
3. Keep the fewest most-sensitive layers in float (found by bisection) that meet the budget.
   With ``min_sqnr`` (any float output) the budget is the held-out output SQNR in dB. With an
   accuracy budget (scores [N, classes]) it is the loss of top-1
   agreement with the float model on the held-out data is at most the budget. The loss is
   the expected disagreement from every sample's top-1 margin and noise
   (``metrics.flip_probability``): 100 held-out samples observe agreement only in 1-point
   steps, too coarse and too noisy for a 0.5-point budget (one unlucky photo decides), while
   the margin-based estimate is smooth. On EfficientNet-Lite0 it tracked the observed rate
   on 500 photos within 0.5 points for four methods (docs/qdq.md). The observed agreement
   is reported beside it.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Sequence

import onnx

from ..batching import BatchLoader, row_steps
from ..errors import Int8CalibError
from ..runner import ActivationRunner
from ..sources import Sample
from ..passes import BiasShifts, quantized_model, scoring_model
from ..util.log import logger, progress
from ..util.memory import per_core_pairs
from ..writers.precision import PrecisionOptions
from .compare import compare_models
from .metrics import OutputComparison
from .outputs import check_budget, choose_output
from .selection import DEFAULT, RULE_TEXT, Selection, select

HOLDOUT_EVERY = 5
RANK_SAMPLES = 32  # SQNR is a smooth measure: a few dozen samples rank the layers; agreement uses all
# --method auto: every candidate is measured on this many held-out samples first, and the FINALISTS best,
# any other within SCREEN_MARGIN_DB of the best, and mse go on to all of them. The clear losers trail by
# several dB (EfficientNet-Lite0: 15.2 and 16.6 dB against 21.2-21.8 on 16 samples); the near-ties
# (percentile 99.99 at 21.75 dB on 16 samples, fourth there) stay in.
SCREEN_SAMPLES = 16
FINALISTS = 3
SCREEN_MARGIN_DB = 2.0
# Samples per ONNX Runtime run of the models compared, per pair of cores (comparisons are sums over
# samples): at the held-out batches' 32, the candidates' sessions grew ONNX Runtime's arenas to
# 1.6 GB on EfficientNet-Lite0 on the 2-core VM, with 8 no slower per sample (docs/performance.md).
SCORE_STEP = 8


def split_holdout(samples: Sequence[Sample], every: int = HOLDOUT_EVERY) -> tuple[list[Sample], list[Sample]]:
    """(calibration, held-out): sample i is held out when i % every == every - 1."""
    calib = [s for i, s in enumerate(samples) if i % every != every - 1]
    held = [s for i, s in enumerate(samples) if i % every == every - 1]
    if not held or not calib:
        raise Int8CalibError(f"--accuracy-budget / --min-sqnr need at least {every} calibration samples (1 in {every} is held out)")
    return calib, held


def layer_precisions(nodes: Sequence[str], precision: str = "fp32") -> str:
    """The value of trtexec's --layerPrecisions (use with --precisionConstraints=obey)."""
    return ",".join(f"{name}:{precision}" for name in nodes)


@dataclass
class MixedPrecision:
    budget: float | None  # allowed loss of top-1 agreement, percentage points (None with min_sqnr)
    samples: int  # held-out samples the agreement was measured on
    int8_agreement: float | None  # everything quantized (None: not a scores output)
    agreement: float | None  # with ``kept`` in float
    expected_loss: float | None  # points of agreement expected lost with ``kept`` in float (the budget's measure)
    sqnr_db: float | None  # held-out output SQNR with ``kept`` in float (None: identical outputs)
    kept: list[str] = field(default_factory=list)  # node ids kept in float, most sensitive first
    ranking: list[tuple[str, float]] = field(default_factory=list)  # (node id, SQNR gain dB), most sensitive first
    min_sqnr: float | None = None  # the SQNR budget in dB, when that is the measure
    output: str = ""  # the output watched
    int8_sqnr_db: float | None = None  # held-out output SQNR with everything quantized

    @property
    def layer_precisions(self) -> str:
        return layer_precisions(self.kept)

    def to_dict(self) -> dict:
        return {
            "budget": self.budget, "min_sqnr": self.min_sqnr, "output": self.output, "int8_sqnr_db": self.int8_sqnr_db,
            "held_out_samples": self.samples, "int8_agreement": self.int8_agreement,
            "agreement": self.agreement, "expected_agreement_loss": self.expected_loss, "sqnr_db": self.sqnr_db, "kept_in_float": self.kept,
            "layer_precisions": self.layer_precisions,
            "sensitivity": [{"node": n, "sqnr_gain_db": round(g, 4)} for n, g in self.ranking],
        }


def choose_float_layers(
    model: onnx.ModelProto,
    amax: dict[str, float],
    loader: BatchLoader,
    budget: float | None = None,
    exclude_nodes: str | None = None,
    exclude_op_types: Sequence[str] = (),
    providers: Sequence[str] | None = None,
    min_sqnr: float | None = None,
    output: str | None = None,
    shifts: BiasShifts | None = None,
    lowering: PrecisionOptions | None = None,
) -> MixedPrecision:
    """Rank the quantized layers by sensitivity on ``loader``'s data and keep the fewest in float
    that meet ``budget`` (points of top-1 agreement on scores [N, classes]) or ``min_sqnr`` (dB
    of output SQNR, any float output); ``output`` is the output watched (default: the first float one);
    ``shifts`` corrects the biases of every model measured, as the written one will be."""
    output = check_budget(model, output, budget, min_sqnr).name
    batches, reference = _held_out(model, loader, output, providers)

    def measure(keep: Sequence[str], rows: int | None = None, exact: bool = False):
        return _measure(model, amax, batches, reference, output, exclude_nodes, exclude_op_types, providers, keep, rows, shifts,
                        lowering, exact)

    def ok(metrics: dict) -> bool:
        return _db(metrics["sqnr_db"]) >= min_sqnr if min_sqnr is not None else _loss(metrics) <= budget

    base, summary = measure((), exact=True)  # the figures reported are the written models' own
    n = base["n"]
    scores = min_sqnr is None
    mixed = MixedPrecision(
        budget, n, base["top1_agreement"], base["top1_agreement"], _loss(base) if scores else None, base["sqnr_db"],
        min_sqnr=min_sqnr, output=output, int8_sqnr_db=base["sqnr_db"],
    )
    if scores:
        logger.info("held-out %d samples, output '%s': all-INT8 top-1 agreement %.2f %%, SQNR %s dB",
                    n, output, base["top1_agreement"], base["sqnr_db"])
    else:
        logger.info("held-out %d samples, output '%s': all-INT8 SQNR %s dB", n, output, base["sqnr_db"])
    if ok(base):
        return mixed
    gains = []
    rank_base, _ = measure((), RANK_SAMPLES)
    for node in progress(summary.quantized_nodes, total=len(summary.quantized_nodes), desc="layer sensitivity", unit="layer"):
        metrics, _ = measure([node], RANK_SAMPLES)
        gains.append((node, _db(metrics["sqnr_db"]) - _db(rank_base["sqnr_db"])))
    gains.sort(key=lambda kv: -kv[1])
    mixed.ranking = gains
    # The measure improves with each layer kept in float (most sensitive first), so the fewest layers
    # that meet the budget are found by bisection: ~log2(layers) runs instead of one per layer.
    measured: dict[int, dict] = {0: base}

    def meets(k: int) -> bool:
        if k not in measured:
            measured[k], _ = measure([node for node, _ in gains[:k]])
            logger.debug(
                "%d layer(s) in float: SQNR %s dB, observed agreement %s %%",
                k, measured[k]["sqnr_db"], measured[k]["top1_agreement"],
            )
        return ok(measured[k])

    lo, hi = 0, len(gains)  # lo fails (checked above); all layers in float is the float model
    while hi - lo > 1:
        mid = (lo + hi) // 2
        lo, hi = (lo, mid) if meets(mid) else (mid, hi)
    # The search measured scoring twins; the written model itself must meet the budget (one more layer
    # in float where the twin's arithmetic decided).
    while True:
        measured[hi], _ = measure([node for node, _ in gains[:hi]], exact=True)
        if ok(measured[hi]) or hi == len(gains):
            break
        hi += 1
    mixed.kept = [node for node, _ in gains[:hi]]
    mixed.agreement, mixed.sqnr_db = measured[hi]["top1_agreement"], measured[hi]["sqnr_db"]
    if scores:
        mixed.expected_loss = _loss(measured[hi])
        logger.info(
            "kept %d layer(s) in float for a %.2f-point budget: expected agreement loss %.2f points, "
            "observed held-out agreement %.2f %% (all INT8: %.2f %%)",
            len(mixed.kept), budget, mixed.expected_loss, mixed.agreement, mixed.int8_agreement,
        )
    else:
        logger.info(
            "kept %d layer(s) in float for --min-sqnr %.2f dB: held-out SQNR %s dB (all INT8: %s dB)",
            len(mixed.kept), min_sqnr, mixed.sqnr_db, mixed.int8_sqnr_db,
        )
    return mixed


def _held_out(model: onnx.ModelProto, loader: BatchLoader, output: str, providers):
    """The held-out batches (kept preprocessed: they are few) and the float model's ``output`` on them."""
    batches = [(feeds, n, None) for b in loader for feeds, n in row_steps(b, b.n, per_core_pairs(SCORE_STEP))]
    if not batches:
        raise Int8CalibError(f"no held-out samples: --method auto / --accuracy-budget / --min-sqnr hold out 1 sample in "
                             f"{HOLDOUT_EVERY}, so they need at least {HOLDOUT_EVERY}")
    reference_runner = ActivationRunner(model, providers, [output])
    return batches, [reference_runner.run(feeds)[output] for feeds, _, _ in batches]


def _measure(model, amax, batches, reference, output, exclude_nodes, exclude_op_types, providers, keep=(), rows=None,
             shifts=None, lowering=None, exact=False):
    """Build the model ``--qdq`` would write from ``amax`` in memory (biases corrected with ``shifts``
    when given, float computation typed by ``lowering``) and compare its ``output`` with the float
    model's: (OutputComparison.to_dict(), QdqSummary). Unless ``exact``, the model compared is its
    scoring twin (:func:`~int8calib.passes.scoring_model`: the same INT8 weights and scales, float32
    elsewhere), 1.6-2.7x faster in ONNX Runtime's CPU (docs/qdq.md: how far its figures are from the
    written model's)."""
    comparison, summary = _compare(model, amax, batches, reference, output, exclude_nodes, exclude_op_types,
                                   providers, keep, rows, shifts, lowering, exact)
    return comparison.to_dict(), summary


def _compare(model, amax, batches, reference, output, exclude_nodes, exclude_op_types, providers, keep=(), rows=None,
             shifts=None, lowering=None, exact=False):
    """:func:`_measure`'s comparison itself (sums that add up over data), and the Q/DQ summary."""
    build = quantized_model if exact else scoring_model
    built = build(model, amax, exclude_nodes, exclude_op_types, keep, shifts=shifts, precision=lowering)
    data, ref = (batches, reference) if rows is None else _first_rows(batches, reference, rows)
    return compare_models(model, built.model, data, output, providers=providers, reference=ref).output, built.qdq


@dataclass
class MethodChoice:
    """What ``--method auto`` measured: every candidate's held-out error and the winner."""

    chosen: str  # candidate name, e.g. "mse" or "percentile:99.99"
    output: str  # the output compared
    scores: bool  # [N, classes]: by expected top-1 agreement (ties within one sample's worth: SQNR); otherwise by SQNR
    samples: int  # held-out samples
    table: list[dict] = field(default_factory=list)  # {"candidate", "top1_agreement", "sqnr_db"}, best first
    refit: bool = False  # the winner's ranges were recomputed with the held-out samples merged in
    bias_corrected: bool = False  # every candidate was measured with its biases corrected
    twins: bool = False  # measured as scoring twins (float32 outside Q/DQ) of INT8 + FP16 models
    folds: int = 0  # > 0: ranked by cross-validation over this many folds, every sample held out once
    within_noise: list[str] = field(default_factory=list)  # candidates these samples do not tell apart from the chosen
    reason: str = ""  # why the selection rule chose it

    @property
    def runner_up(self) -> dict | None:
        """The best other candidate measured on every held-out sample with different ranges (None: none)."""
        return next((r for r in self.table[1:] if r.get("same_as") != self.chosen and not r.get("screened_out")), None)

    @property
    def margin_db(self) -> float | None:
        """How much better the winner's SQNR is than the runner-up's (None without one)."""
        second = self.runner_up
        return None if second is None else _db(self.table[0]["sqnr_db"]) - _db(second["sqnr_db"])

    def to_dict(self) -> dict:
        return {"chosen": self.chosen, "output": self.output, "rule": RULE_TEXT, "reason": self.reason,
                "within_noise": self.within_noise, "held_out_samples": self.samples, "refit_on_all_samples": self.refit,
                "bias_corrected": self.bias_corrected, "scoring_twins": self.twins, "cross_validation_folds": self.folds,
                "candidates": self.table}

    @classmethod
    def from_dict(cls, record: dict) -> "MethodChoice":
        """Back from :meth:`to_dict` (a Q/DQ model's or cache's provenance ``chosen_by``)."""
        table = record.get("candidates") or []
        scores = bool(table) and all(r.get("expected_top1_agreement") is not None for r in table)
        return cls(record["chosen"], record.get("output", ""), scores, int(record.get("held_out_samples", 0)), list(table),
                   refit=bool(record.get("refit_on_all_samples")), bias_corrected=bool(record.get("bias_corrected")),
                   twins=bool(record.get("scoring_twins")), folds=int(record.get("cross_validation_folds") or 0),
                   within_noise=list(record.get("within_noise") or []), reason=record.get("reason", ""))

    def format_table(self) -> str:
        head = f"{'candidate':<18}" + (f"{'expected agree %':>17}{'observed %':>11}" if self.scores else "") + f"{'SQNR dB':>10}"
        corrected = ", biases corrected" if self.bias_corrected else ""
        corrected += ", as INT8 + FP32 twins of the INT8 + FP16 models" if self.twins else ""
        folds = f", {self.folds}-fold cross-validation: each held out once" if self.folds else ""
        lines = [f"--method auto: held-out error of '{self.output}' on {self.samples} samples{folds}{corrected} (chosen first)", head]
        for i, row in enumerate(self.table):
            agree = f"{row['expected_top1_agreement']:>17.2f}{row['top1_agreement']:>11.2f}" if self.scores else ""
            lines.append(f"{row['candidate']:<18}{agree}{_db(row['sqnr_db']):>10.2f}{_note(row, i == 0)}")
        second = self.runner_up
        if second is not None and self.margin_db < 0:
            lines.append(f"chosen: {self.chosen}; {second['candidate']} measured {-self.margin_db:.2f} dB higher")
        elif second is not None:
            by = f"{self.margin_db:+.2f} dB SQNR"
            if self.scores:
                by = f"{self.table[0]['expected_top1_agreement'] - second['expected_top1_agreement']:+.2f} points of expected agreement, " + by
            lines.append(f"chosen: {self.chosen}, ahead of {second['candidate']} by {by}")
        else:
            lines.append(f"chosen: {self.chosen}")
        if self.reason:  # (records written before issue 23 have none)
            names = [self.chosen, *self.within_noise]
            noise = (f"{', '.join(names[:-1])} and {names[-1]} are within noise on {self.samples} samples" if self.within_noise
                     else f"no other candidate is within noise of {self.chosen} on {self.samples} samples")
            lines.append(f"why: {self.reason}; {noise} (95 % bootstrap interval of the paired SQNR difference)")
        return "\n".join(lines)


def _note(row: dict, chosen: bool) -> str:
    """The remark after a candidate's row in the table."""
    notes = ["chosen"] if chosen else []
    if row.get("same_as"):
        notes.append(f"same ranges as {row['same_as']}")
    if row.get("screened_out"):
        notes.append(f"screened out on the first {SCREEN_SAMPLES} samples")
    return ("  <- " + "; ".join(notes)) if notes else ""


def choose_method(
    model: onnx.ModelProto,
    candidates: dict[str, dict[str, float]],
    loader,
    output: str | None = None,
    exclude_nodes: str | None = None,
    exclude_op_types: Sequence[str] = (),
    providers: Sequence[str] | None = None,
    shifts: BiasShifts | None = None,
    lowering: PrecisionOptions | None = None,
) -> MethodChoice:
    """Build each candidate's all-INT8 Q/DQ model in memory (biases corrected with ``shifts``),
    measure the held-out error of ``output`` (default: the first float output) on ``loader``'s
    batches per sample, and choose with :func:`.selection.select`: the best held-out SQNR (a
    classifier's candidates clearly below the best expected agreement out first; ``mse`` whenever its
    noise sits in too few samples).
    The table lists the chosen candidate first, then the others best first (scores [N, classes] by
    expected top-1 agreement, within one held-out sample's worth of the best by SQNR; any other
    output by SQNR; ties keep the order of ``candidates``).

    Candidates with the same ranges as an earlier one are measured once. With more than
    ``SCREEN_SAMPLES`` held-out samples, every candidate is first measured on the first
    ``SCREEN_SAMPLES`` and only the ``FINALISTS`` best, those within ``SCREEN_MARGIN_DB`` of the best, and
    ``mse`` go on to all of them: the clear losers
    (several dB behind) are told apart by a few samples, and running every candidate's model
    on every sample was most of auto's time (benchmarks/auto_method.py).
    """
    info = choose_output(model, output)
    batches, reference = _held_out(model, loader, info.name, providers)
    same: dict[str, str] = {}  # candidate -> earlier candidate with identical ranges
    unique: dict[str, dict[str, float]] = {}
    for name, amax in candidates.items():
        twin = next((u for u, ranges in unique.items() if ranges == amax), None)
        if twin is None:
            unique[name] = amax
        else:
            same[name] = twin

    def measure(names, rows=None) -> dict[str, OutputComparison]:
        out = {}
        for name in progress(names, total=len(names), desc="auto candidates", unit="method"):
            out[name], _ = _compare(model, unique[name], batches, reference, info.name, exclude_nodes, exclude_op_types,
                                    providers, rows=rows, shifts=shifts, lowering=lowering)
        return out

    total = sum(n for _, n, _ in batches)
    names = list(unique)
    default = same.get(DEFAULT, DEFAULT)
    screened: dict[str, dict] = {}
    if total > SCREEN_SAMPLES and len(names) > FINALISTS:
        screened = {k: _row(k, c.to_dict()) for k, c in measure(names, SCREEN_SAMPLES).items()}
        ranked = [r["candidate"] for r in _ranked(list(screened.values()), info.is_scores)]
        best = max(_db(r["sqnr_db"]) for r in screened.values())
        # the FINALISTS best, and any other within SCREEN_MARGIN_DB of the best: screening drops clear losers,
        # not candidates a few samples cannot tell apart
        names = ranked[:FINALISTS] + [k for k in ranked[FINALISTS:] if _db(screened[k]["sqnr_db"]) >= best - SCREEN_MARGIN_DB]
        if default in unique and default not in names:
            names.append(default)  # the selection rule keeps the default where the samples cannot rank
    final = measure(names)
    selection = select(_errors(final, info.is_scores), default)
    rows = _ranked([_row(k, c.to_dict()) for k, c in final.items()], info.is_scores, first=selection.chosen)
    rows += [dict(r, screened_out=True) for r in _ranked([r for k, r in screened.items() if k not in final], info.is_scores)]
    by_name = {r["candidate"]: r for r in rows}
    for name, twin in same.items():  # after their twin, in candidate order
        rows.insert(rows.index(by_name[twin]) + 1, dict(by_name[twin], candidate=name, same_as=twin))
    return _choice(rows, info, selection, bias_corrected=shifts is not None, twins=_twins(lowering))


def choose_method_by_folds(
    model: onnx.ModelProto,
    folds: Sequence[tuple[dict[str, dict[str, float]], list]],
    output: str | None = None,
    exclude_nodes: str | None = None,
    exclude_op_types: Sequence[str] = (),
    providers: Sequence[str] | None = None,
    shifts: BiasShifts | None = None,
    lowering: PrecisionOptions | None = None,
) -> MethodChoice:
    """:func:`choose_method` by cross-validation: ``folds`` holds, per fold, every candidate's ranges
    from the other folds' statistics and the fold's own batches. Each candidate's comparisons of
    all folds add up (SQNR from the summed signal and noise powers, agreement and per-sample errors
    over every sample), so every sample is held out once and ranks the candidates."""
    info = choose_output(model, output)
    totals: dict[str, OutputComparison] = {}
    for k, (candidates, fold_batches) in enumerate(folds):
        batches, reference = _held_out(model, fold_batches, info.name, providers)
        for name in progress(candidates, total=len(candidates), desc=f"auto fold {k + 1}/{len(folds)}", unit="method"):
            comparison, _ = _compare(model, candidates[name], batches, reference, info.name, exclude_nodes,
                                     exclude_op_types, providers, shifts=shifts, lowering=lowering)
            totals.setdefault(name, OutputComparison()).merge(comparison)
    selection = select(_errors(totals, info.is_scores))
    rows = _ranked([_row(name, comparison.to_dict()) for name, comparison in totals.items()], info.is_scores,
                   first=selection.chosen)
    return _choice(rows, info, selection, refit=True, bias_corrected=shifts is not None, folds=len(folds),
                   twins=_twins(lowering))


def _twins(lowering: PrecisionOptions | None) -> bool:
    """Whether the candidates of ``lowering``'s models are scored as float32 twins (passes.scoring_model)."""
    return (lowering or PrecisionOptions()).high_precision == "fp16"


def _errors(comparisons: dict[str, OutputComparison], is_scores: bool) -> dict[str, dict]:
    """Every candidate's per-sample errors, paired (the same samples in the same order), for the selection rule."""
    return {name: {"signal": c.per_sample("signal"), "noise": c.per_sample("noise"),
                   "flips": c.per_sample("flips") if is_scores else None} for name, c in comparisons.items()}


def _choice(rows: list[dict], info, selection: Selection, **details) -> MethodChoice:
    """The MethodChoice of ``rows`` (the chosen first, each with its sample count ``n``, dropped here)."""
    n = rows[0]["n"]
    for r in rows:
        r.pop("n", None)
    scores = info.is_scores and all(r["expected_top1_agreement"] is not None for r in rows)
    return MethodChoice(selection.chosen, info.name, scores, n, rows, within_noise=selection.within_noise,
                        reason=selection.reason, **details)


def _row(name: str, metrics: dict) -> dict:
    """A candidate's row in auto's table, from its comparison's metrics."""
    flips = metrics["expected_top1_disagreement"]
    return {"candidate": name, "top1_agreement": metrics["top1_agreement"],
            "expected_top1_agreement": None if flips is None else round(100.0 - flips, 4),
            "sqnr_db": metrics["sqnr_db"], "n": metrics["n"]}


def _ranked(rows: list[dict], is_scores: bool, first: str | None = None) -> list[dict]:
    """``rows`` best first (stable: ties keep their order), the row of candidate ``first`` (the chosen one)
    ahead of all; the order of the table and of screening, not the selection rule (``selection``)."""
    if not rows:
        return rows
    if first is not None:
        return [r for r in rows if r["candidate"] == first] + _ranked([r for r in rows if r["candidate"] != first], is_scores)
    n = rows[0]["n"]
    if is_scores and all(r["expected_top1_agreement"] is not None for r in rows):
        # Agreement observed on ~100 held-out samples moves in whole-sample steps (one photo decides), so
        # the smooth expected agreement (every sample's top-1 margin, as the accuracy budget) is used, and
        # differences below one held-out sample (100 / n points) are not resolved by this data: the
        # candidates within that of the best are ranked by SQNR, the others behind them by agreement.
        best = max(r["expected_top1_agreement"] for r in rows)
        tie = 100.0 / max(n, 1)

        def key(r):
            close = r["expected_top1_agreement"] >= best - tie
            return (0, -_db(r["sqnr_db"]), 0.0) if close else (1, -r["expected_top1_agreement"], -_db(r["sqnr_db"]))
    else:
        def key(r):
            return -_db(r["sqnr_db"])
    return sorted(rows, key=key)


def _loss(metrics: dict) -> float:
    """Expected agreement loss in points, from every held-out sample's top-1 margin."""
    return metrics["expected_top1_disagreement"]


def _first_rows(batches, reference, rows: int):
    """The first ``rows`` real samples of ``batches`` and their reference outputs."""
    out, ref, left = [], [], rows
    for (feeds, n, labels), r in zip(batches, reference):
        if left <= 0:
            break
        take = min(n, left)
        out.append((feeds, take, None if labels is None else labels[:take]))  # rows past n are ignored
        ref.append(r[:take])
        left -= take
    return out, ref


def _db(x: float | None) -> float:
    return 300.0 if x is None else float(x)  # None: identical outputs
