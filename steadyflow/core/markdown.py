"""Our reports' markdown as a standalone HTML page: the subset they write, escaped, nothing else interpreted."""

from __future__ import annotations

import html
import re

_BOLD = re.compile(r"\*\*(.+?)\*\*")
_CODE = re.compile(r"`([^`]+)`")
_CELL = re.compile(r"(?<!\\)\|")
_IMAGE = re.compile(r"!\[([^\]]*)\]\((data:image/svg\+xml;base64,[A-Za-z0-9+/=]+)\)")
"""A chart (``steadyflow.audit.charts.image``) on a line of its own: the only image a page shows."""


def page(markdown_text: str, title: str) -> str:
    """A report's markdown (headings, paragraphs, tables, chart images) as a standalone, escaped HTML page."""
    body: list[str] = []
    table: list[list[str]] = []
    for line in [*markdown_text.splitlines(), ""]:
        if line.startswith("|"):
            if not set(line) <= set("|-: "):
                cells = _CELL.split(line.strip())[1:-1]
                table.append([_inline(c.strip().replace("\\|", "|")) for c in cells])
            continue
        if table:
            head, *rows = table
            body.append("<table><tr>" + "".join(f"<th>{c}</th>" for c in head) + "</tr>")
            body += ["<tr>" + "".join(f"<td>{c}</td>" for c in row) + "</tr>" for row in rows]
            body.append("</table>")
            table = []
        if line.startswith("## "):
            body.append(f"<h2>{_inline(line[3:])}</h2>")
        elif line.startswith("# "):
            body.append(f"<h1>{_inline(line[2:])}</h1>")
        elif image := _IMAGE.fullmatch(line):
            body.append(f'<p><img alt="{html.escape(image[1])}" src="{image[2]}"></p>')
        elif line:
            body.append(f"<p>{_inline(line)}</p>")
    style = (
        "body{font-family:sans-serif;max-width:60em}"
        "table{border-collapse:collapse}td,th{border:1px solid #ccc;padding:2px 8px}"
    )
    return (
        f"<!doctype html><meta charset='utf-8'><title>{html.escape(title)}</title><style>{style}</style>\n"
        + "\n".join(body)
        + "\n"
    )


def _inline(text: str) -> str:
    escaped = html.escape(text)
    return _CODE.sub(r"<code>\1</code>", _BOLD.sub(r"<b>\1</b>", escaped))
