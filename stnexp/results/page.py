"""report.html: the report's Markdown (the little of it that stnexp writes: headings, paragraphs, lists,
tables, bold, code, pictures) as one HTML page that opens from disk, its pictures embedded as data
URIs. Markdown that a user or a run's files chose arrives escaped (tables.text, tables.code), and is
shown as text, never as HTML."""

from __future__ import annotations

import base64
import html
import re
from pathlib import Path

STYLE = (
    "body{font-family:sans-serif;max-width:1100px;margin:2em auto}table{border-collapse:collapse;margin:1em 0}"
    "td,th{border:1px solid #bbb;padding:2px 8px;text-align:right}td:first-child,th:first-child{text-align:left}"
    "img{max-width:100%}figcaption{font-size:small;color:#555}"
)

# a code span of any fence (tables.code), or a backslash escape (tables.text)
_CODE_OR_ESCAPE = re.compile(r"(`+)(.+?)(?<!`)\1(?!`)|\\([\\`<>|\[\]*_])")


def to_html(markdown: str, images: dict[str, Path]) -> str:
    """The page: each line of `markdown` as a block, runs of table rows and list items gathered."""
    out: list[str] = []
    table: list[str] = []
    items: list[str] = []
    for line in markdown.splitlines():
        if line.startswith("|"):
            table.append(line)
        elif line.startswith("- "):
            items.append(line[2:])
        else:
            _flush(out, table, items)
            block = _block(line, images)
            if block:
                out.append(block)
    _flush(out, table, items)
    return (
        '<!doctype html>\n<html><head><meta charset="utf-8"><title>stnexp '
        f"report</title><style>{STYLE}</style></head><body>\n" + "\n".join(out) + "\n</body></html>\n"
    )


def _block(line: str, images: dict[str, Path]) -> str | None:
    """A picture, a heading or a paragraph; None for a blank line."""
    picture = re.fullmatch(r"!\[(.*)\]\((.*)\)", line.strip())
    if picture:
        src = images.get(picture.group(2))
        data = base64.b64encode(src.read_bytes()).decode() if src else ""
        return (
            f'<figure><img alt="{html.escape(picture.group(1))}" '
            f'src="data:image/png;base64,{data}"><figcaption>{inline(picture.group(1))}</figcaption></figure>'
        )
    if line.startswith("#"):
        level = len(line) - len(line.lstrip("#"))
        return f"<h{level}>{inline(line.lstrip('#').strip())}</h{level}>"
    return f"<p>{inline(line)}</p>" if line.strip() else None


def _flush(out: list[str], table: list[str], items: list[str]) -> None:
    """The table rows and list items gathered so far, as one <table> and one <ul>."""
    if table:
        out.extend(_table(table))
        table.clear()
    if items:
        out.append("<ul>" + "".join(f"<li>{inline(i)}</li>" for i in items) + "</ul>")
        items.clear()


def _table(lines: list[str]) -> list[str]:
    rows = [r for r in lines if not re.fullmatch(r"\|[\s\-:|]+\|", r)]
    cells = [[c.strip() for c in re.split(r"(?<!\\)\|", r)[1:-1]] for r in rows]
    if not cells or not cells[0]:  # no table after all (lines that merely start with |)
        return [f"<p>{inline(r)}</p>" for r in lines]
    head = "<tr>" + "".join(f"<th>{inline(c)}</th>" for c in cells[0]) + "</tr>"
    body = "".join("<tr>" + "".join(f"<td>{inline(c)}</td>" for c in row) + "</tr>" for row in cells[1:])
    return [f"<table>{head}{body}</table>"]


def inline(text: str) -> str:
    """One line's inline Markdown as HTML: code spans and backslash escapes are set aside first, as
    placeholders, so that neither the bold rule nor anything else reads inside them."""
    kept: list[str] = []

    def keep(m: re.Match) -> str:
        if m.group(1):
            body = m.group(2)[1:-1] if len(m.group(1)) > 1 and m.group(2).startswith(" ") else m.group(2)
            kept.append(f"<code>{html.escape(body, quote=False)}</code>")
        else:
            kept.append(html.escape(m.group(3), quote=False))
        return f"\x00{len(kept) - 1}\x00"

    text = _CODE_OR_ESCAPE.sub(keep, text.replace("\x00", ""))
    text = re.sub(r"\*\*(.+?)\*\*", r"<b>\1</b>", html.escape(text, quote=False))
    return re.sub("\x00([0-9]+)\x00", lambda m: kept[int(m.group(1))], text)
