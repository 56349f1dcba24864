"""HTML building blocks of the report's site (membench.report.site, site_runs): the page
frame with the styles and script inlined (static/site.css, static/site.js), sortable tables,
notes. Every text is escaped; sort values print with fixed precision (byte-stable pages)."""

from __future__ import annotations

import math
from html import escape
from importlib import resources

from membench.report import svg

INDEX = "index.html"
SITE_DIR = "site"  # the run pages
NUMERIC = ' class="num"'


def static(name: str) -> str:
    return resources.files("membench.report").joinpath("static", name).read_text(encoding="utf-8")


def page(title: str, body: list[str]) -> str:
    """A whole HTML page: the styles and the script inline, no external resource."""
    return "\n".join([
        "<!DOCTYPE html>", '<html lang="en">', "<head>", '<meta charset="utf-8">',
        '<meta name="viewport" content="width=device-width, initial-scale=1">',
        '<meta name="generator" content="membench report">',
        f"<title>{escape(title)}</title>", f"<style>\n{static('site.css')}</style>", "</head>", "<body>",
        *body, '<div id="tip" role="tooltip" hidden></div>', f"<script>\n{static('site.js')}</script>",
        "</body>", "</html>", ""])


def sort_key(value) -> str:
    """A cell's data-sort: numbers with 12 significant digits, text as is, missing empty."""
    if value is None or (isinstance(value, float) and not math.isfinite(value)):
        return ""
    if isinstance(value, (int, float)):
        return f"{value:.12g}"
    return str(value)


def table(header, rows, ident: str, caption: str = "", row_classes=None) -> str:
    """A sortable table: `rows` are lists of (html, sort value, numeric?) cells."""
    out = ['<div class="scroll">', f'<table class="sortable" id="{svg.attr(ident)}">']
    if caption:
        out.append(f"<caption>{escape(caption)}</caption>")
    out.append("<thead><tr>" + "".join(f'<th scope="col"><button type="button">{escape(h)}</button></th>'
                                       for h in header) + "</tr></thead><tbody>")
    for i, row in enumerate(rows):
        cls = f' class="{row_classes[i]}"' if row_classes and row_classes[i] else ""
        cells = "".join(f'<td{NUMERIC if numeric else ""} data-sort="{svg.attr(sort_key(value))}">{content}</td>'
                        for content, value, numeric in row)
        out.append(f"<tr{cls}>{cells}</tr>")
    out += ["</tbody></table>", "</div>"]
    return "\n".join(out)


def notes(lines: list[str]) -> str:
    return '<ul class="notes">' + "".join(f"<li>{escape(n)}</li>" for n in lines) + "</ul>"


def run_link(run_id: str, pages: dict[str, str], text: str | None = None) -> str:
    href = pages.get(run_id)
    text = escape(text if text is not None else run_id)
    return f'<a href="{svg.attr(href)}">{text}</a>' if href else text
