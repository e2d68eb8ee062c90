"""compare.html: the methods table, per-sequence scatter of each method against the reference, the
sequences where they differ most, and every sequence's scores side by side."""

from __future__ import annotations

from collections.abc import Sequence
from html import escape

from .charts import scatter
from .comparison import Comparison
from .html import cell, key_value_table, page, sortable_table
from .load import RunResults
from .run_page import score_name
from .tables import footnote, table_rows

__all__ = ["compare_html"]


def _methods_table(c: Comparison) -> str:
    ref = c.methods[0].name
    headers = [("method", False), ("mean", True), ("95% CI low", True), ("95% CI high", True), ("sequences", True),
               ("lacking", True), (f"difference vs {ref}", True), ("paired CI low", True), ("paired CI high", True),
               ("common sequences", True)]
    rows = ["".join([cell(r["method"]), cell(r["mean"], numeric=True), cell(r["ci_low"], numeric=True),
                     cell(r["ci_high"], numeric=True), cell(r["sequences"], numeric=True), cell(r["lacking"], numeric=True),
                     cell(r["diff_vs_reference"], numeric=True), cell(r["diff_ci_low"], numeric=True),
                     cell(r["diff_ci_high"], numeric=True), cell(r["common_sequences"], numeric=True)])
            for r in table_rows(c)]
    return sortable_table(headers, rows, table_id="methods")


def _largest(c: Comparison) -> str:
    out = []
    for p in c.paired:
        rows = ["".join([cell(n), cell(a, numeric=True), cell(b, numeric=True), cell(b - a, numeric=True)])
                for n, a, b in p.largest]
        out.append(f"<h3>{escape(p.name)} vs {escape(p.reference)}: the {len(rows)} sequences that differ most</h3>")
        out.append(sortable_table([("sequence", False), (p.reference, True), (p.name, True), ("difference", True)],
                                  rows, table_id=f"largest-{len(out)}"))
    return "".join(out)


def _all_sequences(c: Comparison, runs: Sequence[RunResults]) -> str:
    scores = [r.sequence_scores() for r in runs]
    order = list(dict.fromkeys(n for s in scores for n in s))
    rows = ["".join([cell(n)] + [cell(s.get(n), numeric=True) for s in scores]) for n in order]
    return sortable_table([("sequence", False)] + [(r.name, True) for r in runs], rows, table_id="per-sequence")


def compare_html(c: Comparison, runs: Sequence[RunResults], *, title: str = "MEt3R comparison") -> str:
    """The whole comparison page."""
    label = score_name(c.distance)
    charts = "".join(scatter([(a, b, n) for n, a, b in p.points], title=f"per sequence: {p.name} vs {p.reference}",
                             xlabel=p.reference, ylabel=p.name) for p in c.paired)
    body = [f"<h1>{escape(title)}</h1>", f'<p class="muted">{escape(label)}</p>', _methods_table(c),
            f'<p class="muted" id="footnote">{escape(footnote(c))}</p>',
            "<h2>Per sequence</h2>", '<p class="muted">One dot per sequence both scored; dots above the dashed '
            "line scored higher with the method on the y axis.</p>", f'<div class="charts">{charts}</div>',
            "<h2>Largest differences</h2>", _largest(c), "<h2>All sequences</h2>",
            f'<div class="scroll">{_all_sequences(c, runs)}</div>', "<h2>Runs</h2>",
            key_value_table([(r.name, str(r.path)) for r in runs])]
    return page(title, "\n".join(body))
