"""Fig. 3 of the paper: (a) rho and (b) MSE against the number of parameters.

Measured points (filled circles, error bars: sd over splits) and reported points (open
squares) are separate scatter series with their own legend entries, each point labelled
as its table row (a non-protocol configuration: "model [what differs]" and the same
footnote mark as in the table, ringed in red). Smoke and quick runs are named in the
title. The dashed line is the human consistency of each dataset involved that declares
one (0.68 on LaMem). Drawn on a bare matplotlib Figure (Agg canvas), so no pyplot state
or display is involved.
"""

from __future__ import annotations

from pathlib import Path

MEASURED_LABEL = "measured on {dataset} (mean over splits ± sd)"
OTHER_CONFIG_LABEL = "not the protocol configuration (see the table footnotes)"
REPORTED_LABEL = "reported by the authors ({datasets})"


def points(entries, dataset: str) -> dict[str, list[tuple[str, float, float]]]:
    """(model, params in millions, value) per series: measured_rho, measured_mse,
    reported_rho, reported_mse. A point needs both coordinates."""
    out = {"measured_rho": [], "measured_mse": [], "reported_rho": [], "reported_mse": []}
    for e in entries:
        if e.run is not None and e.params_total:
            for metric in ("rho", "mse"):
                mean, _ = e.stat(metric)
                if mean is not None:
                    out[f"measured_{metric}"].append((e.label + getattr(e, "config_mark", ""),
                                                      e.params_total / 1e6, mean))
        rep = e.reported
        if rep is not None and rep.params:
            for metric in ("rho", "mse"):
                value = getattr(rep, metric)
                if value is not None:
                    out[f"reported_{metric}"].append((e.label, rep.params / 1e6, value))
    return out


def figure3(entries, dataset: str, human: dict[str, float] | None = None):
    """Return the Figure; axes[0] is (a) rho, axes[1] is (b) MSE."""
    from matplotlib.figure import Figure

    pts = points(entries, dataset)
    sds = {(e.label + getattr(e, "config_mark", ""), m): e.stat(m)[1]
           for e in entries if e.run is not None for m in ("rho", "mse")}
    marked = {e.label + e.config_mark for e in entries if getattr(e, "config_mark", "")}
    reported_on = ", ".join(sorted({e.reported.dataset for e in entries
                                    if e.reported and e.reported.params and e.reported.rho is not None}))
    fig = Figure(figsize=(11, 5.6), layout="constrained")
    ax_rho, ax_mse = fig.subplots(1, 2)
    for ax, metric, name in ((ax_rho, "rho", "Spearman's ρ"), (ax_mse, "mse", "MSE")):
        measured, reported = pts[f"measured_{metric}"], pts[f"reported_{metric}"]
        _series(ax, measured, dict(marker="o", color="C0", label=MEASURED_LABEL.format(dataset=dataset)))
        _series(ax, reported, dict(marker="s", facecolors="none", edgecolors="C1",
                                   label=REPORTED_LABEL.format(datasets=reported_on)))
        _series(ax, [p for p in measured if p[0] in marked],
                dict(marker="o", s=140, facecolors="none", edgecolors="C3", label=OTHER_CONFIG_LABEL))
        bars = [(x, y, sds.get((m, metric))) for m, x, y in measured if sds.get((m, metric)) is not None]
        if bars:
            xs, ys, err = zip(*bars)
            ax.errorbar(xs, ys, yerr=err, fmt="none", ecolor="C0", alpha=0.6, capsize=2)
        for model, x, y, offset, align in label_offsets(measured + reported):
            ax.annotate(model, (x, y), xytext=offset, textcoords="offset points", fontsize=7, ha=align)
        ax.set_xlabel("parameters (millions)")
        ax.set_ylabel(name)
        ax.grid(alpha=0.3)
        ax.margins(x=0.1, y=0.08)  # room for the point labels
    for ds, value in sorted((human or {}).items()):
        ax_rho.axhline(value, linestyle="--", color="grey", linewidth=1,
                       label=f"human consistency ({ds}): {value:.2f}")
    ax_rho.set_title(f"(a) ρ vs parameters ({dataset})")
    ax_mse.set_title(f"(b) MSE vs parameters ({dataset})")
    from membench.results.grouping import title_suffix

    suffix = title_suffix(entries)
    if suffix:
        fig.suptitle(f"Fig. 3 ({dataset}){suffix}", fontsize=10)
    for ax in (ax_rho, ax_mse):
        if ax.get_legend_handles_labels()[0]:  # below the axes: inside, it hides points and their labels
            ax.legend(fontsize=7, loc="upper center", bbox_to_anchor=(0.5, -0.14), frameon=False)
    return fig


def label_offsets(pts) -> list[tuple[str, float, float, tuple[int, int], str]]:
    """Each point's label offset (in points) and horizontal alignment: right of the point
    in the left half of the plot, left of it in the right half (labels stay inside the
    axes), and stacked downwards when points (nearly) coincide, e.g. two configurations of
    one model with the same ρ, whose labels would otherwise print over each other."""
    if not pts:
        return []
    xs, ys = [x for _, x, _ in pts], [y for _, _, y in pts]
    x_lo, x_hi, y_lo, y_hi = min(xs), max(xs), min(ys), max(ys)
    x_span, y_span = (x_hi - x_lo) or 1.0, (y_hi - y_lo) or 1.0
    stacked: dict[tuple[int, int], int] = {}
    out = []
    for label, x, y in pts:
        cell = (round((x - x_lo) / x_span * 40), round((y - y_lo) / y_span * 20))
        n = stacked.get(cell, 0)
        stacked[cell] = n + 1
        right_half = x_hi > x_lo and x > (x_lo + x_hi) / 2
        out.append((label, x, y, (-4 if right_half else 4, 3 - 9 * n), "right" if right_half else "left"))
    return out


def _series(ax, pts, style):
    if pts:
        ax.scatter([x for _, x, _ in pts], [y for _, _, y in pts], zorder=3, **style)


def save(fig, stem: Path) -> list[Path]:
    """PNG and SVG, byte-reproducible (no dates, fixed SVG ids)."""
    import io

    import matplotlib

    from membench.util.files import atomic_write_bytes

    paths = []
    with matplotlib.rc_context({"svg.hashsalt": "membench"}):
        for suffix, options in ((".png", dict(dpi=150, metadata={"Software": None})),
                                (".svg", dict(metadata={"Date": None}))):
            buf = io.BytesIO()
            fig.savefig(buf, format=suffix[1:], **options)
            paths.append(Path(stem).with_suffix(suffix))
            atomic_write_bytes(paths[-1], buf.getvalue())
    return paths
