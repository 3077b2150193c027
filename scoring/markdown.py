"""The leaderboard as Markdown (GitHub-flavoured tables, figures linked as PNG files).

Every text is escaped (`escape`): a name shows as written, never as markup, HTML or math."""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence

from scoring.tables import Table

# Characters that can start inline markup (emphasis, code, links, tables, strikethrough, math);
# `_` only where it does not sit between two letters or digits (there it is plain text).
_MARKUP = re.compile(r"[\\`*\[\]|~$]|(?<![^\W_])_|_(?![^\W_])")
_HTML = {"&": "&amp;", "<": "&lt;", ">": "&gt;"}
_LINE_BREAKS = re.compile(r"[\r\n\v\f\x1c-\x1e\x85\u2028\u2029]+")


def escape(text: str) -> str:
    """`text` as literal Markdown: markup characters backslash-escaped, `&<>` as HTML entities
    (no raw HTML), line breaks as spaces (a name cannot end a table row or start a block)."""
    text = _MARKUP.sub(lambda m: "\\" + m.group(), _LINE_BREAKS.sub(" ", text))
    return re.sub("[&<>]", lambda m: _HTML[m.group()], text)


def table_markdown(table: Table) -> str:
    """A pipe table; numeric-looking columns are right-aligned."""
    if not table.headers:
        return ""
    numeric = [
        all(row[i][1] is not None and not isinstance(row[i][1], str) for row in table.rows)
        for i in range(len(table.headers))
    ]
    lines = [
        "| " + " | ".join(escape(h) for h in table.headers) + " |",
        "|" + "|".join("---:" if n else "---" for n in numeric) + "|",
    ]
    lines += ["| " + " | ".join(escape(text) for text, _ in row) + " |" for row in table.rows]
    if table.note:
        lines += ["", f"_{escape(table.note)}_"]
    return "\n".join(lines)


def render_markdown(
    title: str,
    meta: Mapping[str, str],
    tables: Sequence[Table],
    figures: Sequence[tuple[str, str]],
    warnings: Sequence[str],
    files: Sequence[str],
) -> str:
    """The report: `meta` as a bullet list, the tables, `figures` as (caption, relative path)."""
    parts = [f"# {escape(title)}", ""]
    parts += [f"- **{escape(k)}:** {escape(v)}" for k, v in meta.items()]
    if warnings:
        parts += ["", "> **Check these before trusting the numbers**"]
        parts += [f"> - {escape(w)}" for w in warnings]
    for table in tables:
        if table.headers:
            parts += ["", f"## {escape(table.title)}", "", table_markdown(table)]
    if figures:
        parts += ["", "## Figures", ""]
        for caption, path in figures:
            parts += [f"![{escape(caption)}]({path})", "", f"_{escape(caption)}_", ""]
    if files:
        parts += ["", "## Files", ""] + [f"- `{f}`" for f in files]
    return "\n".join(parts).rstrip() + "\n"
