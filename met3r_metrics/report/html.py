"""The page shell shared by report.html and compare.html: inline CSS, the sortable-table script, table markup.

No external resource of any kind (fonts, scripts, styles, images): the pages open from disk offline,
and a Content-Security-Policy meta tag makes the browser refuse any request that is not ``data:``.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from html import escape
from typing import Any

__all__ = ["page", "sortable_table", "cell", "fmt_number", "key_value_table"]

_CSS = """
body{font:14px/1.45 system-ui,-apple-system,Segoe UI,Helvetica,Arial,sans-serif;margin:24px auto;max-width:1200px;
color:#222;padding:0 16px}
h1{font-size:22px;margin:0 0 4px}h2{font-size:17px;margin:28px 0 8px;border-bottom:1px solid #ddd}
.headline{font-size:26px;font-weight:600}.muted{color:#666}.note{background:#fff8e1;padding:6px 10px;border-radius:4px}
table{border-collapse:collapse;margin:6px 0}td,th{padding:3px 8px;border-bottom:1px solid #eee;text-align:left;
vertical-align:middle}td.num,th.num{text-align:right;font-variant-numeric:tabular-nums}
table.sortable th{cursor:pointer;user-select:none;background:#f5f5f5;position:sticky;top:0}
table.sortable th[aria-sort=ascending]::after{content:" \\25B2"}table.sortable th[aria-sort=descending]::after{content:" \\25BC"}
tr.error td{color:#a00}.chart text{font-size:11px;fill:#333}.chart .ct{font-size:13px;font-weight:600}
.chart .grid{stroke:#eee}.chart .bar{fill:#1f77b4;opacity:.85}.chart .dot{fill:#1f77b4;opacity:.8}
.charts{display:flex;flex-wrap:wrap;gap:12px}.pair{margin:10px 0 18px}.pair figure{display:inline-block;margin:0 6px 0 0;
text-align:center}.pair img{width:160px;height:auto;image-rendering:pixelated;border:1px solid #ccc;display:block}
figcaption{font-size:12px;color:#555}.scroll{max-height:560px;overflow:auto}code{font-size:12px}
"""

# Sorts a table by the clicked header: numbers by value (data-v), text by locale; empty values last.
_JS = """
document.querySelectorAll('table.sortable').forEach(function (table) {
  var heads = table.tHead.rows[0].cells;
  Array.prototype.forEach.call(heads, function (th, col) {
    th.tabIndex = 0;
    function sort() {
      var asc = th.getAttribute('aria-sort') !== 'ascending';
      Array.prototype.forEach.call(heads, function (h) { h.removeAttribute('aria-sort'); });
      th.setAttribute('aria-sort', asc ? 'ascending' : 'descending');
      var body = table.tBodies[0], rows = Array.prototype.slice.call(body.rows), numeric = th.classList.contains('num');
      function key(row) { var c = row.cells[col], v = c.getAttribute('data-v'); return v === null ? c.textContent : v; }
      rows.sort(function (a, b) {
        var x = key(a), y = key(b);
        if (x === '' || y === '') { return (x === '') - (y === ''); }
        var r = numeric ? parseFloat(x) - parseFloat(y) : x.localeCompare(y, undefined, {numeric: true});
        return asc ? r : -r;
      });
      rows.forEach(function (row) { body.appendChild(row); });
    }
    th.addEventListener('click', sort);
    th.addEventListener('keydown', function (e) { if (e.key === 'Enter') { sort(); } });
  });
});
"""


def fmt_number(value: Any, digits: int = 5) -> str:
    """A number for a table cell ('' for None / NaN)."""
    if value is None or (isinstance(value, float) and not math.isfinite(value)):
        return ""
    if isinstance(value, int) and not isinstance(value, bool):
        return str(value)
    return f"{float(value):.{digits}f}"


def cell(value: Any, *, numeric: bool = False, digits: int = 5, html: str | None = None) -> str:
    """A ``<td>``; numeric cells carry their exact value in ``data-v`` for sorting ('' when missing)."""
    if numeric:
        ok = value is not None and not (isinstance(value, float) and not math.isfinite(value))
        v = repr(float(value)) if ok else ""
        return f'<td class="num" data-v="{v}">{html if html is not None else fmt_number(value, digits)}</td>'
    return f"<td>{html if html is not None else escape('' if value is None else str(value))}</td>"


def sortable_table(headers: Sequence[tuple[str, bool]], rows: Sequence[str], *, table_id: str,
                   row_classes: Sequence[str] | None = None) -> str:
    """A table whose header cells sort it (``headers``: (label, numeric)); ``rows``: each row's joined ``<td>``s."""
    head = "".join(f'<th{" class=num" if num else ""} scope="col">{escape(label)}</th>' for label, num in headers)
    classes = row_classes or [""] * len(rows)
    body = "".join(f'<tr{f" class={c}" if c else ""}>{r}</tr>' for r, c in zip(rows, classes))
    return f'<table class="sortable" id="{table_id}"><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>'


def key_value_table(items: Sequence[tuple[str, Any]]) -> str:
    """Two columns, e.g. the settings a result was made with."""
    rows = "".join(f"<tr><th>{escape(k)}</th><td><code>{escape(str(v))}</code></td></tr>" for k, v in items)
    return f"<table>{rows}</table>"


def page(title: str, body: str) -> str:
    """A whole HTML document: ``body`` inside the shared style, the sort script and a no-network policy."""
    csp = "default-src 'none'; img-src data:; style-src 'unsafe-inline'; script-src 'unsafe-inline'"
    return (f'<!DOCTYPE html>\n<html lang="en"><head><meta charset="utf-8">'
            f'<meta http-equiv="Content-Security-Policy" content="{csp}">'
            f'<meta name="viewport" content="width=device-width, initial-scale=1"><link rel="icon" href="data:,">'
            f"<title>{escape(title)}</title><style>{_CSS}</style></head><body>\n{body}\n"
            f"<script>{_JS}</script></body></html>\n")
