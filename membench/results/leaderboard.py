"""The leaderboard directory: tidy results, provenance, per-image predictions.

    OUT/results.csv                  one row per model x dataset x split x run
    OUT/summary.csv                  mean and sd per model, dataset and configuration (regenerated)
    OUT/runs/<run_id>.json           provenance of a run (config, versions, hardware, data)
    OUT/predictions/<run_id>/split<k>.csv   image,score,pred for every test image

Every file is replaced atomically (write a temporary file, fsync, rename) and
read-modify-write happens under an exclusive lock, so concurrent runs lose no rows.
"""

from __future__ import annotations

import csv
import io
from dataclasses import dataclass
from pathlib import Path

from membench.errors import MembenchError
from membench.util.files import atomic_write_json, atomic_write_text, file_lock, remove_stale_temp_files
from membench.results.check import ResultsFile
from membench.results.check import read_results as check_results
from membench.util.testhooks import kill_point

RESULT_COLUMNS = (
    "run_id", "model", "dataset", "trained_on", "split", "rho", "mse", "n_test",
    "params_total", "params_used", "params_trainable",
    "preset", "configuration", "config_id", "train_mode", "init", "pretrained", "epochs_run", "best_epoch",
    "best_val_rho", "device", "precision", "hardware", "seconds", "seed", "git_commit", "git_dirty",
    "membench_version", "timestamp", "data_fingerprint", "notes",
)
SUMMARY_COLUMNS = (
    "model", "dataset", "configuration", "config_id", "preset", "train_mode", "run_ids", "seeds", "n_splits",
    "rho_mean", "rho_sd", "mse_mean", "mse_sd", "params_total", "params_used",
)
KEY = ("run_id", "split")


def csv_text(rows: list[dict], columns) -> str:
    buf = io.StringIO()
    w = csv.DictWriter(buf, fieldnames=list(columns), extrasaction="ignore", lineterminator="\n")
    w.writeheader()
    for r in rows:
        w.writerow({c: _cell(r.get(c)) for c in columns})
    return buf.getvalue()


def _cell(v):
    if v is None:
        return ""
    if isinstance(v, float):  # numpy floats too (np.float64 subclasses float)
        return repr(float(v))  # full precision, no thousands separators
    return v


def locked(out: Path):
    """Exclusive lock on OUT/.lock for read-modify-write of shared files."""
    return file_lock(Path(out) / ".lock")


def read_rows(path: Path) -> list[dict]:
    if not Path(path).is_file():
        return []
    with open(path, newline="", encoding="utf-8") as f:
        return list(csv.DictReader(f))


def read_results(path: Path) -> ResultsFile:
    """results.csv validated as a whole against RESULT_COLUMNS (membench.results.check): a
    damaged file is refused with file:line, never overwritten; users' own columns kept."""
    return check_results(path, RESULT_COLUMNS)


def valid_rows(path: Path) -> list[dict]:
    """The rows of an existing results.csv, validated as a whole."""
    return read_results(path).rows


def add_result(out: Path, row: dict, predictions: list[tuple[str, float, float]], provenance: dict) -> None:
    """Record one split of one run: predictions and provenance first, the row last, so a
    row never exists without the data it summarises. Replaces an earlier row of the same
    (run_id, split)."""
    out = Path(out)
    run_id, split = row["run_id"], int(row["split"])
    pred_text = csv_text([{"image": n, "score": s, "pred": p} for n, s, p in predictions],
                         ("image", "score", "pred"))
    with locked(out):
        # The whole results.csv is checked before anything is written: a damaged or
        # hand-edited file stops here, with nothing changed.
        found = read_results(out / "results.csv")
        # Every file here is written under the lock, so a temporary file seen now was left
        # by a process killed mid-write.
        for d in (out, out / "runs", out / "predictions" / run_id):
            remove_stale_temp_files(d)
        atomic_write_text(out / "predictions" / run_id / f"split{split}.csv", pred_text)
        kill_point("leaderboard:predictions")
        atomic_write_json(out / "runs" / f"{run_id}.json", with_split_stages(out / "runs" / f"{run_id}.json",
                                                                           provenance, split))
        rows = [r for r in found.rows if (r["run_id"], str(int(r["split"]))) != (run_id, str(split))]
        rows.append(row)
        rows.sort(key=lambda r: (r["model"], r["dataset"], r["run_id"], int(r["split"])))
        atomic_write_text(out / "results.csv", csv_text(rows, found.columns()))  # users' own columns kept
        atomic_write_text(out / "summary.csv", csv_text(summarise(rows), SUMMARY_COLUMNS))


def with_split_stages(path: Path, provenance: dict, split: int) -> dict:
    """The run JSON to write for one more split: `stages` is the stage outcomes (with their
    per-epoch histories) of the split written last, as before; `split_stages` keeps every
    split's, {"<k>": outcomes}, carried over from the file already there (the training
    curves of the report's run pages)."""
    import json

    kept = {}
    if Path(path).is_file():
        try:
            kept = json.loads(Path(path).read_text()).get("split_stages") or {}
        except (OSError, ValueError, AttributeError):
            kept = {}  # unreadable: this split's history alone, the file is replaced anyway
    kept = {k: v for k, v in kept.items() if str(k).isdigit()} if isinstance(kept, dict) else {}
    kept[str(split)] = provenance.get("stages") or {}
    return {**provenance, "split_stages": dict(sorted(kept.items(), key=lambda kv: int(kv[0])))}


def summarise(rows: list[dict]) -> list[dict]:
    """Mean and sample sd (ddof=1; empty for one value) of rho and MSE per model, dataset and
    configuration: seeds are replicates, pooled; per seed only the latest run counts (newest
    timestamp, then run id), as in the report. Rows without a configuration (older
    leaderboards) get theirs derived (membench.results.configuration.from_row)."""
    import statistics

    from membench.results.configuration import from_row

    by_run: dict[str, list[dict]] = {}
    for r in rows:
        by_run.setdefault(r["run_id"], []).append(r)
    groups: dict[tuple, dict[str, tuple]] = {}  # (model, dataset, config id) -> seed -> (stamp, run id, label)
    for run_id, rs in by_run.items():
        label, config_id, _ = from_row(rs[0])
        seeds = groups.setdefault((rs[0]["model"], rs[0]["dataset"], config_id), {})
        stamp = max(r.get("timestamp") or "" for r in rs)
        seed = str(rs[0].get("seed") or "0")
        seeds[seed] = max(seeds.get(seed, ("", "", "")), (stamp, run_id, label))
    out = []
    for (model, dataset, config_id), seeds in sorted(groups.items()):
        chosen = [seeds[s] for s in sorted(seeds, key=lambda s: (len(s), s))]
        rs = [r for _, run_id, _ in chosen for r in sorted(by_run[run_id], key=lambda r: int(r["split"]))]
        rho = [float(r["rho"]) for r in rs]
        mse = [float(r["mse"]) for r in rs]
        first = rs[0]
        out.append({
            "model": model, "dataset": dataset, "configuration": chosen[0][2], "config_id": config_id,
            "preset": first["preset"], "train_mode": first.get("train_mode", ""),
            "run_ids": " ".join(run_id for _, run_id, _ in chosen),
            "seeds": " ".join(sorted(seeds, key=lambda s: (len(s), s))),
            "n_splits": len(rs),
            "rho_mean": statistics.fmean(rho), "rho_sd": statistics.stdev(rho) if len(rho) > 1 else None,
            "mse_mean": statistics.fmean(mse), "mse_sd": statistics.stdev(mse) if len(mse) > 1 else None,
            "params_total": first["params_total"], "params_used": first.get("params_used", ""),
        })
    return out


# ---------------------------------------------------------------- reading runs back

@dataclass
class Run:
    """All results.csv rows of one run_id (one model on one dataset)."""

    run_id: str
    model: str
    dataset: str
    preset: str
    rows: list[dict]
    directory: Path

    @property
    def splits(self) -> list[int]:
        return [int(r["split"]) for r in self.rows]

    @property
    def timestamp(self) -> str:
        return max(r.get("timestamp") or "" for r in self.rows)

    def values(self, column: str) -> list[float]:
        return [float(r[column]) for r in self.rows if r.get(column) not in (None, "")]

    def predictions(self, split: int) -> Path:
        return self.directory / "predictions" / self.run_id / f"split{split}.csv"


def load_runs(directory: Path) -> list[Run]:
    """Runs recorded in DIR/results.csv, split rows sorted; [] when there is no file."""
    directory = Path(directory)
    if not directory.is_dir():
        raise MembenchError("leaderboard directory does not exist", directory)
    found = read_results(directory / "results.csv")  # the same whole-file check as before a write
    runs: dict[str, Run] = {}
    for number, row in zip(found.lines, found.rows):
        run = runs.setdefault(row["run_id"], Run(row["run_id"], row["model"], row["dataset"],
                                                 row.get("preset", ""), [], directory))
        if (run.model, run.dataset) != (row["model"], row["dataset"]):
            raise MembenchError(f"run {run.run_id} mixes models or datasets", directory / "results.csv", number)
        run.rows.append(row)
    for run in runs.values():
        run.rows.sort(key=lambda r: int(r["split"]))
    return list(runs.values())


def latest_runs(runs: list[Run]) -> dict[tuple[str, str, str], Run]:
    """The latest run per (model, dataset, preset): newest timestamp, then largest run id."""
    best: dict[tuple[str, str, str], Run] = {}
    for run in runs:
        key = (run.model, run.dataset, run.preset)
        if key not in best or (run.timestamp, run.run_id) > (best[key].timestamp, best[key].run_id):
            best[key] = run
    return best
