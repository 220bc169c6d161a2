"""The calibration report: one self-contained HTML file to look at when INT8 goes wrong.

    from int8calib.report import method_ranges, write_report
    ranges = method_ranges(stats, "entropy2", amax)       # every registered method's amax
    write_report("report.html", stats, ranges, "entropy2")

Per tensor it shows the |x| histogram with every method's threshold, a sortable
table, and a "where to look" list ranked from the numbers (see ``ranking``).
Plots need matplotlib (the ``report`` extra); it is imported only here.
"""

from __future__ import annotations

import time
from pathlib import Path

from ..errors import Int8CalibError
from ..stats.histogram import Statistics
from ..util.atomic import write_text
from ..util.log import logger
from . import ranking
from .html import render
from .plotting import histogram_images, method_colors

__all__ = ["method_ranges", "write_report"]


def method_ranges(
    statistics: Statistics, chosen_method: str | None = None, chosen_amax: dict[str, float] | None = None
) -> dict[str, dict[str, float]]:
    """{method: {tensor: amax}} for every registered method, reusing ``chosen_amax`` when given.

    A method that fails on these statistics is left out with a warning, so one
    broken method never costs the user the whole report.
    """
    from ..methods import available, compute_ranges

    out: dict[str, dict[str, float]] = {}
    for name in available():
        if name == chosen_method and chosen_amax is not None:
            out[name] = dict(chosen_amax)
            continue
        start = time.perf_counter()
        try:
            out[name] = compute_ranges(name, statistics)
        except Int8CalibError as exc:
            logger.warning("report: method %s left out: %s", name, exc)
            continue
        logger.debug("report: %s ranges in %.1f s", name, time.perf_counter() - start)
    if chosen_method is not None and chosen_method not in out and chosen_amax is not None:
        out[chosen_method] = dict(chosen_amax)
    return out


def write_report(
    path: str | Path,
    statistics: Statistics,
    ranges_by_method: dict[str, dict[str, float]],
    chosen_method: str,
    per_layer_sqnr: dict[str, float] | None = None,
    evaluation: dict | None = None,
    auto: dict | None = None,
    precision: dict | None = None,
) -> None:
    """Write the HTML report for ``statistics`` to ``path`` (atomically); ``auto`` is what
    ``--method auto`` measured (``MethodChoice.to_dict()``), shown as a table; ``precision`` how the
    Q/DQ model written beside it types its float computation (``PrecisionSummary.to_dict()``)."""
    if chosen_method not in ranges_by_method:
        raise Int8CalibError(f"report: chosen method '{chosen_method}' has no ranges ({', '.join(ranges_by_method)})")
    if len(statistics) == 0:
        raise Int8CalibError("report: the statistics hold no tensor")
    start = time.perf_counter()
    summaries = ranking.summarize(statistics, ranges_by_method, chosen_method, per_layer_sqnr)
    flagged = ranking.where_to_look(summaries)
    colors = method_colors(list(ranges_by_method))
    images = histogram_images(statistics.tensors, summaries, colors, chosen_method)
    thresholds = (
        f"clipped > {ranking.CLIPPED_FLAG:.1%}, method spread > {ranking.SPREAD_FLAG:g}x, "
        f"max/p99.99 > {ranking.TAIL_FLAG:g}, rounds to 0 > {ranking.UNDERFLOW_FLAG:.0%}, "
        f"SQNR < {ranking.SQNR_FLAG_DB:g} dB"
    )
    page = render(summaries, flagged, images, colors, chosen_method, statistics.meta, evaluation, thresholds, auto, precision)
    write_text(path, page)
    logger.info("report: %d tensors -> %s (%.0f KB, %.1f s)", len(summaries), path, len(page) / 1024,
                time.perf_counter() - start)
