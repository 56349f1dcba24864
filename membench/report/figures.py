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
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    pts = points(entries, dataset)
    sds = {(e.label + getattr(e, "config_mark", ""), m): e.stat(m)[1]
           for e in entries if e.run is not None for m in ("rho", "mse")}
    marked = {e.label + e.config_mark for e in entries if getattr(e, "config_mark", "")}
    reported_on = ", ".join(sorted({e.reported.dataset for e in entries
                                    if e.reported and e.reported.params and e.reported.rho is not None}))
    fig = Figure(figsize=(11, 5.6), layout="constrained")
    FigureCanvasAgg(fig)  # its renderer measures the point labels
    ax_rho, ax_mse = fig.subplots(1, 2)
    labelled = []
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
        labelled.append((ax, measured + reported))
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
    fig.draw_without_rendering()  # the final layout: labels are placed on it
    for ax, pts in labelled:
        label_points(ax, pts)
    return fig


LABEL_FONT = 7  # pt
MARKER = 7  # pt, half the side of the box kept free around a point (its ring has a 6 pt radius)


def label_points(ax, pts) -> None:
    """Label each point as the site's Fig. 3 does (membench.report.svg.Labels): beside it,
    inside the axes, moved a line at a time until it covers no other label and no marker.
    Placed in points on the drawn layout, with the renderer's own text sizes."""
    from matplotlib.font_manager import FontProperties

    from membench.report import svg

    fig = ax.figure
    renderer, scale = fig.canvas.get_renderer(), fig.dpi / 72  # display pixels per point
    font = FontProperties(size=LABEL_FONT)

    def size(text: str) -> tuple[float, float]:
        width, height, _ = renderer.get_text_width_height_descent(text, font, ismath=False)
        return width / scale, height / scale + 1

    box, top = ax.get_window_extent(renderer), fig.bbox.height / scale
    panel = svg.Panel(left=box.x0 / scale, top=top - box.y1 / scale, width=box.width / scale,
                      height=box.height / scale, xlim=ax.get_xlim(), ylim=ax.get_ylim())
    labels = svg.Labels(panel, size)
    at = [(label, *(ax.transData.transform((x, y)) / scale)) for label, x, y in pts]
    for _, x, y in at:
        labels.reserve(x - MARKER, top - y - MARKER, x + MARKER, top - y + MARKER)
    to_data = ax.transData.inverted()
    for label, x, y in at:
        x0, _, _, y1 = labels.beside(label, x, top - y, gap=MARKER + 2)
        ax.text(*to_data.transform((x0 * scale, (top - y1) * scale)), label, fontsize=LABEL_FONT,
                ha="left", va="bottom")


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
