"""Cross-dataset views of a leaderboard: the transfer matrix and, per evaluation dataset,
a table of every run on it (with literature rows, the human ceiling and fine-tuned vs
zero-shot comparisons). `membench report` calls `write`.

Transfer matrix (transfer.md, transfer.csv): one row per (model, training dataset,
configuration: preset and what else differs from the protocol), one column per evaluation
dataset and part ("test": each split's test images, "all": every image), cells "ρ [95% CI]"
with ρ the mean over splits of the per-split Spearman and the interval that of the tables
(membench.report.tables). A run's training dataset is its `trained_on` column (see
membench.engine.crosseval.trained_on): the run's own dataset for a trained run, "released
weights" for a `--train none` run (zero-shot rows). Several runs in one cell: the latest
(timestamp, then run id) is shown. Under the rows, each evaluation dataset's human
consistency (its ceiling: the `human_consistency` column of transfer.csv) and which measure
its scores are (they differ: hit rate, corrected recognition), so models are compared
within a column.

Per-dataset table (runs_<dataset>.md/.csv, figure runs_<dataset>.png/.svg): every run
evaluated on that dataset's test splits, labelled by model, training data, train mode and
configuration (what differs from the protocol, as in the tables), with its notes; reported
rows from OUT/literature.csv (columns model, dataset, rho, mse, source, note; the numbers
of other papers, never measured here) with their note as a footnote; the human consistency; and, for every model with
both a zero-shot and a fine-tuned run on the dataset, the paired bootstrap of
`membench compare` on their common splits; and the comparisons listed in
OUT/comparisons.csv (columns a, b, dataset: two sides as `membench compare` takes them,
MODEL or MODEL[CONFIGURATION]), each the same paired bootstrap.
"""

from __future__ import annotations

import math
import statistics
from dataclasses import dataclass
from pathlib import Path

from membench.results.leaderboard import Run, csv_text, read_rows, read_run_json, undefined_rho

RELEASED = "released weights"
MARKS = ("†", "‡", "§", "¶")
LITERATURE_FILE = "literature.csv"
COMPARISONS_FILE = "comparisons.csv"
MATRIX_COLUMNS = ("model", "trained_on", "preset", "dataset", "eval_part", "run_id", "n_splits", "n_test",
                  "rho_mean", "rho_ci_low", "rho_ci_high", "human_consistency")
RUN_COLUMNS = ("kind", "label", "model", "trained_on", "train_mode", "preset", "run_id", "n_splits", "n_test",
               "rho_mean", "rho_sd", "rho_ci_low", "rho_ci_high", "mse_mean", "mse_sd", "seconds", "hardware",
               "git_commit", "notes", "source")
COMPARE_COLUMNS = ("model", "a_run_id", "b_run_id", "splits", "rho_a", "rho_b", "d_rho", "d_rho_ci_low",
                   "d_rho_ci_high", "mse_a", "mse_b", "verdict")


@dataclass
class RunView:
    """A run with what the cross-dataset views need to know about it."""

    run: Run
    trained_on: str  # "" for released weights
    eval_part: str  # "test" or "all"
    provenance: dict | None = None  # the run JSON, when readable

    @property
    def config_mark(self) -> str:
        """" [what differs from the protocol]" (the tables' configuration label), "" for the
        protocol; train=none and trained-on are left out: the row already says what it was
        trained on."""
        from membench.results.configuration import from_row

        label = from_row(self.run.rows[0], self.provenance)[0]
        parts = [p for p in label.split("; ") if p and p != "train=none" and not p.startswith("trained-on")]
        return f" [{'; '.join(parts)}]" if parts else ""

    @property
    def row_label(self) -> str:
        """The matrix row: model, preset and what else differs from the protocol (what the
        row and column already say left out), then the training data. A configuration
        is its own row, so an evaluation of a run never takes the run's own cell."""
        from membench.results.configuration import from_row

        label = from_row(self.run.rows[0], self.provenance)[0]
        parts = [self.run.preset] * (self.run.preset != "paper") + [
            p for p in label.split("; ") if p and p != "train=none"
            and not p.startswith(("preset=", "trained-on=", "eval-part=", "weights="))]
        mark = f" [{'; '.join(parts)}]" if parts else ""
        return f"{self.run.model}{mark} ← {self.trained_on or RELEASED}"

    @property
    def column(self) -> str:
        return self.run.dataset if self.eval_part == "test" else f"{self.run.dataset} (all images)"

    def values(self, column: str) -> list[float]:
        return self.run.values(column)  # an undefined rho (constant predictions) left out

    def mean_sd(self, column: str) -> tuple[float | None, float | None]:
        v = self.values(column)
        if not v:  # nan: undefined on every split (shown "undefined"); None: not measured
            return (math.nan if self.run.undefined(column) else None), None
        return statistics.fmean(v), statistics.stdev(v) if len(v) > 1 else None


def views(runs: list[Run]) -> list[RunView]:
    from membench.engine.crosseval import trained_on

    out = []
    for run in runs:
        provenance = read_run_json(run.directory, run.run_id)  # a damaged one is an error, never "test"
        part = (provenance or {}).get("eval_part") or "test"
        out.append(RunView(run, trained_on(run.rows[0]), part, provenance))
    return out


def _latest(items: list[RunView], key) -> dict:
    best: dict = {}
    for v in items:
        k = key(v)
        stamp = (max((r.get("timestamp") or "") for r in v.run.rows), v.run.run_id)
        if k not in best or stamp > best[k][0]:
            best[k] = (stamp, v)
    return {k: v for k, (_, v) in best.items()}


def _ci(view: RunView, n_boot: int, seed: int):
    from membench.report.compare import runs_rho_interval

    return runs_rho_interval(view.run, n_boot, seed)


def _fmt(value, digits=3) -> str:
    if value is None:
        return "—"
    return "undefined" if math.isnan(value) else f"{value:.{digits}f}"


def _fmt_ci(ci) -> str:
    return "" if ci is None else f" [{ci[0]:.3f}, {ci[1]:.3f}]"


# ------------------------------------------------------------------ transfer matrix

def matrix_rows(items: list[RunView], n_boot: int = 2000, seed: int = 0,
                ceilings: dict[str, float] | None = None) -> list[dict]:
    """One row per cell; `human_consistency` is the evaluation dataset's (None if unknown)."""
    ceilings = ceilings or {}
    cells = _latest(items, lambda v: (v.run.model, v.trained_on, v.run.preset, v.row_label, v.column))
    rows = []
    for (model, trained, preset, _label, _col), v in sorted(cells.items()):
        ci = _ci(v, n_boot, seed)
        n_test = sorted({int(r["n_test"]) for r in v.run.rows if r.get("n_test")})
        rows.append({"model": model, "trained_on": trained or RELEASED, "preset": preset, "dataset": v.run.dataset,
                     "eval_part": v.eval_part, "run_id": v.run.run_id, "n_splits": len(v.run.rows),
                     "n_test": "/".join(map(str, n_test)), "rho_mean": v.mean_sd("rho")[0],
                     "rho_ci_low": ci[0] if ci else None, "rho_ci_high": ci[1] if ci else None,
                     "human_consistency": ceilings.get(v.run.dataset),
                     "_row": v.row_label, "_column": v.column})
    return rows


def _measures_sentence(datasets: list[str]) -> str:
    """Which measure each column's scores are, from the plugins' declared score measures."""
    from membench import registry

    known = registry.datasets()
    said = "; ".join(f"{d}: {known[d].score_measure}" for d in datasets if d in known and known[d].score_measure)
    if not said:
        return ""
    if len(datasets) == 1:
        return f" Scores: {said}."
    return f" The columns' scores are different measures ({said}): compare models within a column."


def render_matrix(rows: list[dict], n_boot: int, seed: int) -> str:
    columns = sorted({r["_column"] for r in rows})
    labels = sorted({r["_row"] for r in rows})
    cell = {(r["_row"], r["_column"]): r for r in rows}
    ceiling = {r["_column"]: r["human_consistency"] for r in rows}
    lines = ["## Transfer matrix: ρ by training data (rows) and evaluation data (columns)", "",
             "| Model ← trained on | " + " | ".join(columns) + " |",
             "|---|" + "|".join("---" for _ in columns) + "|"]
    for label in labels:
        out = []
        for col in columns:
            r = cell.get((label, col))
            out.append("—" if r is None else f"{_fmt(r['rho_mean'])}{_fmt_ci((r['rho_ci_low'], r['rho_ci_high']) if r['rho_ci_low'] is not None else None)} (n={r['n_splits']})")
        lines.append(f"| {label} | " + " | ".join(out) + " |")
    lines.append("| *human consistency (ceiling)* | " + " | ".join(_fmt(ceiling[c]) for c in columns) + " |")
    lines += ["", "Cells: Spearman's ρ, mean over splits (n = splits), with its 95% bootstrap interval "
              + (f"({n_boot} resamples, seed {seed}, the method of the tables)" if n_boot > 0 else "(not computed)")
              + ". Columns: the evaluation dataset's test split of the same index as the checkpoint's split, "
              "or '(all images)': every image of it, scored by each split's checkpoint. "
              f"'{RELEASED}': weights membench did not train (`--train none`). Rows from `membench run` "
              "(diagonal) and `membench evaluate --from-run` (off-diagonal); each cell is the latest run of its "
              "row's configuration (an evaluation of a run on the run's own data is a row of its own, "
              "[evaluated-from=RUN]). Last row: each evaluation dataset's human consistency, the split-half ρ of "
              "its participants (published with its plugin, computed from its files, or given with "
              "--dataset-option human_consistency; '—' when unknown)."
              + _measures_sentence(sorted({r["dataset"] for r in rows})), ""]
    return "\n".join(lines)


# ------------------------------------------------------------------ one dataset's runs

def read_literature(directory: Path, dataset: str) -> list[dict]:
    path = Path(directory) / LITERATURE_FILE
    if not path.is_file():
        return []
    from membench.errors import MembenchError

    rows = []
    for line, r in enumerate(read_rows(path), start=2):
        if r.get("dataset") != dataset:
            continue
        try:
            rho = float(r["rho"]) if r.get("rho") else None
            mse = float(r["mse"]) if r.get("mse") else None
        except (TypeError, ValueError):
            raise MembenchError("rho and mse must be numbers or empty", path, line) from None
        rows.append({**r, "rho": rho, "mse": mse})
    return rows


def comparisons(items: list[RunView], dataset: str, n_boot: int, seed: int) -> list[dict]:
    """Fine-tuned (trained on `dataset`) minus zero-shot (released weights), per model."""
    from membench.report import compare

    mine = [v for v in items if v.run.dataset == dataset and v.eval_part == "test"]
    zero = _latest([v for v in mine if v.run.rows[0].get("train_mode") == "none"], lambda v: v.run.model)
    tuned = _latest([v for v in mine if v.run.rows[0].get("train_mode") == "full" and v.trained_on == dataset],
                    lambda v: v.run.model)
    out = []
    for model in sorted(set(zero) & set(tuned)):
        a, b = tuned[model].run, zero[model].run
        files = {k: (a.predictions(k), b.predictions(k)) for k in a.splits
                 if k in b.splits and a.predictions(k).is_file() and b.predictions(k).is_file()}
        if not files or n_boot <= 0:
            continue
        c = compare.compare_predictions(f"{model} fine-tuned", f"{model} zero-shot", dataset, files,
                                        n_boot=n_boot, seed=seed, rows={k: (a.row(k), b.row(k)) for k in files})
        out.append({**_compared(model, a, b, c), "_title": f"Fine-tuned vs zero-shot ({model}"})
    return out


def _compared(name: str, a, b, c) -> dict:
    return {"model": name, "a_run_id": a.run_id, "b_run_id": b.run_id,
            "splits": ",".join(map(str, c.splits)), "rho_a": c.rho_a, "rho_b": c.rho_b,
            "d_rho": c.rho_a - c.rho_b, "d_rho_ci_low": c.d_rho_ci[0] if c.d_rho_ci else None,
            "d_rho_ci_high": c.d_rho_ci[1] if c.d_rho_ci else None, "mse_a": c.mse_a, "mse_b": c.mse_b,
            "verdict": c.verdict(), "_render": c.render()}


def listed_comparisons(directory: Path, runs: list[Run], dataset: str, n_boot: int, seed: int) -> list[dict]:
    """The comparisons OUT/comparisons.csv asks for on `dataset`, as `membench compare A B`
    would compute them (same run choice, labels and bootstrap)."""
    path = Path(directory) / COMPARISONS_FILE
    if not path.is_file() or n_boot <= 0:
        return []
    from membench import registry
    from membench.errors import MembenchError
    from membench.report import compare

    out = []
    for line, r in enumerate(read_rows(path), start=2):
        if (r.get("dataset") or dataset) != dataset:
            continue
        try:
            groups = compare.pick_runs(runs, r["a"], r["b"], dataset, None, specs=registry.models())
            a, b = (compare.latest_of(g) for g in groups)
            files = {k: (a.predictions(k), b.predictions(k)) for k in a.splits if k in b.splits}
            labels = [g.model for g in groups] if groups[0].model != groups[1].model else [g.label for g in groups]
            c = compare.compare_predictions(*labels, dataset, files, n_boot=n_boot, seed=seed,
                                            rows={k: (a.row(k), b.row(k)) for k in files})
        except MembenchError as exc:
            raise MembenchError(exc.message, path, line) from None
        except KeyError:
            raise MembenchError("comparisons.csv needs the columns a and b", path, line) from None
        out.append({**_compared(f"{r['a']} vs {r['b']}", a, b, c), "_title": f"{r['a']} vs {r['b']} ({COMPARISONS_FILE}"})
    return out


def run_rows(items: list[RunView], dataset: str, literature: list[dict], n_boot: int, seed: int) -> list[dict]:
    rows = []
    for v in sorted((v for v in items if v.run.dataset == dataset and v.eval_part == "test"),
                    key=lambda v: (v.run.model, v.trained_on, v.run.rows[0].get("train_mode") or "", v.run.run_id)):
        first = v.run.rows[0]
        ci = _ci(v, n_boot, seed)
        rho, rho_sd = v.mean_sd("rho")
        mse, mse_sd = v.mean_sd("mse")
        mode = first.get("train_mode") or ""
        label = f"{v.run.model} ({'zero-shot, ' + RELEASED if mode == 'none' else 'trained on ' + (v.trained_on or '?')})"
        label += v.config_mark  # what differs from the protocol, as in the tables
        n_test = sorted({int(r["n_test"]) for r in v.run.rows if r.get("n_test")})
        rows.append({"kind": "measured", "label": label, "model": v.run.model, "trained_on": v.trained_on or RELEASED,
                     "train_mode": mode, "preset": v.run.preset, "run_id": v.run.run_id, "n_splits": len(v.run.rows),
                     "n_test": "/".join(map(str, n_test)), "rho_mean": rho, "rho_sd": rho_sd,
                     "rho_ci_low": ci[0] if ci else None, "rho_ci_high": ci[1] if ci else None,
                     "mse_mean": mse, "mse_sd": mse_sd, "seconds": sum(v.values("seconds")),
                     "hardware": first.get("hardware", ""), "git_commit": first.get("git_commit", ""),
                     "notes": _notes(v), "source": "measured by membench"})
    for r in literature:
        rows.append({"kind": "reported", "label": f"{r['model']} (reported)", "model": r["model"],
                     "trained_on": dataset, "rho_mean": r["rho"], "mse_mean": r["mse"],
                     "notes": r.get("note", ""), "source": r.get("source", "")})
    return rows


def _notes(v: RunView) -> str:
    """The run's notes; where rho is undefined on some splits, which (left out of the mean)."""
    notes = [p for p in (v.run.rows[0].get("notes") or "").split("; ") if p and not p.startswith("rho undefined (")]
    undefined = undefined_rho(v.run.rows)
    if undefined:
        why = ", ".join(sorted({w for _, _, w in undefined}))
        notes.append(f"ρ undefined on split(s) {', '.join(str(k) for _, k, _ in undefined)} ({why}), left out of "
                     "the ρ mean")
    return "; ".join(notes)


RUN_HEADER = ("Model", "ρ ↑ (mean ± sd)", "ρ 95% CI", "MSE ↓", "Splits × test images", "Wall time", "Notes")


def run_cells(rows: list[dict]) -> tuple[list[list[str]], list[str]]:
    """The every-run table's cell texts, row by row (a reported row's label carries its
    footnote mark), and the footnotes: for the Markdown and the site alike."""
    cells, footnotes = [], []
    for r in rows:
        if r["kind"] == "measured":
            rho = _fmt(r["rho_mean"]) + (f" ± {r['rho_sd']:.3f}" if r["rho_sd"] is not None else "")
            mse = _fmt(r["mse_mean"], 4) + (f" ± {r['mse_sd']:.4f}" if r["mse_sd"] is not None else "")
            ci = "—" if r["rho_ci_low"] is None else f"[{r['rho_ci_low']:.3f}, {r['rho_ci_high']:.3f}]"
            cells.append([r["label"], rho, ci, mse, f"{r['n_splits']} × {r['n_test']}",
                          f"{r['seconds'] / 60:.1f} min", r["notes"] or ""])
        else:
            mark = MARKS[len(footnotes) % len(MARKS)]
            footnotes.append(f"{mark} Reported, not measured here: {r['source']}. {r['notes']}".rstrip())
            cells.append([r["label"] + mark, _fmt(r["rho_mean"]), "—",
                          _fmt(r["mse_mean"], 4), "—", "—", f"reported by {r['source']}"])
    return cells, footnotes


def render_runs(dataset: str, rows: list[dict], human: float | None, compared: list[dict], n_boot: int,
                seed: int, figure: str | None) -> str:
    lines = [f"## Every run on {dataset}", "",
             "| " + " | ".join(RUN_HEADER) + " |", "|" + "|".join("---" for _ in RUN_HEADER) + "|"]
    texts, footnotes = run_cells(rows)
    for cells in texts:
        lines.append("| " + " | ".join(str(c).replace("|", "\\|") for c in cells) + " |")
    lines.append("")
    if human is not None:
        lines += [f"Human consistency (split-half Spearman of the participants' scores, computed by membench "
                  f"from the dataset): {human:.3f}.", ""]
    lines += [f"{f}\n" for f in footnotes]
    for c in compared:
        lines += [f"{c['_title']}, paired bootstrap of `membench compare`, "
                  f"{n_boot} resamples, seed {seed}, splits {c['splits']}):", "", "```", c["_render"].rstrip(), "```", ""]
    measured = [r for r in rows if r["kind"] == "measured"]
    if measured:
        lines += ["Protocol: ρ per split on that split's test images, mean ± sample sd over splits; 95% CI as in "
                  "the tables; wall time: the sum of the rows' `seconds` on "
                  + ", ".join(sorted({r['hardware'] for r in measured if r['hardware']}) or ["(not recorded)"])
                  + f"; commits {', '.join(sorted({r['git_commit'] for r in measured if r['git_commit']}))}. "
                  "Run ids and per-image predictions: results.csv, predictions/, runs/.", ""]
    if figure:
        lines += [f"![ρ of every run on {dataset}]({figure})", ""]
    return "\n".join(lines)


def runs_figure(dataset: str, rows: list[dict], human: float | None):
    from matplotlib.figure import Figure

    fig = Figure(figsize=(8, 0.5 * max(3, len(rows)) + 1.2), layout="constrained")
    ax = fig.subplots()
    labels = [r["label"] for r in rows]
    for i, r in enumerate(rows):
        if r["rho_mean"] is None or math.isnan(r["rho_mean"]):
            continue
        if r["kind"] == "measured":
            err = None
            if r["rho_ci_low"] is not None:
                err = [[r["rho_mean"] - r["rho_ci_low"]], [r["rho_ci_high"] - r["rho_mean"]]]
            ax.errorbar([r["rho_mean"]], [i], xerr=err, fmt="o", color="C0", capsize=3, label="measured (95% CI)")
        else:
            ax.scatter([r["rho_mean"]], [i], marker="s", facecolors="none", edgecolors="C1",
                       label="reported (other protocol)")
    if human is not None:
        ax.axvline(human, linestyle="--", color="grey", label=f"human consistency {human:.2f}")
    ax.set_yticks(range(len(labels)), labels, fontsize=7)
    ax.invert_yaxis()
    ax.set_xlabel("Spearman's ρ")
    ax.set_title(f"Every run on {dataset}")
    ax.grid(alpha=0.3, axis="x")
    handles, names = ax.get_legend_handles_labels()
    if handles:
        unique = dict(zip(names, handles))
        ax.legend(unique.values(), unique.keys(), fontsize=7, loc="lower left")
    return fig


# ------------------------------------------------------------------ entry point

def write(leaderboard: Path, out: Path, runs: list[Run], n_boot: int = 2000, seed: int = 0, figure: bool = True,
          human: dict[str, float] | None = None) -> tuple[list[Path], list[str], dict]:
    """Write transfer.{md,csv}, runs_<dataset>.{md,csv,png,svg} and compare_<dataset>.csv;
    returns (paths, Markdown sections for the leaderboard README, {dataset: (its every-run
    rows, its comparisons)} for the site)."""
    from membench.report.ceilings import human_ceilings
    from membench.util.files import atomic_write_text, safe_name

    items = views(runs)
    # Only a leaderboard with transfer in it (released weights, or a checkpoint scored on
    # another dataset), literature rows or listed comparisons gets these views; others keep their files.
    if not any(v.trained_on != v.run.dataset or v.eval_part != "test" for v in items) \
            and not any((Path(leaderboard) / f).is_file() for f in (LITERATURE_FILE, COMPARISONS_FILE)):
        return [], [], {}
    written, sections, tables = [], [], {}
    every = sorted({v.run.dataset for v in items})
    ceilings = human if human is not None else human_ceilings(every, leaderboard)
    matrix = matrix_rows(items, n_boot, seed, ceilings)
    md = render_matrix(matrix, n_boot, seed)
    atomic_write_text(out / "transfer.md", md)
    atomic_write_text(out / "transfer.csv", csv_text(matrix, MATRIX_COLUMNS))
    written += [out / "transfer.md", out / "transfer.csv"]
    sections.append(md)
    datasets = sorted({v.run.dataset for v in items if v.eval_part == "test"})
    for ds in datasets:
        rows = run_rows(items, ds, read_literature(leaderboard, ds), n_boot, seed)
        compared = comparisons(items, ds, n_boot, seed) + listed_comparisons(
            leaderboard, [r for r in runs if r.dataset == ds], ds, n_boot, seed)
        stem = out / f"runs_{safe_name(ds)}"
        fig_name = None
        if figure:
            from membench.report.figures import save

            written += save(runs_figure(ds, rows, ceilings.get(ds)), stem)
            fig_name = f"{stem.name}.png"
        text = render_runs(ds, rows, ceilings.get(ds), compared, n_boot, seed, fig_name)
        atomic_write_text(stem.with_suffix(".md"), text)
        atomic_write_text(stem.with_suffix(".csv"), csv_text(rows, RUN_COLUMNS))
        atomic_write_text(out / f"compare_{safe_name(ds)}.csv", csv_text(compared, COMPARE_COLUMNS))
        written += [stem.with_suffix(".md"), stem.with_suffix(".csv"), out / f"compare_{safe_name(ds)}.csv"]
        sections.append(text)
        tables[ds] = (rows, compared)
    return written, sections, tables
