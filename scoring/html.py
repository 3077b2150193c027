"""A self-contained leaderboard page: inline CSS, a few lines of script that sort any table by a
clicked column, and the figures embedded as base64 data URIs (no external files or requests)."""

from __future__ import annotations

import base64
import html
import math
from collections.abc import Mapping, Sequence

from scoring.tables import Table

STYLE = """
body { font-family: system-ui, -apple-system, "Segoe UI", sans-serif; margin: 2rem auto; max-width: 1200px;
       padding: 0 1rem; color: #1b1f24; line-height: 1.45; }
h1 { margin-bottom: .2rem; } h2 { margin-top: 2.2rem; border-bottom: 1px solid #d0d7de; padding-bottom: .2rem; }
table { border-collapse: collapse; margin: .6rem 0; font-size: .92rem; }
th, td { border: 1px solid #d0d7de; padding: .3rem .55rem; text-align: left; white-space: nowrap; }
th { background: #f6f8fa; cursor: pointer; user-select: none; }
th[aria-sort="ascending"]::after { content: " ▲"; } th[aria-sort="descending"]::after { content: " ▼"; }
tbody tr:nth-child(even) { background: #fbfcfd; }
.note, .meta { color: #57606a; font-size: .88rem; }
.meta dt { font-weight: 600; float: left; clear: left; width: 11rem; } .meta dd { margin-left: 11.5rem; }
.warn { background: #fff8c5; border: 1px solid #d4a72c; padding: .5rem .8rem; border-radius: 6px; }
figure { margin: 1rem 0; } figure img { max-width: 100%; border: 1px solid #d0d7de; }
figcaption { color: #57606a; font-size: .88rem; }
.scroll { overflow-x: auto; }
"""

SCRIPT = """
(function () {
  function key(cell) {
    var v = cell.getAttribute('data-value');
    if (v === null) { return [1, cell.textContent.trim().toLowerCase()]; }
    var x = parseFloat(v);
    return [0, isNaN(x) ? Infinity : x];
  }
  function compare(a, b) {
    if (a[0] !== b[0]) { return a[0] - b[0]; }
    return a[1] < b[1] ? -1 : (a[1] > b[1] ? 1 : 0);
  }
  document.querySelectorAll('table.sortable').forEach(function (table) {
    var heads = table.tHead.rows[0].cells;
    Array.prototype.forEach.call(heads, function (th, column) {
      th.tabIndex = 0;
      function sort() {
        var ascending = th.getAttribute('aria-sort') !== 'ascending';
        Array.prototype.forEach.call(heads, function (h) { h.removeAttribute('aria-sort'); });
        th.setAttribute('aria-sort', ascending ? 'ascending' : 'descending');
        var body = table.tBodies[0];
        var rows = Array.prototype.slice.call(body.rows);
        rows.sort(function (a, b) {
          var c = compare(key(a.cells[column]), key(b.cells[column]));
          return ascending ? c : -c;
        });
        rows.forEach(function (row) { body.appendChild(row); });
      }
      th.addEventListener('click', sort);
      th.addEventListener('keydown', function (e) { if (e.key === 'Enter') { sort(); } });
    });
    table.setAttribute('data-sortable', 'ready');
  });
})();
"""


def _sort_value(key: float | str | None) -> str | None:
    if key is None or isinstance(key, str):
        return None
    key = float(key)
    if math.isnan(key):
        return "NaN"
    if math.isinf(key):
        return "Infinity" if key > 0 else "-Infinity"
    return repr(key)


def table_html(table: Table, table_id: str) -> str:
    """A sortable <table> (each cell carries its numeric sort key in data-value)."""
    if not table.headers:
        return ""
    head = "".join(f'<th scope="col">{html.escape(h)}</th>' for h in table.headers)
    body = []
    for row in table.rows:
        cells = []
        for text, key in row:
            value = _sort_value(key)
            attr = f' data-value="{value}"' if value is not None else ""
            cells.append(f"<td{attr}>{html.escape(text)}</td>")
        body.append("<tr>" + "".join(cells) + "</tr>")
    note = f'<p class="note">{html.escape(table.note)}</p>' if table.note else ""
    return (
        f'<div class="scroll"><table class="sortable" id="{table_id}"><thead><tr>{head}</tr></thead>'
        f"<tbody>{''.join(body)}</tbody></table></div>{note}"
    )


def image_html(png: bytes, alt: str, caption: str = "") -> str:
    """An <img> with the PNG inlined as a data URI."""
    data = base64.b64encode(png).decode("ascii")
    cap = f"<figcaption>{html.escape(caption)}</figcaption>" if caption else ""
    return f'<figure><img src="data:image/png;base64,{data}" alt="{html.escape(alt)}">{cap}</figure>'


def render_page(
    title: str,
    meta: Mapping[str, str],
    tables: Sequence[tuple[Table, str]],
    figures: Sequence[tuple[str, bytes, str]],
    warnings: Sequence[str],
    files: Sequence[str],
) -> str:
    """The whole page: `meta` as a definition list, `tables` as (Table, id), `figures` as
    (alt text, PNG bytes, caption), then the warnings and the list of files written."""
    parts = [
        "<!doctype html>",
        '<html lang="en"><head><meta charset="utf-8">',
        '<meta name="viewport" content="width=device-width, initial-scale=1">',
        f"<title>{html.escape(title)}</title><style>{STYLE}</style></head><body>",
        f"<h1>{html.escape(title)}</h1>",
        '<dl class="meta">'
        + "".join(f"<dt>{html.escape(k)}</dt><dd>{html.escape(v)}</dd>" for k, v in meta.items())
        + "</dl>",
    ]
    if warnings:
        items = "".join(f"<li>{html.escape(w)}</li>" for w in warnings)
        parts.append(
            f'<div class="warn"><strong>Check these before trusting the numbers</strong><ul>{items}</ul></div>'
        )
    for table, table_id in tables:
        if table.headers:
            parts.append(f"<h2>{html.escape(table.title)}</h2>{table_html(table, table_id)}")
    if figures:
        parts.append("<h2>Figures</h2>")
        parts.extend(image_html(png, alt, caption) for alt, png, caption in figures)
    if files:
        parts.append("<h2>Files</h2><ul>" + "".join(f"<li><code>{html.escape(f)}</code></li>" for f in files) + "</ul>")
    parts.append(f"<script>{SCRIPT}</script></body></html>")
    return "\n".join(parts) + "\n"
