"""The human-consistency line drawn under tables and figures: a dataset's ceiling."""

from __future__ import annotations

from pathlib import Path


def human_ceilings(datasets: list[str], leaderboard: Path | None = None) -> dict[str, float]:
    """Human consistency of each named dataset: declared by its plugin, or else computed
    from the data when it was run (e.g. LNSIM's split halves) and kept in the run JSON."""
    import json

    from membench import registry

    known = registry.datasets()
    out = {d: known[d].human_consistency for d in datasets
           if d in known and known[d].human_consistency is not None}
    if leaderboard is not None:
        for path in sorted((Path(leaderboard) / "runs").glob("*.json")):
            try:
                ds = json.loads(path.read_text()).get("dataset", {})
            except (OSError, ValueError):
                continue
            if ds.get("name") in datasets and ds.get("human_consistency") is not None:
                out.setdefault(ds["name"], float(ds["human_consistency"]))
    return out
