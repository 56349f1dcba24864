"""The human-consistency line drawn under tables and figures: a dataset's ceiling."""

from __future__ import annotations

from pathlib import Path


def human_ceilings(datasets: list[str], leaderboard: Path | None = None) -> dict[str, float]:
    """Human consistency of each named dataset: declared by its plugin, or else computed
    from the data when it was run (e.g. LNSIM's split halves) and kept in the run JSON."""
    from membench import registry
    from membench.results.leaderboard import read_run_json

    known = registry.datasets()
    out = {d: known[d].human_consistency for d in datasets
           if d in known and known[d].human_consistency is not None}
    if leaderboard is not None:
        for path in sorted((Path(leaderboard) / "runs").glob("*.json")):
            ds = read_run_json(path.parent.parent, path.stem).get("dataset")  # checked: damage is an error
            if isinstance(ds, dict) and ds.get("name") in datasets and ds.get("human_consistency") is not None:
                out.setdefault(ds["name"], float(ds["human_consistency"]))
    return out
