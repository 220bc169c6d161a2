"""The report's single HTML page: inline CSS, a few lines of vanilla JS, images as data URIs."""

from __future__ import annotations

import html
import math

from .plotting import HEIGHT_PX, WIDTH_PX
from .ranking import TensorSummary

READY_MARKER = "int8calib-report-ready"  # the script sets <body data-ready=...> once sorting is wired up

CSS = """
body{font:13px/1.4 system-ui,sans-serif;margin:16px 24px;color:#222}
h1{font-size:20px;margin:0 0 4px} h2{font-size:16px;margin:22px 0 6px}
.meta{color:#555} code{font-size:12px}
table{border-collapse:collapse;font-size:12px}
th,td{padding:2px 7px;border-bottom:1px solid #e4e4e4;text-align:right;white-space:nowrap}
td:first-child,th:first-child{text-align:left}
#tensors th{cursor:pointer;background:#f3f3f3;position:sticky;top:0}
#tensors th[aria-sort=ascending]::after{content:" \\25B2"} #tensors th[aria-sort=descending]::after{content:" \\25BC"}
tr.flag td:first-child{color:#b00}
.grid{display:flex;flex-wrap:wrap;gap:10px}
.card{width:250px;border:1px solid #ddd;border-radius:4px;padding:4px;font-size:11px}
.card.flag{border-color:#d88}
.card .name{font-weight:600;overflow-wrap:anywhere}
.card img{display:block}
.sw{display:inline-block;width:14px;height:3px;vertical-align:middle;margin:0 3px 0 8px}
li{margin-bottom:3px}
"""

SCRIPT = """
(function () {
  var table = document.getElementById('tensors');
  var heads = Array.prototype.slice.call(table.tHead.rows[0].cells);
  function key(row, i) {
    var v = row.cells[i].getAttribute('data-v');
    if (v === null) return row.cells[i].textContent;
    var x = parseFloat(v);
    return isNaN(x) ? -Infinity : x;
  }
  function sortBy(i, descending) {
    var body = table.tBodies[0], rows = Array.prototype.slice.call(body.rows);
    rows.sort(function (a, b) {
      var x = key(a, i), y = key(b, i);
      var d = typeof x === 'number' ? (x > y) - (x < y) : String(x).localeCompare(String(y));
      return descending ? -d : d;
    });
    rows.forEach(function (r) { body.appendChild(r); });
    heads.forEach(function (h) { h.removeAttribute('aria-sort'); });
    heads[i].setAttribute('aria-sort', descending ? 'descending' : 'ascending');
  }
  heads.forEach(function (h, i) {
    h.addEventListener('click', function () {
      sortBy(i, h.getAttribute('aria-sort') === 'ascending');
    });
  });
  var m = /^#sort=([\\w-]+?)(-desc)?$/.exec(location.hash);  // e.g. report.html#sort=clipped-desc
  if (m) heads.forEach(function (h, i) { if (h.getAttribute('data-key') === m[1]) sortBy(i, !!m[2]); });
  document.body.setAttribute('data-ready', '%s');
})();
""" % READY_MARKER

# Any uncaught error is written into the DOM, where a headless browser's --dump-dom shows it.
ERROR_TRAP = "window.addEventListener('error',function(e){document.documentElement.setAttribute('data-js-error',String(e.message))});"


def _e(value) -> str:
    return html.escape(str(value), quote=True)


def _num(value: float | None) -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return ""
    if math.isinf(value):
        return "Infinity" if value > 0 else "-Infinity"
    return repr(float(value))


def _cell(value: float | None, text: str) -> str:
    return f'<td data-v="{_num(value)}">{_e(text) if value is not None else "&mdash;"}</td>'


def anchor(index: int) -> str:
    return f"t{index}"


def _table(summaries: list[TensorSummary], methods: list[str], chosen: str, with_sqnr: bool) -> str:
    heads = [("tensor", "tensor")] + [(f"amax-{m}", f"{m} amax") for m in methods] + [
        ("chosen", f"chosen ({chosen})"), ("max", "max |x|"), ("clipped", "clipped"),
        ("zero", "rounds to 0"), ("tail", "max / p99.99"), ("spread", "method spread"),
    ]
    if with_sqnr:
        heads.append(("sqnr", "SQNR dB"))
    heads.append(("score", "score"))
    head = "".join(f'<th data-key="{k}">{_e(t)}</th>' for k, t in heads)
    rows = []
    for i, s in enumerate(summaries):
        cells = [f'<td><a href="#{anchor(i)}">{_e(s.name)}</a></td>']
        for m in methods:
            a = s.amax_by_method.get(m)
            cells.append(_cell(a, f"{a:.5g}" if a is not None else ""))
        cells += [
            _cell(s.chosen_amax, f"{s.chosen_amax:.5g}"),
            _cell(s.max_abs, f"{s.max_abs:.5g}"),
            _cell(s.clipped, f"{s.clipped:.3%}"),
            _cell(s.underflow, f"{s.underflow:.1%}"),
            _cell(s.tail_ratio, f"{s.tail_ratio:.1f}"),
            _cell(s.spread, f"{s.spread:.2f}x"),
        ]
        if with_sqnr:
            cells.append(_cell(s.sqnr_db, f"{s.sqnr_db:.1f}" if s.sqnr_db is not None else ""))
        cells.append(_cell(s.score, f"{s.score:.2f}"))
        rows.append(f'<tr{" class=flag" if s.reasons else ""}>{"".join(cells)}</tr>')
    return f'<table id="tensors"><thead><tr>{head}</tr></thead><tbody>\n' + "\n".join(rows) + "\n</tbody></table>"


def _where(flagged: list[TensorSummary], index: dict[str, int], n_flagged: int) -> str:
    if not flagged:
        return "<p>Nothing stands out: no tensor crosses any of the thresholds below.</p>"
    more = f" (the {len(flagged)} highest scores shown; sort the table by score for all)" if n_flagged > len(flagged) else ""
    head = f"<p>{n_flagged} of {len(index)} tensors are flagged{more}.</p>"
    items = [
        f'<li><a href="#{anchor(index[s.name])}"><code>{_e(s.name)}</code></a>: {_e("; ".join(s.reasons))}</li>'
        for s in flagged
    ]
    return head + "<ol>" + "".join(items) + "</ol>"


def _card(i: int, s: TensorSummary, png: str, colors: dict[str, str], chosen: str) -> str:
    values = " ".join(
        f'<span style="color:{colors[m]}">{_e(m)} {a:.4g}</span>' for m, a in s.amax_by_method.items()
    )
    sqnr = f" &middot; SQNR {s.sqnr_db:.1f} dB" if s.sqnr_db is not None else ""
    return (
        f'<div class="card{" flag" if s.reasons else ""}" id="{anchor(i)}"><div class="name">{_e(s.name)}</div>'
        f'<img width="{WIDTH_PX}" height="{HEIGHT_PX}" alt="|x| histogram of {_e(s.name)}" src="data:image/png;base64,{png}">'
        f"<div><b>amax {s.chosen_amax:.4g}</b> ({_e(chosen)}) &middot; clipped {s.clipped:.3%}"
        f" &middot; max {s.max_abs:.4g}{sqnr}</div><div>{values}</div></div>"
    )


def _legend(colors: dict[str, str], chosen: str) -> str:
    parts = [
        f'<span class="sw" style="background:{c}"></span>{_e(m)}{" (chosen, solid)" if m == chosen else ""}'
        for m, c in colors.items()
    ]
    return (
        "<p>" + "".join(parts) + '<span class="sw" style="background:#f4c6c6;height:10px"></span>clipped'
        '<span class="sw" style="background:#e6e6e6;height:10px"></span>rounds to 0 (below half an INT8 step)</p>'
    )


def _auto(choice: dict) -> str:
    """--method auto's candidates (MethodChoice.to_dict()), best first, the chosen one in bold."""
    scores = any(r.get("expected_top1_agreement") is not None for r in choice["candidates"])
    head = "<th>candidate</th>" + ("<th>expected top-1 agreement %</th><th>observed %</th>" if scores else "") + "<th>SQNR dB</th><th></th>"
    rows = []
    for r in choice["candidates"]:
        cells = f"<td>{_e(r['candidate'])}</td>"
        if scores:
            cells += f"<td>{_num(r['expected_top1_agreement'])}</td><td>{_num(r['top1_agreement'])}</td>"
        cells += f"<td>{'inf' if r['sqnr_db'] is None else _num(r['sqnr_db'])}</td>"
        note = (f"same ranges as {r['same_as']}" if r.get("same_as") else
                "screened out on fewer samples" if r.get("screened_out") else "")
        cells += f"<td>{_e(note)}</td>"
        bold = r["candidate"] == choice["chosen"]
        rows.append(f"<tr>{cells.replace('<td>', '<td><b>').replace('</td>', '</b></td>') if bold else cells}</tr>")
    corrected = " with their biases corrected" if choice.get("bias_corrected") else ""
    return (f"<h2>Method chosen by --method auto: {_e(choice['chosen'])}</h2>"
            f"<p class=\"meta\">Every candidate's all-INT8 Q/DQ model{corrected}, measured on {choice['held_out_samples']} held-out "
            f"samples (output '{_e(choice['output'])}'), best first.</p><table><tr>{head}</tr>{''.join(rows)}</table>")


def _precision(record: dict) -> str:
    """How the Q/DQ model types its float computation, and every node kept FP32 with its reason."""
    low = str(record.get("high_precision", "fp32")).upper()
    if low == "FP32":
        return "<h2>Float computation of the Q/DQ model: FP32</h2>"
    kept = record.get("fp32_nodes") or {}
    rows = "".join(f"<tr><td>{_e(node)}</td><td>{_e(why)}</td></tr>" for node, why in kept.items())
    table = f"<table><tr><th>kept FP32</th><th>why</th></tr>{rows}</table>" if rows else ""
    return (f"<h2>Float computation of the Q/DQ model: INT8 + {_e(low)}</h2>"
            f"<p class=\"meta\">{record.get('low_precision_nodes', 0)} nodes in {_e(low)}, {len(kept)} kept FP32, "
            f"{record.get('casts_added', 0)} casts added.</p>{table}")


def _key_values(items: dict) -> str:
    rows = "".join(f"<tr><td>{_e(k)}</td><td>{_e(_fmt(v))}</td></tr>" for k, v in items.items())
    return f"<table>{rows}</table>"


def _fmt(v) -> str:
    return f"{v:.4g}" if isinstance(v, float) else str(v)


def render(
    summaries: list[TensorSummary],
    flagged: list[TensorSummary],
    images: dict[str, str],
    colors: dict[str, str],
    chosen: str,
    meta: dict,
    evaluation: dict | None,
    thresholds: str,
    auto: dict | None = None,
    precision: dict | None = None,
) -> str:
    methods = list(colors)
    index = {s.name: i for i, s in enumerate(summaries)}
    with_sqnr = any(s.sqnr_db is not None for s in summaries)
    cards = "\n".join(_card(i, s, images[s.name], colors, chosen) for i, s in enumerate(summaries))
    header = {k: v for k, v in meta.items() if isinstance(v, (str, int, float)) and not k.endswith("sha256")}
    evaluation_html = f"<h2>Evaluation</h2>{_key_values(evaluation)}" if evaluation else ""
    auto_html = (_auto(auto) if auto else "") + (_precision(precision) if precision else "")
    return f"""<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8"><title>int8calib report</title>
<script>{ERROR_TRAP}</script><style>{CSS}</style></head>
<body>
<h1>INT8 calibration report</h1>
<div class="meta">{len(summaries)} tensors &middot; chosen method <b>{_e(chosen)}</b> &middot; methods compared: {_e(", ".join(methods))}</div>
{_key_values(header) if header else ""}
{auto_html}
{evaluation_html}
<h2>Where to look</h2>
{_where(flagged, index, sum(1 for s in summaries if s.reasons))}
<p class="meta">Flags: {_e(thresholds)}</p>
<h2>Tensors</h2>
<p class="meta">Click a column to sort. <i>clipped</i>: share of values above the chosen amax;
<i>rounds to 0</i>: share of non-zero values below half an INT8 step (amax/254);
<i>max / p99.99</i>: how far the largest value lies beyond the bulk; <i>method spread</i>: largest / smallest amax over the methods.</p>
{_table(summaries, methods, chosen, with_sqnr)}
<h2>Histograms</h2>
<p class="meta">|x| on log axes, 16 bins per octave, exact zeros left out.</p>
{_legend(colors, chosen)}
<div class="grid">
{cards}
</div>
<script>{SCRIPT}</script>
</body></html>
"""
