"""The leaderboard directory: tidy results, provenance, per-image predictions.

    OUT/results.csv                  one row per model x dataset x split x run
    OUT/summary.csv                  mean and sd over splits per run (regenerated)
    OUT/runs/<run_id>.json           provenance of a run (config, versions, hardware, data)
    OUT/predictions/<run_id>/split<k>.csv   image,score,pred for every test image

Every file is replaced atomically (write a temporary file, fsync, rename) and
read-modify-write happens under an exclusive lock, so concurrent runs lose no rows.
"""

from __future__ import annotations

import contextlib
import csv
import io
import json
import os
import tempfile
from pathlib import Path

from membench.errors import MembenchError
from membench.testhooks import kill_point

RESULT_COLUMNS = (
    "run_id", "model", "dataset", "split", "rho", "mse", "n_test",
    "params_total", "params_used", "params_trainable",
    "preset", "train_mode", "init", "pretrained", "epochs_run", "best_epoch", "best_val_rho",
    "device", "hardware", "seconds", "seed", "git_commit", "membench_version", "timestamp",
    "data_fingerprint", "notes",
)
SUMMARY_COLUMNS = (
    "run_id", "model", "dataset", "preset", "train_mode", "n_splits",
    "rho_mean", "rho_sd", "mse_mean", "mse_sd", "params_total", "params_used",
)
KEY = ("run_id", "split")
TMP_SUFFIX = ".tmp"


def atomic_write_bytes(path: Path, data: bytes) -> None:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=TMP_SUFFIX)
    try:
        os.fchmod(fd, _file_mode())  # mkstemp's 0600 would hide shared leaderboards from others
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        kill_point(f"write:{path.name}")
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise
    _fsync_dir(path.parent)


def _file_mode() -> int:
    mask = os.umask(0o22)
    os.umask(mask)
    return 0o666 & ~mask


def _fsync_dir(directory: Path) -> None:
    """Make the rename itself durable (a power cut must not bring the old file back)."""
    try:
        fd = os.open(directory, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def remove_stale_temp_files(directory: Path) -> None:
    """Temporary files left by a process killed mid-write. Only call this where no other
    process can be writing (under the leaderboard lock, or in a locked job directory)."""
    for p in Path(directory).glob(f".*{TMP_SUFFIX}"):
        with contextlib.suppress(OSError):
            p.unlink()


def atomic_write_text(path: Path, text: str) -> None:
    atomic_write_bytes(path, text.encode("utf-8"))


def atomic_write_json(path: Path, obj) -> None:
    atomic_write_text(path, json.dumps(obj, indent=2, sort_keys=True, default=str) + "\n")


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


@contextlib.contextmanager
def locked(out: Path):
    """Exclusive lock on OUT/.lock for read-modify-write of shared files."""
    import fcntl

    out.mkdir(parents=True, exist_ok=True)
    with open(out / ".lock", "a+") as f:
        fcntl.flock(f.fileno(), fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(f.fileno(), fcntl.LOCK_UN)


def check_writable(out: Path) -> None:
    """Fail before any training if OUT cannot be written."""
    out = Path(out)
    try:
        out.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=out, prefix=".write-test.")
        os.close(fd)
        os.unlink(tmp)
    except OSError as exc:
        raise MembenchError(f"output directory is not writable ({exc.strerror})", out) from None


def read_rows(path: Path) -> list[dict]:
    if not Path(path).is_file():
        return []
    with open(path, newline="", encoding="utf-8") as f:
        return list(csv.DictReader(f))


def valid_rows(path: Path) -> list[dict]:
    """The rows of an existing results.csv, refusing (not overwriting) one that is damaged."""
    try:
        rows = read_rows(path)
    except (OSError, UnicodeDecodeError, csv.Error) as exc:
        raise MembenchError(f"cannot read the leaderboard ({type(exc).__name__}: {exc}); move it "
                            "aside and run again", path) from None
    for number, r in enumerate(rows, start=2):
        if None in r or any(r.get(c) is None for c in ("run_id", "model", "dataset", "split", "rho", "mse")) \
                or not str(r["split"]).isdigit():
            raise MembenchError("damaged leaderboard row (wrong number of columns or no split "
                                "number); fix or remove the line, then run again", path, number)
    return rows


def add_result(out: Path, row: dict, predictions: list[tuple[str, float, float]], provenance: dict) -> None:
    """Record one split of one run: predictions and provenance first, the row last, so a
    row never exists without the data it summarises. Replaces an earlier row of the same
    (run_id, split)."""
    out = Path(out)
    run_id, split = row["run_id"], int(row["split"])
    pred_text = csv_text([{"image": n, "score": s, "pred": p} for n, s, p in predictions],
                         ("image", "score", "pred"))
    with locked(out):
        # Every file here is written under the lock, so a temporary file seen now was left
        # by a process killed mid-write.
        for d in (out, out / "runs", out / "predictions" / run_id):
            remove_stale_temp_files(d)
        atomic_write_text(out / "predictions" / run_id / f"split{split}.csv", pred_text)
        kill_point("leaderboard:predictions")
        atomic_write_json(out / "runs" / f"{run_id}.json", provenance)
        rows = [r for r in valid_rows(out / "results.csv")
                if (r["run_id"], str(r["split"])) != (run_id, str(split))]
        rows.append(row)
        rows.sort(key=lambda r: (r["model"], r["dataset"], r["run_id"], int(r["split"])))
        atomic_write_text(out / "results.csv", csv_text(rows, RESULT_COLUMNS))
        atomic_write_text(out / "summary.csv", csv_text(summarise(rows), SUMMARY_COLUMNS))


def summarise(rows: list[dict]) -> list[dict]:
    """Mean and sample sd (ddof=1; empty for one split) of rho and MSE over splits, per run."""
    import statistics

    by_run: dict[str, list[dict]] = {}
    for r in rows:
        by_run.setdefault(r["run_id"], []).append(r)
    out = []
    for run_id, rs in sorted(by_run.items()):
        rho = [float(r["rho"]) for r in rs]
        mse = [float(r["mse"]) for r in rs]
        first = rs[0]
        out.append({
            "run_id": run_id, "model": first["model"], "dataset": first["dataset"],
            "preset": first["preset"], "train_mode": first.get("train_mode", ""),
            "n_splits": len(rs),
            "rho_mean": statistics.fmean(rho), "rho_sd": statistics.stdev(rho) if len(rho) > 1 else None,
            "mse_mean": statistics.fmean(mse), "mse_sd": statistics.stdev(mse) if len(mse) > 1 else None,
            "params_total": first["params_total"], "params_used": first.get("params_used", ""),
        })
    return out
