"""HTML building blocks of the report's site (membench.report.site, site_runs) and of
`predict --html`: the page frame linking the one stylesheet and script (static/site.css,
static/site.js, copied beside the pages: nothing is fetched from elsewhere, so the pages work
from file:// and offline), sortable tables, notes. Every text is escaped; sort values print
with fixed precision (byte-stable pages)."""

from __future__ import annotations

import math
from html import escape
from importlib import resources
from pathlib import Path

from membench.report import svg
from membench.util.files import atomic_write_text

INDEX = "index.html"
SITE_DIR = "site"  # the run pages, and the assets every page links
ASSETS = ("site.css", "site.js")
NUMERIC = ' class="num"'


def static(name: str) -> str:
    return resources.files("membench.report").joinpath("static", name).read_text(encoding="utf-8")


def write_assets(folder: Path) -> list[Path]:
    """The stylesheet and script the pages link, written into FOLDER."""
    for name in ASSETS:
        atomic_write_text(Path(folder) / name, static(name))
    return [Path(folder) / name for name in ASSETS]


def page(title: str, body: list[str], assets: str = "") -> str:
    """A whole HTML page linking the assets in the folder `assets` (a relative URL prefix:
    "" for the page's own folder, "site/" below it)."""
    css, js = (svg.attr(assets + name) for name in ASSETS)
    return "\n".join([
        "<!DOCTYPE html>", '<html lang="en">', "<head>", '<meta charset="utf-8">',
        '<meta name="viewport" content="width=device-width, initial-scale=1">',
        '<meta name="generator" content="membench">', f"<title>{escape(title)}</title>",
        f'<link rel="stylesheet" href="{css}">', "</head>", "<body>",
        *body, '<div id="tip" role="tooltip" hidden></div>', f'<script src="{js}"></script>',
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
