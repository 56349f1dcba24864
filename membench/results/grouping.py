"""Which runs a table row stands for, and how the row is labelled.

Rules (docs/user-guide.md, "Configurations"):
  - a row is one (model, dataset, configuration); the runs of one configuration that
    differ only by seed are replicates and the row averages their splits; per seed only
    the latest run counts, and the runs it replaced are listed under the table;
  - a row carries the model's plain name only when its configuration is the protocol
    (paper preset, default options and settings, exact computation, no checkpoint
    override); any other configuration is its own row "model [what differs]" with a
    footnote saying what that means;
  - rows recorded before membench recorded configurations get theirs derived from the
    row (preset, initialisation, train mode, device, notes) and the run JSON, and the
    table says so.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from membench.results.configuration import MEANINGS, PROTOCOL_ID, from_row

SUPERSCRIPTS = "¹²³⁴⁵⁶⁷⁸⁹"


@dataclass
class RunGroup:
    """The runs of one model on one dataset in one configuration (replicates by seed).
    Offers what a single run offers to the tables: rows (pooled), values, preset, run_id."""

    model: str
    dataset: str
    preset: str
    configuration: str  # readable, "" for the protocol
    config_id: str
    derived: bool = False  # configuration derived from an older record
    runs: list = field(default_factory=list)  # latest run per seed, by seed
    superseded: list = field(default_factory=list)  # older runs of the same configuration and seed

    @property
    def is_protocol(self) -> bool:
        return self.config_id == PROTOCOL_ID

    @property
    def rows(self) -> list[dict]:
        return [r for run in self.runs for r in run.rows]

    def values(self, column: str) -> list[float]:
        return [v for run in self.runs for v in run.values(column)]

    @property
    def splits(self) -> list[int]:
        return sorted({k for run in self.runs for k in run.splits})

    @property
    def seeds(self) -> list[str]:
        return [seed_of(run) for run in self.runs]

    @property
    def run_id(self) -> str:
        return " ".join(run.run_id for run in self.runs)

    @property
    def timestamp(self) -> str:
        return max(run.timestamp for run in self.runs)

    @property
    def label(self) -> str:
        return self.model if self.is_protocol else f"{self.model} [{self.configuration}]"


def seed_of(run) -> str:
    return str(run.rows[0].get("seed") or "0") if run.rows else "0"


def configuration_of(run, declared_options=()) -> tuple[str, str, bool]:
    """(label, id, derived) of a run, from its first row (every row of a run shares its
    configuration: it is part of the run id)."""
    row = run.rows[0] if run.rows else {}
    if row.get("config_id"):
        return from_row(row)
    from membench.results.leaderboard import read_run_json

    provenance = read_run_json(run.directory, run.run_id)  # checked: a damaged one is an error
    return from_row(row, provenance, declared_options)


def group_runs(runs, specs: dict | None = None) -> dict[tuple[str, str, str], RunGroup]:
    """{(model, dataset, config_id): RunGroup}; per seed the latest run (newest timestamp,
    then largest run id), the others kept as superseded."""
    specs = specs or {}
    groups: dict[tuple[str, str, str], RunGroup] = {}
    for run in runs:
        spec = specs.get(run.model)
        label, config_id, derived = configuration_of(run, spec.options if spec is not None else ())
        key = (run.model, run.dataset, config_id)
        group = groups.setdefault(key, RunGroup(run.model, run.dataset, run.preset, label, config_id))
        group.derived = group.derived or derived
        group.runs.append(run)
    for group in groups.values():
        latest: dict[str, object] = {}
        for run in sorted(group.runs, key=lambda r: (r.timestamp, r.run_id)):
            seed = seed_of(run)
            if seed in latest:
                group.superseded.append(latest[seed])
            latest[seed] = run
        group.runs = [latest[s] for s in sorted(latest, key=lambda s: (len(s), s))]
    return groups


def order_groups(groups: list[RunGroup]) -> list[RunGroup]:
    """The protocol row first, then the other configurations by label."""
    return sorted(groups, key=lambda g: (not g.is_protocol, g.preset != "paper", g.configuration))


def superscript(n: int) -> str:
    return SUPERSCRIPTS[n - 1] if n <= len(SUPERSCRIPTS) else f"^{n}"


def mark_number(mark: str) -> int:
    """1 for ¹, 2 for ², ... (the inverse of `superscript`): footnotes are listed in mark order."""
    return SUPERSCRIPTS.index(mark) + 1 if mark in SUPERSCRIPTS else int(mark.lstrip("^"))


def assign_config_marks(entries, marks: dict[str, str] | None = None) -> None:
    """One footnote mark per non-protocol configuration (¹, ², ...), on every row that has it;
    `marks` carries the numbering from one table of a dataset to the next."""
    marks = {} if marks is None else marks
    for entry in entries:
        group = entry.run
        if group is not None and not group.is_protocol:
            key = f"{group.config_id}:{group.configuration}"
            entry.config_mark = marks.setdefault(key, superscript(len(marks) + 1))


def config_footnotes(entries) -> list[str]:
    """What each non-protocol configuration is: "¹ [captioner=random] (configuration
    1a2b3c4d), not the protocol: captioner=random. Rows: ours." """
    seen: dict[str, tuple] = {}
    for entry in entries:
        if entry.config_mark:
            mark, group = entry.config_mark, entry.run
            models = seen.setdefault(mark, (group, []))[1]
            if group.model not in models:
                models.append(group.model)
    out = []
    for mark, (group, models) in sorted(seen.items(), key=lambda item: mark_number(item[0])):
        meanings = []
        for part in group.configuration.split("; "):
            key = part.partition("=")[0]
            text = MEANINGS.get(part) or MEANINGS.get(key)
            meanings.append(f"{part} ({text})" if text else part)
        derived = ", derived from an older record" if group.derived else ""
        out.append(f"{mark} [{group.configuration}] (configuration {group.config_id}{derived}): not the "
                   f"protocol of {', '.join(models)}: {'; '.join(meanings)}.")
    return out


def runs_note(entries) -> str:
    """Under each table: which runs (and seeds) every measured row averages, and which
    older runs of the same configuration and seed it replaced."""
    parts = []
    for entry in entries:
        group = entry.run
        if group is None:
            continue
        runs = ", ".join(f"{run.run_id} (seed {seed_of(run)})" for run in group.runs)
        old = f"; replaces {', '.join(r.run_id for r in group.superseded)}" if group.superseded else ""
        parts.append(f"{entry.label}{entry.config_mark}: {runs}{old}")
    if not parts:
        return ""
    return "Runs averaged per row (seeds are replicates of one configuration): " + "; ".join(parts) + "."


def derived_note(entries) -> str:
    derived = [e.run for e in entries if e.run is not None and e.run.derived]
    if not derived:
        return ""
    ids = ", ".join(r.run_id for r in derived)
    return ("Configurations of runs recorded before membench recorded them are derived from their "
            "preset, initialisation, train mode, device (those versions used bf16 autocast on CUDA), "
            "notes and run JSON; a setting none of these records is taken as its default: "
            f"{ids}.")


def title_suffix(entries) -> str:
    """" — smoke: plumbing only" when the table holds runs of a preset that is not the
    paper's (each such preset names itself; "includes" when paper runs are there too)."""
    from membench.engine.job import PRESETS

    presets = {e.run.preset for e in entries if e.run is not None}
    titled = {name for name, p in PRESETS.items() if p.title}
    marks = [PRESETS[p].title for p in PRESETS if p in presets and p in titled]
    if not marks:
        return ""
    prefix = "" if presets <= titled else "includes "
    return f" — {prefix}{'; '.join(marks)}"
