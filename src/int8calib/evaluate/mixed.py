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

from ..batching import BatchLoader
from ..errors import Int8CalibError
from ..runner import ActivationRunner
from ..sources import Sample
from ..util.log import logger, progress
from ..writers.qdq import build_qdq
from .compare import compare_models
from .outputs import check_budget

HOLDOUT_EVERY = 5
RANK_SAMPLES = 32  # SQNR is a smooth measure: a few dozen samples rank the layers; agreement uses all


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
) -> MixedPrecision:
    """Rank the quantized layers by sensitivity on ``loader``'s data and keep the fewest in float
    that meet ``budget`` (points of top-1 agreement on scores [N, classes]) or ``min_sqnr`` (dB
    of output SQNR, any float output); ``output`` is the output watched (default: the first float one)."""
    output = check_budget(model, output, budget, min_sqnr).name
    batches = [(b.feeds, b.n, None) for b in loader]  # held out: small enough to keep preprocessed
    reference_runner = ActivationRunner(model, providers, [output])
    reference = [reference_runner.run(feeds)[output] for feeds, _, _ in batches]

    def measure(keep: Sequence[str], rows: int | None = None):
        qdq, summary = build_qdq(model, amax, exclude_nodes, exclude_op_types, keep)
        data, ref = (batches, reference) if rows is None else _first_rows(batches, reference, rows)
        result = compare_models(model, qdq, data, output, providers=providers, reference=ref).output
        return result.to_dict(), summary

    def ok(metrics: dict) -> bool:
        return _db(metrics["sqnr_db"]) >= min_sqnr if min_sqnr is not None else _loss(metrics) <= budget

    base, summary = measure(())
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
    meets(hi)
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
