"""The leaderboard directory: tidy results, provenance, per-image predictions.

    OUT/results.csv                  one row per model x dataset x split x run
    OUT/summary.csv                  mean and sd per model, dataset and configuration (regenerated)
    OUT/runs/<run_id>.json           provenance of a run (config, versions, hardware, data)
    OUT/predictions/<run_id>/split<k>.csv   image,score,pred for every test image

Every file is replaced atomically (write a temporary file, fsync, rename) and
read-modify-write happens under an exclusive lock, so concurrent runs lose no rows.
What is read back is checked: results.csv as a whole (membench.results.check); a
predictions file line by line (header, finite numbers, no image twice), against its row's
n_test and against the sha256 its row recorded when it was written (predictions_sha256); a
run JSON against the checksum it carries (membench.util.sealed). Damage is one line naming
the file, never a silently different number.
"""

from __future__ import annotations

import csv
import hashlib
import io
import math
from dataclasses import dataclass
from pathlib import Path

from membench.errors import MembenchError
from membench.results.check import UNDEFINED, ResultsFile
from membench.results.check import read_results as check_results
from membench.util.files import (
    atomic_write_json,
    atomic_write_text,
    file_lock,
    refuse_link,
    refuse_links,
    remove_stale_temp_files,
)
from membench.util.sealed import read_sealed, seal
from membench.util.testhooks import kill_point

RESULT_COLUMNS = (
    "run_id", "model", "dataset", "trained_on", "split", "rho", "mse", "n_test",
    "params_total", "params_used", "params_trainable",
    "preset", "configuration", "config_id", "train_mode", "init", "pretrained", "epochs_run", "best_epoch",
    "best_val_rho", "device", "precision", "hardware", "seconds", "seed", "git_commit", "git_dirty",
    "membench_version", "timestamp", "data_fingerprint", "notes", "predictions_sha256",
)
SUMMARY_COLUMNS = (
    "model", "dataset", "configuration", "config_id", "preset", "train_mode", "run_ids", "seeds", "n_splits",
    "rho_mean", "rho_sd", "mse_mean", "mse_sd", "params_total", "params_used", "rho_undefined",
)
PREDICTION_COLUMNS = ("image", "score", "pred")
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
    """The rows of an existing results.csv, validated as a whole, before a run writes there:
    results.csv and summary.csv must not be links (membench never replaces one)."""
    for name in ("results.csv", "summary.csv"):
        refuse_link(Path(path).with_name(name))
    return read_results(path).rows


def add_result(out: Path, row: dict, predictions: list[tuple[str, float, float]], provenance: dict) -> None:
    """Record one split of one run: predictions and provenance first, the row last, so a
    row never exists without the data it summarises. Replaces an earlier row of the same
    (run_id, split)."""
    out = Path(out)
    run_id, split = row["run_id"], int(row["split"])
    check_predictions(row, predictions)
    pred_text = csv_text([{"image": n, "score": s, "pred": p} for n, s, p in predictions], PREDICTION_COLUMNS)
    # what the file must hash to whenever it is read back (read_predictions)
    row = {**row, "predictions_sha256": hashlib.sha256(pred_text.encode("utf-8")).hexdigest()}
    targets = (out / "predictions" / run_id / f"split{split}.csv", out / "runs" / f"{run_id}.json",
               out / "results.csv", out / "summary.csv")
    with locked(out):
        # The whole results.csv is checked before anything is written: a damaged or
        # hand-edited file stops here, with nothing changed; so does a link where a file goes.
        for path in targets:
            refuse_links(path, out)  # the file, and the folders below OUT on the way to it
        found = read_results(out / "results.csv")
        # Every file here is written under the lock, so a temporary file seen now was left
        # by a process killed mid-write.
        for d in (out, out / "runs", out / "predictions" / run_id):
            remove_stale_temp_files(d)
        atomic_write_text(targets[0], pred_text)
        kill_point("leaderboard:predictions")
        atomic_write_json(targets[1], seal(with_split_stages(targets[1], provenance, split)))
        same = lambda r: (r["run_id"], str(int(r["split"]))) == (run_id, str(split))  # noqa: E731
        rows = [r for r in found.rows if not same(r)]
        rows.append(_keep_users_cells(next((r for r in found.rows if same(r)), {}), row))
        rows.sort(key=lambda r: (r["model"], r["dataset"], r["run_id"], int(r["split"])))
        atomic_write_text(out / "results.csv", csv_text(rows, found.columns()))  # users' own columns kept
        atomic_write_text(out / "summary.csv", csv_text(summarise(rows), SUMMARY_COLUMNS))


def _keep_users_cells(old: dict, new: dict) -> dict:
    """The row replacing OLD keeps a user's own columns and, when it records the same
    measurement again (--resume re-adds a job's row from its result.json: same timestamp),
    the cells a user filled where membench wrote nothing."""
    same = bool(old) and old.get("timestamp") == new.get("timestamp")
    kept = {c: v for c, v in old.items()
            if v not in (None, "") and new.get(c) in (None, "") and (c not in RESULT_COLUMNS or same)}
    return {**new, **kept}


def check_predictions(row: dict, predictions) -> None:
    """Refuse to record what the leaderboard would refuse to read: non-finite numbers (NaN
    weights, an overflow)."""
    where = f"{row['model']} on {row['dataset']}, split {row['split']} (run {row['run_id']})"
    bad = [(n, s, p) for n, s, p in predictions if not (math.isfinite(s) and math.isfinite(p))]
    if bad:
        raise MembenchError(f"{where}: {len(bad)} of {len(predictions)} predictions are not finite numbers (e.g. "
                            f"{bad[0][0]}: {bad[0][2]}); nothing was recorded: the model's weights or its "
                            "output are broken (NaN weights, a diverged training)")


def with_split_stages(path: Path, provenance: dict, split: int) -> dict:
    """The run JSON to write for one more split: `stages` is the stage outcomes (with their
    per-epoch histories) of the split written last, as before; `split_stages` keeps every
    split's, {"<k>": outcomes}, carried over from the file already there (the training
    curves of the report's run pages). Only histories the file's own checksum vouches for
    are carried over (a damaged one is not sealed anew)."""
    kept = {}
    if Path(path).is_file():
        try:
            kept = read_sealed(path, "run record", "").get("split_stages") or {}
        except MembenchError:
            kept = {}  # unreadable or damaged: this split's history alone, the file is replaced anyway
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
        rho = [float(r["rho"]) for r in rs if not math.isnan(float(r["rho"]))]  # undefined rho left out
        mse = [float(r["mse"]) for r in rs]
        first = rs[0]
        out.append({
            "model": model, "dataset": dataset, "configuration": chosen[0][2], "config_id": config_id,
            "preset": first["preset"], "train_mode": first.get("train_mode", ""),
            "run_ids": " ".join(run_id for _, run_id, _ in chosen),
            "seeds": " ".join(sorted(seeds, key=lambda s: (len(s), s))),
            "n_splits": len(rs),
            "rho_mean": statistics.fmean(rho) if rho else math.nan,
            "rho_sd": statistics.stdev(rho) if len(rho) > 1 else None, "rho_undefined": len(rs) - len(rho),
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
        """The column's numbers over splits; an undefined rho (nan) is left out (undefined())."""
        values = (float(r[column]) for r in self.rows if r.get(column) not in (None, ""))
        return [v for v in values if not math.isnan(v)]

    def undefined(self, column: str = "rho") -> list[int]:
        """The splits whose `column` is undefined (nan: e.g. rho of constant predictions)."""
        return [int(r["split"]) for r in self.rows if r.get(column) == UNDEFINED]

    def row(self, split: int) -> dict:
        return next(r for r in self.rows if int(r["split"]) == split)

    def predictions(self, split: int) -> Path:
        return self.directory / "predictions" / self.run_id / f"split{split}.csv"

    def read_predictions(self, split: int):
        """Split k's stored predictions, checked against its row (read_predictions)."""
        return read_predictions(self.predictions(split), self.row(split))


def read_predictions(path: Path, row: dict | None = None):
    """(image names, true scores, predictions as numpy arrays) of predictions/<run>/split<k>.csv,
    checked: the header, every line (three fields, a name, finite numbers, no image twice),
    and, given the file's results.csv row, its line count against n_test and its sha256
    against predictions_sha256 (rows written before membench recorded it: the lines only).
    Damage is a MembenchError naming the file and line."""
    import numpy as np

    path = Path(path)
    try:
        raw = path.read_bytes()
    except FileNotFoundError:
        raise MembenchError("predictions file is missing", path) from None
    except OSError as exc:
        raise MembenchError(f"cannot read the predictions file ({exc.strerror})", path) from None
    names, score, pred = _prediction_lines(raw, path)
    row = row or {}
    if row.get("n_test") not in (None, "") and len(names) != int(row["n_test"]):
        raise MembenchError(f"{len(names)} predictions, but its results.csv row says n_test={row['n_test']} (cut "
                            f"short or lines added); {PREDICTIONS_FIX}", path)
    recorded = row.get("predictions_sha256") or ""
    if recorded and hashlib.sha256(raw).hexdigest() != recorded:
        raise MembenchError("changed since membench wrote it (its sha256 differs from predictions_sha256 in "
                            f"results.csv): a value was edited or damaged; {PREDICTIONS_FIX}", path)
    return names, np.asarray(score, dtype=float), np.asarray(pred, dtype=float)


PREDICTIONS_FIX = ("restore the file, or run the job again (`membench run` with the same options and --resume "
                   "rewrites it from the job's result.json)")


def _prediction_lines(raw: bytes, path: Path) -> tuple[list[str], list[float], list[float]]:
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise MembenchError(f"not UTF-8 text; {PREDICTIONS_FIX}", path, raw[:exc.start].count(b"\n") + 1) from None
    reader = csv.reader(io.StringIO(text, newline=""), strict=True)
    names, score, pred, seen = [], [], [], {}
    try:
        header = next(reader, None)
        if header != list(PREDICTION_COLUMNS):
            raise MembenchError(f"expected header image,score,pred, got {','.join(header or [])!r}", path, 1)
        for fields in reader:
            number = reader.line_num
            if len(fields) != 3 or not fields[0]:
                raise MembenchError(f"expected 3 fields (image,score,pred), got {fields!r}; {PREDICTIONS_FIX}",
                                    path, number)
            try:
                s, p = float(fields[1]), float(fields[2])
            except ValueError:
                s = p = math.nan
            if not (math.isfinite(s) and math.isfinite(p)):
                raise MembenchError(f"score and pred must be finite numbers, got {fields[1]!r}, {fields[2]!r}; "
                                    f"{PREDICTIONS_FIX}", path, number)
            if fields[0] in seen:
                raise MembenchError(f"image {fields[0]} is already on line {seen[fields[0]]} (a duplicated line "
                                    f"would count twice); {PREDICTIONS_FIX}", path, number)
            seen[fields[0]] = number
            names.append(fields[0])
            score.append(s)
            pred.append(p)
    except csv.Error as exc:
        raise MembenchError(f"damaged CSV ({exc}); {PREDICTIONS_FIX}", path, reader.line_num or 1) from None
    if not names:
        raise MembenchError("predictions file has no rows", path)
    return names, score, pred


def undefined_rho(rows: list[dict]) -> list[tuple[str, int, str]]:
    """(run id, split, why) of every row whose rho is undefined ("nan"; its notes say why,
    as membench.results.metrics.rho_note wrote it)."""
    import re

    out = []
    for r in rows:
        if r.get("rho") == UNDEFINED:
            why = re.search(r"rho undefined \(([^)]*)\)", r.get("notes") or "")
            out.append((r["run_id"], int(r["split"]), why.group(1) if why else "reason not recorded"))
    return out


def read_run_json(directory: Path, run_id: str) -> dict | None:
    """OUT/runs/<run_id>.json checked against the checksum it carries (None when absent;
    a file written before membench sealed them is read as it is)."""
    path = Path(directory) / "runs" / f"{run_id}.json"
    if not path.is_file():
        return None
    return read_sealed(path, "run JSON", "restore it, or run the job again (--resume rewrites it)")


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
