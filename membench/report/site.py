"""The HTML site `membench report` writes beside the Markdown: OUT/index.html and one page
per run in OUT/site/ (membench.report.site_runs).

Self-contained: the CSS and a few lines of JavaScript (static/site.css, static/site.js:
sortable tables, tooltips) are copied into OUT/site/, the charts are plain SVG, and nothing is
fetched, so the pages work from file:// and offline. index.html holds, per dataset, Tables 1 and 2
(the cells, footnotes and notes of the Markdown tables, membench.report.tables), an
interactive Fig. 3 (hover a point: model, configuration, splits, rho with its sd and 95% CI;
the human-consistency line), the table of every run on the dataset (each linking to its
page), and the transfer matrix as a heat map. Deterministic: the same leaderboard gives the
same bytes (no dates of generation, sorted inputs, fixed number formats).
"""

from __future__ import annotations

import math
from html import escape
from pathlib import Path

from membench.report import svg, tables, transfer
from membench.report.pages import INDEX, SITE_DIR, notes, page, run_link, table, write_assets
from membench.results import grouping
from membench.util.files import atomic_write_text, safe_name

# ------------------------------------------------------------------ Tables 1 and 2

def entry_row(entry, pages: dict[str, str]) -> list[tuple[str, object, bool]]:
    cells = tables.cells(entry)
    rep = entry.reported
    label = escape(cells[0])
    if entry.run is not None:
        runs = getattr(entry.run, "runs", [entry.run])
        if len(runs) == 1:
            label = run_link(runs[0].run_id, pages, cells[0])
        else:
            label += " (" + ", ".join(run_link(r.run_id, pages, f"seed {grouping.seed_of(r)}") for r in runs) + ")"
    values = [entry.label, entry.stat("rho")[0], entry.rho_ci[0] if entry.rho_ci else None, entry.stat("mse")[0],
              entry.n_splits, entry.params_total, rep.rho if rep else None, rep.mse if rep else None,
              rep.params if rep else None, cells[9]]
    source = len(cells) - 1  # the last column is text
    return [(label, values[0], False)] + [(escape(c), v, i != source) for i, (c, v) in
                                          enumerate(zip(cells[1:], values[1:]), start=1)]


def tables_section(ds: str, entries_by_table: dict, pages, n_boot: int, seed: int) -> list[str]:
    out = []
    for name in ("table1", "table2"):
        entries = entries_by_table[name]
        out.append(f'<h3 id="{svg.attr(name + "-" + safe_name(ds))}-title">{escape(tables.title(name, ds, entries))}</h3>')
        out.append(table(tables.HEADER, [entry_row(e, pages) for e in entries], f"{name}-{safe_name(ds)}"))
        out.append(notes(tables.notes(entries, ds, n_boot, seed)))
    return out


# ------------------------------------------------------------------ Fig. 3

def _tip_measured(entry) -> str:
    group = entry.run
    rho, rho_sd = entry.stat("rho")
    mse, mse_sd = entry.stat("mse")
    ci = entry.rho_ci
    splits = f"{entry.n_splits}" + (f" × {entry.n_seeds} seeds" if entry.n_seeds > 1 else "")
    lines = [f"{entry.label}{entry.config_mark}",
             f"configuration: {group.configuration or 'protocol'} ({group.config_id})",
             f"splits: {splits}; preset {group.preset}",
             f"ρ = {tables.fmt_pm(rho, rho_sd, 3)}" + (f", 95% CI [{ci[0]:.3f}, {ci[1]:.3f}]" if ci else ""),
             f"MSE = {tables.fmt_pm(mse, mse_sd, 4)}",
             f"parameters: {tables.fmt_params(entry.params_total, entry.params_used)}"]
    return "\n".join(lines)


def _tip_reported(entry, metric: str) -> str:
    rep = entry.reported
    value = getattr(rep, metric)
    shown = f"{value:.3f}" if metric == "rho" else f"{value:.4f}"
    return "\n".join([f"{entry.model} (reported, not measured here)", f"{'ρ' if metric == 'rho' else 'MSE'} = "
                      f"{shown} on {rep.dataset}", f"parameters: {tables.millions(rep.params)}",
                      f"source: {rep.source}" + (f" ({rep.note})" if rep.note else "")])


def fig3_points(entries, metric: str) -> list[dict]:
    """The points of one panel: measured rows (with sd) and reported numbers, as the PNG."""
    out = []
    for e in entries:
        mean, sd = e.stat(metric)
        if e.run is not None and e.params_total and mean is not None:
            out.append({"kind": "measured", "x": e.params_total / 1e6, "y": mean, "sd": sd,
                        "label": e.label + e.config_mark, "other": bool(e.config_mark),
                        "tip": _tip_measured(e)})
        rep = e.reported
        if rep is not None and rep.params and getattr(rep, metric) is not None:
            out.append({"kind": "reported", "x": rep.params / 1e6, "y": getattr(rep, metric), "sd": None,
                        "label": e.label, "other": False, "tip": _tip_reported(e, metric)})
    return out


def fig3_panel(panel: svg.Panel, points: list[dict], human: dict[str, float]) -> list[str]:
    body, labels = [], svg.Labels(panel)
    for p in points:  # labels never cover a marker
        x, y = panel.x(p["x"]), panel.y(p["y"])
        labels.reserve(x - 7, y - 7, x + 7, y + 7)
    for ds, value in sorted(human.items()):
        y = panel.y(value)
        text = f"human consistency ({ds}): {value:.2f}"
        body.append(f'<line class="human" x1="{svg.px(panel.left)}" y1="{svg.px(y)}" x2="{svg.px(panel.left + panel.width)}" '
                    f'y2="{svg.px(y)}" data-tip="{svg.attr(f"human consistency ({ds}): {value:.3f}")}" tabindex="0"/>')
        right = panel.left + panel.width - 4 - svg.CHAR * len(text)
        body.append(labels.first(text, [(panel.left + 4, y - svg.FONT - 5), (right, y - svg.FONT - 5),
                                        (panel.left + 4, y + 3), (right, y + 3)]))
    markers = []  # drawn last: nothing (an error bar, a ring) lies over a point one hovers
    for p in points:
        x, y = panel.x(p["x"]), panel.y(p["y"])
        if p["sd"] is not None:
            body.append(f'<line class="errorbar" x1="{svg.px(x)}" y1="{svg.px(panel.y(p["y"] - p["sd"]))}" '
                        f'x2="{svg.px(x)}" y2="{svg.px(panel.y(p["y"] + p["sd"]))}"/>')
        if p["other"]:
            body.append(f'<circle class="other-config" cx="{svg.px(x)}" cy="{svg.px(y)}" r="9"/>')
        tip = f'data-tip="{svg.attr(p["tip"])}" tabindex="0" data-label="{svg.attr(p["label"])}"'
        if p["kind"] == "measured":
            markers.append(f'<circle class="measured" cx="{svg.px(x)}" cy="{svg.px(y)}" r="5.5" {tip}/>')
        else:
            markers.append(f'<rect class="reported" x="{svg.px(x - 5)}" y="{svg.px(y - 5)}" width="10" height="10" '
                           f'{tip}/>')
        body.append(labels.place(p["label"], x, y))
    body += markers
    return body


def fig3(ds: str, entries, human: dict[str, float]) -> list[str]:
    """Fig. 3: (a) rho and (b) MSE against parameters (millions), one SVG, with its legend."""
    panels = {"rho": fig3_points(entries, "rho"), "mse": fig3_points(entries, "mse")}
    xs = [p["x"] for pts in panels.values() for p in pts]
    if not xs:
        return ['<p class="note">Fig. 3: no point to draw (no measured or reported value with a parameter count).</p>']
    xlog = svg.use_log(xs)
    xlim = svg.limits(xs, xlog, margin=0.12)
    body = []
    for i, (metric, name) in enumerate((("rho", "Spearman's ρ"), ("mse", "MSE"))):
        pts = panels[metric]
        ys = [v for p in pts for v in (p["y"], p["y"] + (p["sd"] or 0), p["y"] - (p["sd"] or 0))]
        ys += list(human.values()) if metric == "rho" else []
        panel = svg.Panel(70 + i * 490, 30, 380, 320, xlim, svg.limits(ys, margin=0.1), xlog=xlog)
        title = f"({'ab'[i]}) {'ρ' if metric == 'rho' else 'MSE'} vs parameters ({ds})"
        body.append(f'<g class="panel" data-metric="{metric}">')
        body += panel.frame("parameters (millions" + (", log scale)" if xlog else ")"), name, title)
        body += fig3_panel(panel, pts, human if metric == "rho" else {})
        body.append("</g>")
    legend = ['<ul class="legend">',
              f'<li><span class="swatch" style="background:#1f77b4;border-radius:50%"></span>measured on {escape(ds)} '
              "(mean over splits, bar: ± sd)</li>",
              '<li><span class="swatch" style="border:2px solid #d62728;border-radius:50%"></span>not the protocol '
              "configuration (see the table footnotes)</li>",
              '<li><span class="swatch" style="border:2px solid #ff7f0e"></span>reported by the authors (their dataset, '
              "not measured here)</li>",
              '<li><span class="swatch" style="border-top:2px dashed #777;height:0"></span>human consistency</li>', "</ul>"]
    return ['<div class="figure">', svg.svg(960, 400, body, f"Fig. 3 ({ds})", f"fig3-{safe_name(ds)}"), *legend,
            '<p class="note">Hover or focus a point for its configuration, splits and 95% CI.</p>', "</div>"]


# ------------------------------------------------------------------ every run, transfer matrix

def runs_table(ds: str, rows: list[dict], pages) -> tuple[str, list[str]]:
    """The every-run table of a dataset (the rows of membench.report.transfer.run_rows, the
    cells of its Markdown table: transfer.run_cells), sortable, and its footnotes."""
    texts, footnotes = transfer.run_cells(rows)
    cells, classes = [], []
    for r, text in zip(rows, texts):
        measured = r["kind"] == "measured"
        label = run_link(r["run_id"], pages, r["label"]) if measured else escape(text[0])
        sort = ([r["rho_mean"], r["rho_ci_low"], r["mse_mean"], r["n_splits"], r["seconds"], r["notes"] or ""]
                if measured else [r["rho_mean"], None, r["mse_mean"], None, None, r["source"]])
        cells.append([(label, r["label"], False)] + [(escape(t), v, i < 5) for i, (t, v) in
                                                     enumerate(zip(text[1:], sort))])
        classes.append("" if measured else "reported")
    return table(transfer.RUN_HEADER, cells, f"runs-{safe_name(ds)}", row_classes=classes), footnotes


def heat_colour(value: float | None, vmax: float) -> tuple[str, str]:
    """Background (matplotlib's RdBu, centred on 0) and a readable text colour."""
    if value is None or not math.isfinite(value):
        return "#ffffff", "#1b1b1b"
    from matplotlib import colormaps
    from matplotlib.colors import to_hex

    r, g, b, _ = colormaps["RdBu"]((value / vmax + 1) / 2)
    return to_hex((r, g, b)), "#ffffff" if 0.2126 * r + 0.7152 * g + 0.0722 * b < 0.5 else "#1b1b1b"


def heat_map(matrix: list[dict]) -> list[str]:
    """The transfer matrix (membench.report.transfer.matrix_rows): a table whose cells are
    coloured by rho, with the interval and the run in each cell's tooltip."""
    columns = sorted({r["_column"] for r in matrix})
    labels = sorted({r["_row"] for r in matrix})
    cell = {(r["_row"], r["_column"]): r for r in matrix}
    vmax = max([0.1] + [abs(r["rho_mean"]) for r in matrix if r["rho_mean"] is not None])
    vmax = math.ceil(vmax * 10) / 10
    out = ['<div class="scroll"><table id="transfer-matrix">',
           "<thead><tr><th>Model ← trained on</th>" + "".join(f"<th>{escape(c)}</th>" for c in columns) + "</tr></thead>",
           "<tbody>"]
    for label in labels:
        row = [f"<th scope=\"row\">{escape(label)}</th>"]
        for col in columns:
            r = cell.get((label, col))
            if r is None:
                row.append('<td class="heat">—</td>')
                continue
            bg, fg = heat_colour(r["rho_mean"], vmax)
            ci = "" if r["rho_ci_low"] is None else f" [{r['rho_ci_low']:.3f}, {r['rho_ci_high']:.3f}]"
            tip = (f"{label} → {col}\nρ = {transfer._fmt(r['rho_mean'])}{ci} (mean over {r['n_splits']} splits, "
                   f"{r['n_test']} test images each)\nrun {r['run_id']}")
            row.append(f'<td class="heat" style="background:{bg};color:{fg}" data-tip="{svg.attr(tip)}" tabindex="0">'
                       f"{escape(transfer._fmt(r['rho_mean']) + ci)} (n={r['n_splits']})</td>")
        out.append("<tr>" + "".join(row) + "</tr>")
    out.append("</tbody></table></div>")
    stops = "".join(f'<stop offset="{i / 10:.1f}" stop-color="{heat_colour((i / 5 - 1) * vmax, vmax)[0]}"/>'
                    for i in range(11))
    out.append(f'<svg class="chart" xmlns="http://www.w3.org/2000/svg" width="320" height="34" viewBox="0 0 320 34" '
               f'role="img" aria-label="colour scale"><defs><linearGradient id="heat-scale">{stops}</linearGradient>'
               f'</defs><rect x="10" y="2" width="300" height="12" fill="url(#heat-scale)"/>'
               f'<text class="tick" x="10" y="28" text-anchor="middle">{-vmax:.1f}</text>'
               f'<text class="tick" x="160" y="28" text-anchor="middle">ρ = 0</text>'
               f'<text class="tick" x="310" y="28" text-anchor="middle">{vmax:.1f}</text></svg>')
    return out


# ------------------------------------------------------------------ the page

def dataset_section(ds: str, entries_by_table, ceilings, every_run, items, leaderboard: Path, pages, n_boot: int,
                    seed: int) -> list[str]:
    """One dataset's part of the page: the entries and ceilings are those of its Markdown
    tables and Fig. 3 (membench.report.tables), footnote marks included."""
    out = [f'<h2 id="{svg.attr(safe_name(ds))}">{escape(ds)}</h2>']
    out += tables_section(ds, entries_by_table, pages, n_boot, seed)
    out.append(f'<h3 id="fig3-{svg.attr(safe_name(ds))}-title">Fig. 3: ρ and MSE vs parameters ({escape(ds)})</h3>')
    out += fig3(ds, entries_by_table["table2"], ceilings)
    # the every-run table and comparisons as the Markdown report computed them, else (a
    # leaderboard without transfer, literature or listed comparisons) its runs alone
    rows, compared = every_run.get(ds) or (transfer.run_rows(items, ds, [], n_boot, seed), [])
    if rows:
        out.append(f'<h3 id="runs-{svg.attr(safe_name(ds))}-title">Every run on {escape(ds)}</h3>')
        html_table, footnotes = runs_table(ds, rows, pages)
        ceiling = ceilings.get(ds)
        extra = [f"Human consistency of {ds}: {ceiling:.3f}."] if ceiling is not None else []
        out += [html_table, notes(footnotes + extra + [
            "ρ per split on that split's test images, mean ± sample sd over splits; 95% CI as in the tables; "
            "wall time: the sum of the rows' seconds. Each model links to its run page: predictions against "
            "the human scores and training curves."])]
        for c in compared:
            out += [f"<p>{escape(c['_title'])}, paired bootstrap of <code>membench compare</code>):</p>",
                    f"<pre>{escape(c['_render'].rstrip())}</pre>"]
    return out


def files_section(out: Path, files: list[str]) -> list[str]:
    """Links to this leaderboard's files: the ones the report wrote (`files`, in order) and the
    data it read from (results.csv, summary.csv, params.csv) when they sit beside the site."""
    found = list(dict.fromkeys([n for n in ("results.csv", "summary.csv", "params.csv") if (out / n).is_file()]
                               + [n for n in files if not n.endswith(".html")]))
    nested = sorted(p.parent.name for p in out.glob(f"*/{INDEX}") if p.parent.name != SITE_DIR)
    lines = ["<h2 id=\"files\">Files</h2>", "<p>" + " · ".join(f'<a href="{svg.attr(n)}">{escape(n)}</a>' for n in found)
             + "</p>"]
    if nested:
        lines.append("<p>Other leaderboards in this folder: " + " · ".join(
            f'<a href="{svg.attr(n)}/{INDEX}">{escape(n)}</a>' for n in nested) + "</p>")
    return lines


def write(leaderboard: Path, out: Path, runs, built: dict, n_boot: int = 2000, seed: int = 0,
          files=(), every_run: dict | None = None) -> list[Path]:
    """Write OUT/index.html and OUT/site/<run>.html; returns the written paths. `built`: per
    dataset, (its tables' entries, its human ceilings) as the Markdown report built them;
    `every_run`: per dataset, (its every-run rows, its comparisons) as transfer.write made them;
    `files`: the names of the files the report wrote in OUT, linked from the page."""
    from membench.report import site_runs

    leaderboard, out = Path(leaderboard), Path(out)
    runs = sorted(runs, key=lambda r: r.run_id)
    datasets = list(built)
    items = transfer.views(runs)
    written, pages = site_runs.write(out, runs, items, n_boot, seed)
    written += write_assets(out / SITE_DIR)
    body = ["<header><h1>membench leaderboard</h1>",
            '<p class="note">Generated by <code>membench report</code> from the files in this directory. Measured and '
            "reported numbers sit in separate columns; reported ones are cited from their source and were not "
            "measured here. Click a column header to sort; hover a point or a cell for details.</p>",
            "<nav>" + "".join(f'<a href="#{svg.attr(safe_name(ds))}">{escape(ds)}</a>' for ds in datasets)
            + ('<a href="#transfer">transfer matrix</a>' if items else "") + '<a href="#files">files</a></nav></header>']
    links = {k: f"{SITE_DIR}/{v}" for k, v in pages.items()}
    for ds in datasets:
        body += dataset_section(ds, *built[ds], every_run or {}, items, leaderboard, links, n_boot, seed)
    if items:
        body += ['<h2 id="transfer">Transfer matrix: ρ by training data (rows) and evaluation data (columns)</h2>',
                 *heat_map(transfer.matrix_rows(items, n_boot, seed)),
                 '<p class="note">Cells: Spearman\'s ρ, mean over splits (n = splits), with its 95% bootstrap interval; '
                 "colour: ρ on a diverging scale centred on 0. Rows from <code>membench run</code> (diagonal) and "
                 "<code>membench evaluate --from-run</code> (off-diagonal); each cell is the latest run.</p>"]
    body += files_section(out, list(files))
    atomic_write_text(out / INDEX, page("membench leaderboard", body, assets=f"{SITE_DIR}/"))
    return written + [out / INDEX]
