"""The leaderboard as Markdown (GitHub-flavoured tables, figures linked as PNG files)."""

from __future__ import annotations

from collections.abc import Mapping, Sequence

from scoring.tables import Table


def _cell(text: str) -> str:
    return text.replace("|", "\\|")


def table_markdown(table: Table) -> str:
    """A pipe table; numeric-looking columns are right-aligned."""
    if not table.headers:
        return ""
    numeric = [
        all(row[i][1] is not None and not isinstance(row[i][1], str) for row in table.rows)
        for i in range(len(table.headers))
    ]
    lines = [
        "| " + " | ".join(_cell(h) for h in table.headers) + " |",
        "|" + "|".join("---:" if n else "---" for n in numeric) + "|",
    ]
    lines += ["| " + " | ".join(_cell(text) for text, _ in row) + " |" for row in table.rows]
    if table.note:
        lines += ["", f"_{table.note}_"]
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
    parts = [f"# {title}", ""]
    parts += [f"- **{k}:** {v}" for k, v in meta.items()]
    if warnings:
        parts += ["", "> **Check these before trusting the numbers**"]
        parts += [f"> - {w}" for w in warnings]
    for table in tables:
        if table.headers:
            parts += ["", f"## {table.title}", "", table_markdown(table)]
    if figures:
        parts += ["", "## Figures", ""]
        for caption, path in figures:
            parts += [f"![{caption}]({path})", "", f"_{caption}_", ""]
    if files:
        parts += ["", "## Files", ""] + [f"- `{f}`" for f in files]
    return "\n".join(parts).rstrip() + "\n"
