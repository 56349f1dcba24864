"""The run pages of the HTML site (membench.report.site): OUT/site/<run id>.html, one per run.

Each page shows the run's splits (rho, MSE, epochs, the best epoch), its predictions against
the human scores of the test images (one colour per split, rho as recorded in results.csv),
and its training curves read from the run record: the per-epoch history (training loss,
validation rho and MSE, learning rate) of every stage of every split, kept in the run JSON
(`split_stages`, membench.results.leaderboard.with_split_stages). A run recorded before
membench kept every split's history has the stages of one split only (`stages`): the page
says which split that is when its best validation rho and epoch count identify it.
"""

from __future__ import annotations

import math
from html import escape
from pathlib import Path

from membench.report import svg
from membench.report.pages import SITE_DIR, page, table
from membench.util.files import atomic_write_text, safe_name

CURVES = (("train_loss", "training loss"), ("val_rho", "validation ρ"), ("val_mse", "validation MSE"),
          ("lr", "learning rate"))


def histories(view) -> tuple[dict[str, dict], str]:
    """{split label: stage outcomes} from the run JSON, and a note on where they come from."""
    record = view.provenance
    if record is None:
        return {}, "No run JSON: no training curves."
    per_split = record.get("split_stages")
    if isinstance(per_split, dict) and per_split:
        return {f"split {k}": v for k, v in sorted(per_split.items(), key=lambda kv: int(kv[0]))}, ""
    stages = record.get("stages") or {}
    trained = [o for o in stages.values() if isinstance(o, dict) and o.get("history")]
    if not trained:
        return {}, ""
    last = trained[-1]
    found = [r["split"] for r in view.run.rows if r.get("best_val_rho") not in (None, "")
             and math.isclose(float(r["best_val_rho"]), float(last["best_val_rho"]), abs_tol=1e-12)
             and str(r.get("epochs_run")) == str(last["epochs_run"])]
    label = f"split {found[0]}" if len(found) == 1 else "one split (which one was not recorded)"
    return {label: stages}, (f"This run was recorded before membench kept every split's history: its run JSON holds "
                             f"the stages of {label} only" + (" (identified by its best validation ρ and epoch "
                                                              "count in results.csv)." if len(found) == 1 else "."))


def stage_offsets(per_split: dict[str, dict]) -> dict[str, tuple[int, int]]:
    """(first epoch - 1, epochs) of each trained stage on the shared epoch axis: the stages one
    after another, each as long as its longest split."""
    lengths: dict[str, int] = {}
    for stages in per_split.values():
        for name, o in stages.items():
            if isinstance(o, dict) and o.get("history"):
                lengths[name] = max(lengths.get(name, 0), len(o["history"]))
    offsets, start = {}, 0
    for name, n in lengths.items():
        offsets[name] = (start, n)
        start += n
    return offsets


def curve_chart(key: str, name: str, per_split: dict[str, dict], offsets: dict[str, int]) -> str:
    values = [h.get(key) for stages in per_split.values() for name_, o in stages.items() if name_ in offsets
              for h in o["history"] if h.get(key) is not None]
    values = [v for v in values if math.isfinite(v)]
    total = max(start + n for start, n in offsets.values())
    ylog = key == "train_loss" and svg.use_log(values)
    # small learning rates read as "5" on an axis in units of 1e-4, not "0.00050"
    exponent = math.floor(math.log10(max(map(abs, values)))) if values and 0 < max(map(abs, values)) < 0.01 else 0
    unit = f" (× 1e{exponent})" if exponent else ""
    panel = svg.Panel(64, 28, 370, 200, (0.5, total + 0.5), svg.limits([v / 10 ** exponent for v in values], ylog),
                      ylog=ylog, xint=True, yunit=10.0 ** exponent)
    body = panel.frame("epoch (stages one after another)", name + unit + (" (log)" if ylog else ""), name + unit)
    for stage, (start, _) in offsets.items():
        if start:
            x = svg.px(panel.x(start + 0.5))
            body.append(f'<line class="stage-boundary" x1="{x}" y1="{svg.px(panel.top)}" x2="{x}" '
                        f'y2="{svg.px(panel.top + panel.height)}"/>')
        body.append(f'<text class="tick" x="{svg.px(panel.x(start + 1))}" y="{svg.px(panel.top + 12)}">'
                    f'{escape(stage)}</text>')
    for i, (label, stages) in enumerate(per_split.items()):
        colour = svg.tab10(i)
        for stage, o in stages.items():
            if stage not in offsets:
                continue
            pts = [(panel.x(offsets[stage][0] + h["epoch"]), _y(panel, h.get(key))) for h in o["history"]]
            tip = (f"{label} · {stage}: {o.get('epochs_run')} epochs, best epoch {o.get('best_epoch')} (validation ρ "
                   f"{_num(o.get('best_val_rho'))})" + ("; stopped early" if o.get("stopped_early") else ""))
            body += svg.polyline(pts, "curve", tip, f"stroke:{colour}")
            body.append(_dots(pts, colour))
            best = next((h for h in o["history"] if h["epoch"] == o.get("best_epoch")), None)
            if key == "val_rho" and best is not None and math.isfinite(_y(panel, best.get(key))):
                body.append(f'<circle cx="{svg.px(panel.x(offsets[stage][0] + best["epoch"]))}" '
                            f'cy="{svg.px(_y(panel, best[key]))}" r="5" fill="none" stroke="{colour}" stroke-width="2" '
                            f'data-tip="{svg.attr(tip)}" tabindex="0"/>')
    return svg.svg(450, 270, body, f"{name} per epoch", f"curve-{key}")


def _y(panel: svg.Panel, value) -> float:
    if value is None or not math.isfinite(value) or (panel.ylog and value <= 0):
        return math.nan
    return panel.y(value)


def _num(value) -> str:
    return "—" if value is None or not math.isfinite(float(value)) else f"{float(value):.3f}"


def _dots(points, colour: str, tip: str = "") -> str:
    """Points as one path of zero-length segments with round caps (small files), at most one
    per half pixel."""
    seen = dict.fromkeys((round(x * 2) / 2, round(y * 2) / 2) for x, y in points if math.isfinite(x) and math.isfinite(y))
    d = "".join(f"M{svg.px(x)} {svg.px(y)}h0" for x, y in seen)
    extra = f' data-tip="{svg.attr(tip)}" tabindex="0"' if tip else ""
    return f'<path class="dots" stroke="{colour}" d="{d}"{extra}/>' if d else ""


def scatter(view, data: dict[int, tuple]) -> list[str]:
    """Predicted against human scores, one colour per split; rho is results.csv's."""
    truth = [float(v) for _, t, _ in data.values() for v in t]
    pred = [float(v) for _, _, p in data.values() for v in p]
    panel = svg.Panel(64, 28, 420, 360, svg.limits(truth), svg.limits(pred))
    body = panel.frame("human score (test images)", "predicted score", "predicted vs human scores")
    lo, hi = max(panel.xlim[0], panel.ylim[0]), min(panel.xlim[1], panel.ylim[1])
    if lo < hi:
        body.append(f'<line class="identity" x1="{svg.px(panel.x(lo))}" y1="{svg.px(panel.y(lo))}" '
                    f'x2="{svg.px(panel.x(hi))}" y2="{svg.px(panel.y(hi))}"/>')
    rows = {int(r["split"]): r for r in view.run.rows}
    legend = []
    for i, (k, (_names, t, p)) in enumerate(sorted(data.items())):
        colour, row = svg.tab10(i), rows[k]
        text = f"split {k}: ρ = {float(row['rho']):.3f}, MSE = {float(row['mse']):.4f}, n = {len(t)}"
        body.append(_dots([(panel.x(a), panel.y(b)) for a, b in zip(t, p)], colour, text))
        legend.append(f'<li><span class="swatch" style="background:{colour}"></span>{escape(text)}</li>')
    legend.append('<li><span class="swatch" style="border-top:2px dashed #999;height:0"></span>predicted = human</li>')
    return [svg.svg(500, 430, body, "predicted vs human scores", "scatter"), '<ul class="legend">', *legend, "</ul>"]


def split_table(view) -> str:
    rows = []
    for r in view.run.rows:
        k = int(r["split"])
        link = f'<a href="../predictions/{svg.attr(view.run.run_id)}/split{k}.csv">split{k}.csv</a>' \
            if view.run.predictions(k).is_file() else "—"
        cells = [(str(k), k), (r.get("n_test", ""), _float(r.get("n_test"))), (f"{float(r['rho']):.3f}", float(r["rho"])),
                 (f"{float(r['mse']):.4f}", float(r["mse"])), (r.get("epochs_run") or "—", _float(r.get("epochs_run"))),
                 (r.get("best_epoch") or "—", _float(r.get("best_epoch"))),
                 (_num(_float(r.get("best_val_rho"))), _float(r.get("best_val_rho"))),
                 (f"{float(r.get('seconds') or 0) / 60:.1f} min", _float(r.get("seconds")))]
        rows.append([(escape(str(c)), v, True) for c, v in cells] + [(link, f"split{k}.csv", False)])
    header = ("Split", "Test images", "ρ", "MSE", "Epochs", "Best epoch", "Best val. ρ", "Wall time", "Predictions")
    return table(header, rows, "splits")


def _float(value) -> float | None:
    try:
        return float(value)
    except (TypeError, ValueError):
        return None


def run_page(view, pages: dict[str, str], out: Path) -> str:
    from membench.results.configuration import from_row

    run, first = view.run, view.run.rows[0]
    title = f"{run.model}{view.config_mark} on {run.dataset}"
    record = view.provenance or {}
    label, config_id, derived = from_row(first, view.provenance)
    json_link = (f' · <a href="../runs/{svg.attr(run.run_id)}.json">run JSON</a>'
                 if (out / "runs" / f"{run.run_id}.json").is_file() else "")
    body = [f'<nav><a href="../index.html">← leaderboard</a>{json_link}</nav>', f"<h1>{escape(title)}</h1>",
            f'<p class="note">Run {escape(run.run_id)}: trained on {escape(view.trained_on or "released weights")}, '
            f"train mode {escape(first.get('train_mode') or '—')}, preset {escape(run.preset)}"
            f"{(': ' + escape(record.get('preset', {}).get('meaning', ''))) if isinstance(record.get('preset'), dict) else ''}"
            f"; configuration {escape(label or 'protocol')} ({escape(config_id)}{', derived' if derived else ''}); "
            f"seed {escape(first.get('seed') or '0')}; {escape(first.get('hardware') or '')}; commit "
            f"{escape((first.get('git_commit') or '—')[:12])}.</p>", "<h2>Splits</h2>", split_table(view)]
    data = {k: run.read_predictions(k) for k in run.splits if run.predictions(k).is_file()}  # checked: n_test, sha256
    body.append("<h2>Predictions against human scores</h2>")
    body += scatter(view, data) if data else ['<p class="note">No stored predictions.</p>']
    body += curves_section(view, pages)
    return page(f"{title} — membench", body)


def curves_section(view, pages: dict[str, str]) -> list[str]:
    per_split, note = histories(view)
    out = ["<h2>Training curves</h2>"]
    offsets = stage_offsets(per_split)
    chained = {o["run_id"]: name for stages in per_split.values() for name, o in stages.items()
               if isinstance(o, dict) and o.get("run_id")}
    if note:
        out.append(f'<p class="note">{escape(note)}</p>')
    if not offsets:
        if view.provenance is not None:
            out.append('<p class="note">No epoch trained in this run (evaluated without training).</p>')
    else:
        out.append('<div class="curves">' + "".join(curve_chart(k, n, per_split, offsets) for k, n in CURVES) + "</div>")
        out.append('<ul class="legend">' + "".join(f'<li><span class="swatch" style="background:{svg.tab10(i)}"></span>'
                                                   f"{escape(label)}</li>" for i, label in enumerate(per_split)) + "</ul>")
    for run_id, stage in sorted(chained.items()):
        href = pages.get(run_id)
        target = f'<a href="{svg.attr(href)}">{escape(run_id)}</a>' if href else escape(run_id)
        out.append(f'<p class="note">{escape(stage)}: trained by the chained run {target}.</p>')
    return out


def write(out: Path, runs, items, n_boot: int, seed: int) -> tuple[list[Path], dict[str, str]]:
    """One page per run; returns the paths and {run id: file name in OUT/site/}."""
    pages = {run.run_id: f"{safe_name(run.run_id)}.html" for run in runs}
    views = {v.run.run_id: v for v in items}
    written = []
    for run in runs:
        path = Path(out) / SITE_DIR / pages[run.run_id]
        atomic_write_text(path, run_page(views[run.run_id], pages, Path(out)))
        written.append(path)
    return written, pages
