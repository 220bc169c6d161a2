"""Small |x| histograms with every method's threshold, as base64 PNG (matplotlib, Agg, lazy).

One figure is reused for every tensor: creating a figure costs more than drawing
a histogram, and a report of a few hundred tensors should take seconds.
"""

from __future__ import annotations

import base64
import io
import math

import numpy as np

from ..errors import Int8CalibError
from ..stats.histogram import TensorHistogram, fine_edges
from .ranking import INT8_LEVELS, TensorSummary

BINS_PER_OCTAVE = 16
OCTAVES_SHOWN = 14  # INT8 rounds |x| below 2^-8 of amax to 0: show that and a few octaves more
PALETTE = ["#1f77b4", "#ff7f0e", "#2ca02c", "#9467bd", "#8c564b", "#e377c2", "#17becf", "#bcbd22", "#7f7f7f"]
WIDTH_PX, HEIGHT_PX = 240, 130
DPI = 96
FIGSIZE = ((WIDTH_PX + 0.5) / DPI, (HEIGHT_PX + 0.5) / DPI)  # matplotlib truncates to whole pixels
FONT_SIZE = 6.5


def method_colors(methods: list[str]) -> dict[str, str]:
    return {m: PALETTE[i % len(PALETTE)] for i, m in enumerate(methods)}


def log_bins(hist: TensorHistogram) -> tuple[np.ndarray, np.ndarray]:
    """Counts of non-zero |x| in 1/16-octave bins and the bins' edges (exact zeros left out)."""
    mb = hist.mantissa_bits
    group = 1 << max(0, mb - 4)  # bit-pattern bins are already log-spaced: merge groups of them
    finite = hist.counts[: 255 << mb].copy()
    finite[0] = 0
    counts = finite.reshape(-1, group).sum(axis=1)
    edges = fine_edges(mb)[::group]
    return counts.astype(np.float64), edges


class _Plot:
    """One small figure whose artists are updated per tensor (no re-creation, no autoscaling)."""

    def __init__(self, methods: list[str], colors: dict[str, str], chosen_method: str):
        try:
            from matplotlib.backends.backend_agg import FigureCanvasAgg
            from matplotlib.figure import Figure
            from matplotlib.patches import Rectangle
        except ImportError:
            raise Int8CalibError("the report needs matplotlib: pip install 'int8calib[report]'") from None
        self.fig = Figure(figsize=FIGSIZE, dpi=DPI)
        FigureCanvasAgg(self.fig)
        self.fig.subplots_adjust(left=0.15, right=0.93, bottom=0.14, top=0.96)  # room for a last x label
        ax = self.ax = self.fig.add_subplot()
        ax.set_xscale("log")
        ax.set_yscale("log")
        ax.tick_params(labelsize=FONT_SIZE, length=2, pad=1)
        ax.set_xlim(1e-3, 1.0)
        ax.set_ylim(0.7, 10.0)
        # what INT8 loses: everything above amax saturates, |x| < step / 2 rounds to 0
        self.clipped = self._band(Rectangle, "#d62728", 0.12)
        self.zeroed = self._band(Rectangle, "#000000", 0.07)
        self.bars = ax.stairs([1.0], [1e-3, 1.0], fill=True, color="#b8c4d6", linewidth=0)
        self.lines = {}
        for m in methods:
            chosen = m == chosen_method
            self.lines[m] = ax.axvline(0.5, color=colors[m], linewidth=1.8 if chosen else 1.0,
                                       linestyle="-" if chosen else (0, (3, 2)), zorder=3 if chosen else 2)
        self.empty = ax.text(0.5, 0.5, "all values are 0", ha="center", va="center",
                             transform=ax.transAxes, fontsize=FONT_SIZE + 1)

    def _band(self, rectangle, color: str, alpha: float):
        """A full-height band between two |x| values (x in data, y in axes coordinates)."""
        band = rectangle((0.5, 0.0), 0.5, 1.0, transform=self.ax.get_xaxis_transform(),
                         color=color, alpha=alpha, linewidth=0)
        self.ax.add_patch(band)
        return band

    def png(self, hist: TensorHistogram, summary: TensorSummary) -> bytes:
        counts, edges = log_bins(hist)
        nz = np.flatnonzero(counts)
        self.empty.set_visible(nz.size == 0)
        for artist in (self.bars, self.clipped, self.zeroed, *self.lines.values()):
            artist.set_visible(nz.size > 0)
        if nz.size:
            top = max([summary.max_abs, *summary.amax_by_method.values()])
            first = max(int(nz[0]), int(np.searchsorted(edges, top * 2.0 ** -OCTAVES_SHOWN, side="right")) - 1)
            last = int(nz[-1]) + 1
            left, right, peak = edges[first], top * 1.25, counts[first:last].max()
            self.bars.set_data(np.maximum(counts[first:last], 0.5), edges[first : last + 1])
            self.ax.set_xlim(left, right)
            self.ax.set_ylim(0.7, peak * 2.0)
            amax = summary.chosen_amax
            _span(self.clipped, amax, right, amax > 0)
            _span(self.zeroed, left, amax / INT8_LEVELS / 2, amax > 0)
            for method, line in self.lines.items():
                value = summary.amax_by_method.get(method, 0.0)
                line.set_xdata([value, value])
                line.set_visible(value > 0)
            _ticks(self.ax.xaxis, left, right, 4)
            _ticks(self.ax.yaxis, 1.0, peak * 2.0, 3)
        buf = io.BytesIO()
        self.fig.savefig(buf, format="png", dpi=DPI, metadata={"Software": None})
        return buf.getvalue()


def _span(rect, lo: float, hi: float, visible: bool) -> None:
    rect.set_visible(visible and hi > lo)
    if hi > lo:
        rect.set_x(lo)
        rect.set_width(hi - lo)


def _ticks(axis, lo: float, hi: float, most: int) -> None:
    """Fixed power-of-ten ticks with plain labels: matplotlib's log locators and mathtext
    labels cost more than the whole rest of a small plot."""
    from matplotlib.ticker import FixedFormatter, FixedLocator, NullLocator

    first, last = math.ceil(math.log10(lo)), math.floor(math.log10(hi))
    step = max(1, math.ceil((last - first + 1) / most))
    exps = list(range(first, last + 1, step))
    axis.set_major_locator(FixedLocator([10.0 ** e for e in exps]))
    axis.set_major_formatter(FixedFormatter([_label(e) for e in exps]))
    axis.set_minor_locator(NullLocator())


def _label(exponent: int) -> str:
    return f"{10.0 ** exponent:g}" if -2 <= exponent <= 3 else f"1e{exponent}"


def histogram_images(
    stats_by_name: dict[str, TensorHistogram],
    summaries: list[TensorSummary],
    colors: dict[str, str],
    chosen_method: str,
) -> dict[str, str]:
    """tensor name -> base64 PNG of its histogram."""
    from ..util.log import progress

    plot = _Plot(list(colors), colors, chosen_method)
    return {
        s.name: base64.b64encode(plot.png(stats_by_name[s.name], s)).decode("ascii")
        for s in progress(summaries, total=len(summaries), desc="report plots", unit="plot")
    }
