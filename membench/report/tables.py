"""Tables 1 and 2 of the paper, regenerated from a leaderboard directory.

Measured numbers come from OUT/results.csv (one row per split) and the stored per-image
predictions; reported numbers come from each model's spec (`Reported`) and are always
shown in their own, clearly named columns. Rules:
  - one table set per dataset: measured numbers of different datasets never share a table;
  - a row is one (model, dataset, configuration) (membench.results.grouping): the model's plain
    name only for its protocol configuration, "model [what differs]" with a footnote for
    any other; seeds are replicates the row averages (the latest run per seed), listed
    under the table with the runs they replaced; smoke/quick runs are named in the title;
  - a missing measurement prints as "—", a number a paper did not report as "N/A";
  - rho and MSE: mean ± sample sd (ddof 1) over the row's splits; the rho 95% CI is the
    bootstrap of membench.report.compare (the union of the splits' test images resampled once
    per replicate for every split, seeds resampled too, per-split rho averaged over
    splits, percentile interval);
  - measured parameters come from the run rows, else from DIR/params.csv.
"""

from __future__ import annotations

import math
import re
import statistics
from dataclasses import dataclass, field, replace
from pathlib import Path

from membench.errors import MembenchError
from membench.report import compare
from membench.report.ceilings import human_ceilings
from membench.results import grouping
from membench.results.leaderboard import Run, csv_text, latest_runs, load_runs, read_rows, undefined_rho  # noqa: F401  (report.load_runs: commands, tests)
from membench.util.files import atomic_write_text, safe_name

# The paper's row order; other models follow alphabetically.
TABLE1_ORDER = ("resnet50-lamem", "resnet50-lamem-imagenet", "ours")
TABLE2_ORDER = ("amnet", "memnet", "squalli", "ours")
TABLE1_TAG = "table1"
TITLES = {
    "table1": "Table 1: ablation study of the proposed model",
    "table2": "Table 2: comparison with the state of the art",
}
SITE_LINE = ("Interactive version: [index.html](index.html) (sortable tables, Fig. 3 with the details of each "
             "point, the transfer matrix as a heat map, a page per run with its predictions and training curves; "
             "open it in a browser, it works offline).")
MISSING = "—"
NOT_REPORTED = "N/A"
FOOTNOTE_MARKS = ("*", "†", "‡", "§", "¶")

CSV_COLUMNS = (
    "table", "dataset", "model", "preset", "configuration", "config_id", "run_id", "seeds", "n_splits",
    "rho_mean", "rho_sd", "rho_ci_low", "rho_ci_high", "mse_mean", "mse_sd",
    "params_total", "params_used",
    "reported_rho", "reported_mse", "reported_params", "reported_dataset", "reported_source",
    "reported_note", "hardware", "device", "git_commit",
)
PARAMS_COLUMNS = ("model", "stage", "params_total", "params_used", "params_trainable")
REPORTED_COLUMNS = ("model", "rho", "mse", "params", "dataset", "source", "note")


@dataclass
class Entry:
    """One table row: a model, its latest run on the table's dataset (if any), its spec's
    reported numbers (if any) and its measured parameter counts (if known)."""

    model: str
    run: Run | None = None
    reported: object = None  # membench.spec.Reported or None
    label: str = ""
    params_total: int | None = None
    params_used: int | None = None
    rho_ci: tuple[float, float] | None = None
    marks: dict[str, str] = field(default_factory=dict)  # cell -> footnote mark
    config_mark: str = ""  # footnote mark of a non-protocol configuration (on the label)

    def __post_init__(self):
        self.label = self.label or self.model

    def stat(self, column: str) -> tuple[float | None, float | None]:
        """Mean and sample sd over splits (sd None for a single split); an undefined rho
        (constant predictions) is left out (_undefined)."""
        values = self.run.values(column) if self.run else []
        if not values:
            return None, None
        return statistics.fmean(values), statistics.stdev(values) if len(values) > 1 else None

    @property
    def n_splits(self) -> int | None:
        return len(set(self.run.splits)) if self.run else None

    @property
    def n_seeds(self) -> int:
        return len(getattr(self.run, "runs", [self.run])) if self.run else 0


def read_params(directory: Path) -> dict[str, tuple[int, int]]:
    """Measured (total, used) per model from DIR/params.csv, written by write_params_csv."""
    out = {}
    for row in read_rows(Path(directory) / "params.csv"):
        if row.get("params_total"):
            out[row["model"]] = (int(row["params_total"]), int(row["params_used"] or row["params_total"]))
    return out


def order_models(names, first: tuple[str, ...]) -> list[str]:
    names = set(names)
    return [n for n in first if n in names] + sorted(names - set(first))


def build_entries(table: str, dataset: str, runs, specs: dict,
                  params: dict[str, tuple[int, int]] | None = None, n_boot: int = 2000,
                  seed: int = 0, marks: dict | None = None) -> list[Entry]:
    """The rows of `table` ("table1" or "table2") for one dataset. `specs` maps model name
    to ModelSpec (the registry, or fixtures in tests); `runs` is grouping.group_runs(...)
    (runs, or a dict of runs, are grouped here). Table 2 has a row for every model with a
    run on the dataset or a published number that the table shows (reported_for), never
    an empty one. `marks` (one dict per dataset, shared by its tables) gives a footnote
    the same mark in every table of the dataset."""
    params = params or {}
    marks = {} if marks is None else marks
    runs = runs if isinstance(runs, dict) and all(isinstance(g, grouping.RunGroup) for g in runs.values()) \
        else grouping.group_runs(list(runs.values()) if isinstance(runs, dict) else list(runs), specs)
    mine = {key: group for key, group in runs.items() if key[1] == dataset}
    if table == "table1":
        names = order_models([n for n, s in specs.items() if TABLE1_TAG in s.tags], TABLE1_ORDER)
    else:
        published = {n for n, s in specs.items() if _has_number(reported_for(s.reported, dataset))}
        names = order_models(published | {m for m, _, _ in mine}, TABLE2_ORDER)
    entries = []
    for name in names:
        spec = specs.get(name)
        reported = reported_for(spec.reported if spec else None, dataset)
        model_runs = grouping.order_groups([group for (m, _, _), group in mine.items() if m == name])
        for run in model_runs or [None]:
            entry = Entry(model=name, run=run, reported=reported, label=run.label if run else name)
            _fill_params(entry, params.get(name))
            entry.rho_ci = compare.runs_rho_interval(run, n_boot, seed) if run else None
            entries.append(entry)
    _assign_marks(entries, marks.setdefault("notes", {}))
    grouping.assign_config_marks(entries, marks.setdefault("configurations", {}))
    return entries


def _has_number(reported) -> bool:
    return reported is not None and (reported.rho, reported.mse, reported.params) != (None, None, None)


def reported_for(reported, dataset: str):
    """What a table on `dataset` shows of a model's published numbers: everything when they
    were obtained on it; otherwise only the parameter count (a property of the model), so
    that a ρ or MSE published on another dataset never sits in a row measured on this one."""
    if reported is None or reported.covers(dataset):
        return reported
    return replace(reported, rho=None, mse=None, note="") if reported.params else None


def _fill_params(entry: Entry, fallback: tuple[int, int] | None) -> None:
    row = entry.run.rows[0] if entry.run else {}
    if row.get("params_total"):
        entry.params_total = int(row["params_total"])
        entry.params_used = int(row.get("params_used") or row["params_total"])
    elif fallback:
        entry.params_total, entry.params_used = fallback


def _assign_marks(entries: list[Entry], notes: dict[str, str] | None = None) -> None:
    """A reported note becomes a footnote: on the cell its first word names (rho, MSE,
    params: e.g. "MSE estimated by the authors"), else on the source cell. `notes` (note ->
    mark) carries the marks from one table of a dataset to the next."""
    notes = {} if notes is None else notes
    for entry in entries:
        note = entry.reported.note if entry.reported else ""
        if not note:
            continue
        mark = notes.setdefault(note, FOOTNOTE_MARKS[len(notes) % len(FOOTNOTE_MARKS)])
        first = re.match(r"\W*(\w+)", note.lower())
        word = first.group(1) if first else ""
        cell = {"rho": "rho", "ρ": "rho", "spearman": "rho", "mse": "mse",
                "params": "params", "parameters": "params"}.get(word, "source")
        entry.marks[cell] = mark


# ---------------------------------------------------------------- formatting


def fmt(value: float | None, digits: int) -> str:
    return MISSING if value is None else f"{value:.{digits}f}"


def fmt_pm(mean: float | None, sd: float | None, digits: int, pm: str = " ± ") -> str:
    if mean is None:
        return MISSING
    return f"{mean:.{digits}f}" if sd is None else f"{mean:.{digits}f}{pm}{sd:.{digits}f}"


def millions(n: int | None) -> str:
    """30_000_000 -> "30M", 23_510_081 -> "23.5M" (papers round to whole millions);
    small models keep their exact count (249 -> "249")."""
    if n is None:
        return MISSING
    if n < 100_000:
        return str(n)
    return f"{n // 1_000_000}M" if n % 1_000_000 == 0 else f"{n / 1e6:.1f}M"


def fmt_params(total: int | None, used: int | None) -> str:
    if total is None:
        return MISSING
    if used is None or used == total:
        return millions(total)
    return f"{millions(total)} ({millions(used)} used)"


def cells(entry: Entry, digits_rho: int = 3, digits_mse: int = 4, pm: str = " ± ") -> list[str]:
    """The ten display cells of a row (Markdown text; LaTeX escapes them afterwards)."""
    rho, rho_sd = entry.stat("rho")
    mse, mse_sd = entry.stat("mse")
    ci = entry.rho_ci
    rep = entry.reported

    def reported(value, text) -> str:
        if rep is None:
            return MISSING
        return NOT_REPORTED if value is None else text

    splits = MISSING if entry.run is None else str(entry.n_splits)
    if entry.n_seeds > 1:
        splits += f" × {entry.n_seeds} seeds"
    row = [
        entry.label + entry.config_mark,
        _rho_cell(entry, fmt_pm(rho, rho_sd, digits_rho, pm)),
        MISSING if ci is None else f"[{ci[0]:.{digits_rho}f}, {ci[1]:.{digits_rho}f}]",
        fmt_pm(mse, mse_sd, digits_mse, pm),
        splits,
        fmt_params(entry.params_total, entry.params_used),
        reported(rep and rep.rho, f"{rep.rho:.3f}" if rep and rep.rho is not None else ""),
        reported(rep and rep.mse, f"{rep.mse:.4f}" if rep and rep.mse is not None else ""),
        reported(rep and rep.params, millions(rep.params) if rep and rep.params else ""),
        (rep.source or MISSING) if rep else MISSING,
    ]
    for cell, mark in entry.marks.items():
        index = {"rho": 6, "mse": 7, "params": 8, "source": 9}[cell]
        row[index] += mark
    return row


def _undefined(entry: Entry) -> list[tuple[str, int, str]]:
    """(run id, split, why) of every split of the row whose rho is undefined."""
    return undefined_rho(entry.run.rows) if entry.run else []


def _rho_cell(entry: Entry, text: str) -> str:
    """"undefined" when no split has a rho; the splits it is over when some have none."""
    found = _undefined(entry)
    missing = len(found)
    if not missing:
        return text
    if missing == len(entry.run.rows):
        reasons = sorted({why for _, _, why in found})
        return "undefined" + (f" ({reasons[0]})" if len(reasons) == 1 else "")
    return f"{text} ({len(entry.run.rows) - missing} of {len(entry.run.rows)} splits)"


def undefined_note(entries: list[Entry]) -> str:
    parts = []
    for entry in entries:
        found = _undefined(entry)
        if found:
            several = entry.n_seeds > 1  # name the run when the row pools seeds
            splits = ", ".join(f"split {k}{f' of {rid}' if several else ''} ({why})" for rid, k, why in found)
            parts.append(f"{entry.label}{entry.config_mark}: {splits}")
    if not parts:
        return ""
    return ("ρ undefined (Spearman's ρ needs predictions and scores that vary): " + "; ".join(parts)
            + ". Those splits are left out of the row's ρ mean, sd and 95% CI; its MSE uses every split.")


HEADER = ("Model", "ρ ↑ measured", "ρ 95% CI measured", "MSE ↓ measured", "Splits",
          "Params measured", "ρ reported", "MSE reported", "Params reported", "Reported in")


def footnotes(entries: list[Entry]) -> list[str]:
    seen: dict[str, list[str]] = {}
    marks: dict[str, str] = {}
    for entry in entries:
        if entry.marks:
            seen.setdefault(entry.reported.note, []).append(entry.model)
            marks[entry.reported.note] = next(iter(entry.marks.values()))
    ordered = sorted(seen.items(), key=lambda item: FOOTNOTE_MARKS.index(marks[item[0]]))  # marks shared by tables
    return [f"{marks[note]} {note} ({', '.join(dict.fromkeys(models))})." for note, models in ordered] + \
        grouping.config_footnotes(entries)


def _distinct(entries: list[Entry], column: str) -> str:
    values = sorted({(r.get(column) or "").strip() for e in entries if e.run for r in e.run.rows} - {""})
    return ", ".join(values) or "not recorded"


def provenance(entries: list[Entry], dataset: str) -> str:
    measured = [e for e in entries if e.run]
    if not measured:
        return f"Measured: no run on {dataset} in this leaderboard."
    dates = sorted({(r.get("timestamp") or "")[:10] for e in measured for r in e.run.rows} - {""})
    commits = sorted({(r.get("git_commit") or "")[:12] for e in measured for r in e.run.rows} - {""})
    return (f"Measured on {dataset}: preset {_distinct(measured, 'preset')}; "
            f"train mode {_distinct(measured, 'train_mode')}; init {_distinct(measured, 'init')}; "
            f"pretrained {_distinct(measured, 'pretrained')}; hardware {_distinct(measured, 'hardware')}; "
            f"device {_distinct(measured, 'device')}; commit {', '.join(commits) or 'not recorded'}; "
            f"membench {_distinct(measured, 'membench_version')}; "
            f"dates {', '.join(dates) or 'not recorded'}.")


def protocol(entries: list[Entry], dataset: str, n_boot: int, seed: int) -> str:
    reported_on = sorted({e.reported.dataset for e in entries
                          if e.reported and (e.reported.rho, e.reported.mse) != (None, None)})
    if reported_on:
        reported = (f"Reported columns: the numbers published for each model (source in the last column), "
                    f"obtained on {', '.join(reported_on)} by their authors, not measured here.")
    else:
        reported = (f"Reported columns: parameter counts as published; ρ and MSE only where published on "
                    f"{dataset}, which none of these models has (N/A): what they published on other datasets "
                    "is in reported.csv, never next to a measurement on another dataset.")
    return ("Protocol: ρ is Spearman's rank correlation (average ranks for ties, as scipy; the paper's "
            "Eq. 2, 1 - 6 sum(d²) / (N(N² - 1)), is the same number without ties and differed by less than 1e-15 "
            "on LNSIM and the demo data, whose scores do not tie: docs/models.md) and MSE the mean "
            "squared error on the [0, 1] score scale, each computed per split on that split's test "
            "images; mean ± sample sd (ddof 1) over the splits of each row's runs (one configuration "
            f"of one model; several seeds are pooled). {_ci_protocol(n_boot, seed)} Params measured: total (used in forward where "
            f"it differs), counted by membench. {reported} {MISSING}: no measurement; {NOT_REPORTED}: not reported.")


def _ci_protocol(n_boot: int, seed: int) -> str:
    if n_boot <= 0:
        return "ρ 95% CI: not computed (--n-boot 0)."
    return (f"ρ 95% CI: percentile bootstrap over test images ({n_boot} resamples, seed {seed}): "
            "each resample draws, with replacement, from the union of all splits' test images and "
            "applies that one draw to every split (the splits' test sets overlap, so resampling them "
            "independently would understate the spread), per-split ρ averaged over splits; with "
            "several seeds the seeds are resampled too.")


def notes(entries: list[Entry], dataset: str, n_boot: int, seed: int) -> list[str]:
    extra = [n for n in (grouping.runs_note(entries), grouping.derived_note(entries), undefined_note(entries)) if n]
    return footnotes(entries) + [provenance(entries, dataset)] + extra + [protocol(entries, dataset, n_boot, seed)]


def title(table: str, dataset: str, entries=()) -> str:
    """The table's title; smoke and quick runs are named in it (smoke: plumbing only)."""
    return f"{TITLES[table]} ({dataset}){grouping.title_suffix(entries)}"


def render_markdown(table: str, dataset: str, entries: list[Entry], n_boot: int = 2000, seed: int = 0) -> str:
    lines = [f"### {title(table, dataset, entries)}", "",
             "| " + " | ".join(HEADER) + " |",
             "|" + "|".join("---" for _ in HEADER) + "|"]
    for entry in entries:
        lines.append("| " + " | ".join(c.replace("|", "\\|") for c in cells(entry)) + " |")
    lines.append("")
    for note in notes(entries, dataset, n_boot, seed):
        # a leading "*" would start a Markdown bullet list
        lines += [("\\" + note) if note.startswith("*") else note, ""]
    return "\n".join(lines)


_LATEX_SPECIAL = {"\\": r"\textbackslash{}", "&": r"\&", "%": r"\%", "$": r"\$", "#": r"\#",
                  "_": r"\_", "{": r"\{", "}": r"\}", "~": r"\textasciitilde{}", "^": r"\^{}",
                  "—": "---", "–": "--", "±": r"$\pm$", "ρ": r"$\rho$", "↑": r"$\uparrow$",
                  "↓": r"$\downarrow$", "Δ": r"$\Delta$", "†": r"\dag{}", "‡": r"\ddag{}",
                  "§": r"\S{}", "¶": r"\P{}", "*": r"$^{*}$"}
# configuration footnote marks (¹²³...) and "× 3 seeds"
_LATEX_SPECIAL.update({ch: f"$^{{{i}}}$" for i, ch in enumerate(grouping.SUPERSCRIPTS, start=1)}, **{"×": r"$\times$"})


def latex_escape(text: str) -> str:
    return "".join(_LATEX_SPECIAL.get(ch, ch) for ch in text)


def render_latex(table: str, dataset: str, entries: list[Entry], n_boot: int = 2000, seed: int = 0) -> str:
    """A booktabs table; measured and reported columns under separate group headings."""
    lines = [
        r"% generated by `membench report`; needs \usepackage{booktabs}",
        r"\begin{table}[t]",
        r"\centering",
        r"\caption{" + latex_escape(title(table, dataset, entries)) + "}",
        r"\begin{tabular}{l" + "c" * 8 + "l}",
        r"\toprule",
        rf" & \multicolumn{{5}}{{c}}{{Measured on {latex_escape(dataset)}}} & "
        r"\multicolumn{4}{c}{Reported by the authors} \\",
        r"\cmidrule(lr){2-6}\cmidrule(lr){7-10}",
        r"Model & $\rho\uparrow$ & $\rho$ 95\% CI & MSE$\downarrow$ & Splits & Params & "
        r"$\rho$ & MSE & Params & Source \\",
        r"\midrule",
    ]
    for entry in entries:
        lines.append(" & ".join(latex_escape(c) for c in cells(entry)) + r" \\")
    lines += [r"\bottomrule", r"\end{tabular}"]
    for note in notes(entries, dataset, n_boot, seed):
        lines.append(r"\par\smallskip\footnotesize " + latex_escape(note))
    lines += [r"\end{table}", ""]
    return "\n".join(lines)


def csv_rows(table: str, dataset: str, entries: list[Entry]) -> list[dict]:
    out = []
    for e in entries:
        rho, rho_sd = e.stat("rho")
        mse, mse_sd = e.stat("mse")
        if e.run and rho is None and _undefined(e):
            rho = math.nan  # undefined on every split: written as nan, as in results.csv
        rep = e.reported
        first = e.run.rows[0] if e.run else {}
        out.append({
            "table": table, "dataset": dataset, "model": e.model,
            "preset": e.run.preset if e.run else None,
            "configuration": e.run.configuration if e.run else None,
            "config_id": e.run.config_id if e.run else None,
            "run_id": e.run.run_id if e.run else None,
            "seeds": " ".join(e.run.seeds) if e.run else None,
            "n_splits": e.n_splits, "rho_mean": rho, "rho_sd": rho_sd,
            "rho_ci_low": e.rho_ci[0] if e.rho_ci else None, "rho_ci_high": e.rho_ci[1] if e.rho_ci else None,
            "mse_mean": mse, "mse_sd": mse_sd,
            "params_total": e.params_total, "params_used": e.params_used,
            "reported_rho": rep.rho if rep else None, "reported_mse": rep.mse if rep else None,
            "reported_params": rep.params if rep else None,
            "reported_dataset": rep.dataset if rep else None, "reported_source": rep.source if rep else None,
            "reported_note": rep.note if rep else None,
            "hardware": first.get("hardware"), "device": first.get("device"), "git_commit": first.get("git_commit"),
        })
    return out


def render_csv(table: str, dataset: str, entries: list[Entry]) -> str:
    return csv_text(csv_rows(table, dataset, entries), CSV_COLUMNS)


# ---------------------------------------------------------------- reference data


def reported_rows(specs: dict) -> list[dict]:
    """Reported numbers of every model whose spec has them, as cited by the spec."""
    return [{"model": name, "rho": s.reported.rho, "mse": s.reported.mse, "params": s.reported.params,
             "dataset": s.reported.dataset, "source": s.reported.source, "note": s.reported.note}
            for name, s in sorted(specs.items()) if s.reported]


def params_rows(specs: dict, count=None) -> list[dict]:
    """Measured parameter counts (meta device), one row per model and training stage."""
    if count is None:
        from membench.results.params import count
    out = []
    for name, spec in sorted(specs.items()):
        c = count(spec)
        stages = c.get("trainable") or {"": None}
        for stage, trainable in stages.items():
            out.append({"model": name, "stage": stage, "params_total": c["total"],
                        "params_used": c["used"], "params_trainable": trainable})
    return out


# ---------------------------------------------------------------- the whole report


def registry_specs(extra_models=()) -> dict:
    """Every registered model, plus family models (e.g. timm/...) that have runs."""
    from membench import registry

    specs = registry.models()
    for name in extra_models:
        if name not in specs:
            try:
                specs[name] = registry.get_model(name)
            except MembenchError:
                pass  # a model whose plugin is gone: measured columns only
    return specs


def make_report(leaderboard: Path, out: Path, specs: dict, dataset: str | None = None,
                preset: str | None = None, n_boot: int = 2000, seed: int = 0, figure: bool = True,
                human: dict[str, float] | None = None, site=None) -> list[Path]:
    """Write tables (md, tex, csv) and Fig. 3 (png, svg) per dataset, plus OUT/README.md
    and OUT/reported.csv. `site`: the writer of the HTML site (membench.report.site.write),
    called last with what the tables are built from. Returns the written paths."""
    leaderboard, out = Path(leaderboard), Path(out)
    runs = load_runs(leaderboard)
    if preset:
        presets = sorted({r.preset for r in runs})
        runs = [r for r in runs if r.preset == preset]
        if not runs and presets:
            raise MembenchError(f"no run with preset {preset!r} (presets: {', '.join(presets)})",
                                leaderboard / "results.csv")
    latest = grouping.group_runs(runs, specs)
    datasets = sorted({d for _, d, _ in latest})
    if dataset:
        if datasets and dataset not in datasets:
            raise MembenchError(f"no run on dataset {dataset!r} in results.csv (datasets: {', '.join(datasets)})",
                                leaderboard / "results.csv")
        datasets = [dataset]
    datasets = datasets or ["lamem"]  # no run yet: the reported numbers alone, on the paper's dataset
    params = read_params(leaderboard)
    written: list[Path] = []
    sections = ["# membench leaderboard", "",
                "Generated by `membench report` from the files in this directory; do not edit by hand. "
                "Measured and reported numbers sit in separate columns; reported ones are cited from "
                "the source in the 'Reported in' column and were not measured here. To add measurements: "
                "`membench run --model M --data DIR --out DIR`, then `membench report --leaderboard DIR`.", ""]
    built = {}  # per dataset: the tables' entries and human ceilings, which the site shows too
    for ds in datasets:
        paths, section, built[ds] = _dataset_section(ds, latest, specs, params, leaderboard, out, n_boot, seed,
                                                     figure, human)
        written += paths
        sections += section
    from membench.report import transfer  # transfer matrix and every run per dataset (cross-dataset rows)

    paths, extra, every_run = transfer.write(leaderboard, out, [r for r in runs if not dataset or r.dataset == dataset],
                                  n_boot, seed, figure)
    written += paths
    sections += extra
    atomic_write_text(out / "reported.csv", csv_text(reported_rows(specs), REPORTED_COLUMNS))
    written.append(out / "reported.csv")
    if site is not None:  # after every file it links to; the README points to it
        sections[4:4] = [SITE_LINE, ""]
        written += site(leaderboard, out, [r for r in runs if not dataset or r.dataset == dataset], built,
                        n_boot, seed, files=[p.name for p in written] + ["README.md"], every_run=every_run)
    atomic_write_text(out / "README.md", "\n".join(sections).rstrip("\n") + "\n")
    written.append(out / "README.md")
    return written


def _dataset_section(ds: str, latest, specs: dict, params, leaderboard: Path, out: Path, n_boot: int,
                     seed: int, figure: bool, human: dict[str, float] | None):
    """Tables 1-2 (md, tex, csv) and Fig. 3 of one dataset: the written paths, its README
    section, and (the tables' entries, the human ceilings) for the site."""
    written: list[Path] = []
    sections = [f"## {ds}", ""]
    marks: dict = {}  # one numbering of footnotes for both tables: Table 2 (every measured row) first
    entries_by_table = {table: build_entries(table, ds, latest, specs, params, n_boot, seed, marks)
                        for table in ("table2", "table1")}
    for table in ("table1", "table2"):
        entries = entries_by_table[table]
        stem = out / f"{table}_{safe_name(ds)}"
        md = render_markdown(table, ds, entries, n_boot, seed)
        for suffix, text in ((".md", md), (".tex", render_latex(table, ds, entries, n_boot, seed)),
                             (".csv", render_csv(table, ds, entries))):
            atomic_write_text(stem.with_suffix(suffix), text)
            written.append(stem.with_suffix(suffix))
        sections += [md]
    # datasets whose published ρ/MSE the table shows (a table on another dataset keeps
    # only their parameter counts, and gets no human-consistency line of theirs)
    reported_datasets = sorted({e.reported.dataset for e in entries_by_table["table2"]
                                if e.reported and (e.reported.rho, e.reported.mse) != (None, None)})
    ceilings = human if human is not None else human_ceilings(sorted({ds, *reported_datasets}), leaderboard)
    if figure:
        from membench.report import figures

        fig = figures.figure3(entries_by_table["table2"], ds, ceilings)
        stem = out / f"fig3_{safe_name(ds)}"
        written += figures.save(fig, stem)
        sections += ["### Fig. 3: ρ and MSE vs parameters", "",
                     f"![Fig. 3 ({ds}): (a) rho vs parameters, (b) MSE vs parameters]({stem.name}.png)", "",
                     f"Measured points: {ds}; reported points: as published "
                     f"({', '.join(reported_datasets) or 'none'}); dashed line: human consistency "
                     + (", ".join(f"{d} {v:.2f}" for d, v in sorted(ceilings.items())) or "unknown") + ".", ""]
    return written, sections, (entries_by_table, ceilings)


def write_params_csv(specs: dict, path: Path, count=None) -> Path:
    atomic_write_text(Path(path), csv_text(params_rows(specs, count), PARAMS_COLUMNS))
    return Path(path)
