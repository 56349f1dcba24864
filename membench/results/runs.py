"""The job directories under a work directory ($MEMBENCH_HOME/runs by default): what each
holds, how much disk it takes, and removing those nobody needs.

    WORK/<job key>/split<k>/           one job (membench.engine.job)
        result.json                    written last: the job finished
        <stage>/last.pt, best.pt       checkpoints; <stage>/stage.json once the stage finished
    WORK/<job key>/.split<k>.lock      held by the process running the job

Status: `running` (its lock is held now), `finished` (result.json), `unrecorded` (finished,
but its row is missing from the leaderboard result.json names: killed between the two
writes; the same command again, with --resume for `membench run`, adds it), `interrupted` (a
stage left last.pt or finished: `membench run ... --resume` continues it), `orphaned`
(nothing to resume: killed before its first checkpoint). Checkpoints: `kept`, `removed`
(smoke and quick jobs drop theirs after success) or `none`. Symbolic links in the work
directory are never followed: `links` names them, nothing lists or removes what they hold.
"""

from __future__ import annotations

import csv
import json
import os
import re
from dataclasses import dataclass
from pathlib import Path

from membench.engine.checkpoints import STAGE_DONE, where_now
from membench.errors import MembenchError
from membench.util.files import file_lock, remove_own_tree

REMOVABLE = ("finished", "orphaned")


@dataclass
class JobRun:
    key: str
    split: int
    path: Path
    status: str
    bytes: int
    checkpoints: str = ""  # kept, removed (smoke/quick after success) or none (see `checkpoints`)

    @property
    def model(self) -> str:
        return self.key.split("__")[0]

    @property
    def preset(self) -> str:
        parts = self.key.split("__")
        return parts[2] if len(parts) == 5 else ""

    def row(self) -> dict:
        return {"run": self.key, "split": self.split, "model": self.model, "preset": self.preset,
                "status": self.status, "checkpoints": self.checkpoints, "size": human(self.bytes),
                "bytes": self.bytes, "path": str(self.path)}


def human(n: int) -> str:
    for unit in ("B", "kB", "MB", "GB"):
        if n < 1000 or unit == "GB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1000
    return f"{n} B"


def lock_file(job_dir: Path) -> Path:
    return job_dir.parent / f".{job_dir.name}.lock"


def is_running(job_dir: Path) -> bool:
    """Whether a process holds the job's lock now (it is released again at once)."""
    lock = lock_file(job_dir)
    if not lock.is_file():
        return False
    try:
        with file_lock(lock, wait=False):
            return False
    except BlockingIOError:
        return True


def status(job_dir: Path, recorded: dict | None = None) -> str:
    if is_running(job_dir):
        return "running"
    if (job_dir / "result.json").is_file():
        return "finished" if has_row(job_dir, {} if recorded is None else recorded) else "unrecorded"
    if any(job_dir.glob("*/last.pt")) or any(job_dir.glob(f"*/{STAGE_DONE}")):
        return "interrupted"
    return "orphaned"


def checkpoints(job_dir: Path) -> str:
    """Whether the job's weights are still on disk, for `membench evaluate --from-run` and
    `--resume`: "kept", "removed" (a finished smoke/quick job drops them unless run with
    --keep-checkpoints) or "none" (a job that saved none: released weights, or killed before
    its first checkpoint)."""
    if not (job_dir / "result.json").is_file():
        return "kept" if any(job_dir.glob("*/*.pt")) else "none"
    try:
        recorded = json.loads((job_dir / "result.json").read_text()).get("checkpoint")
    except (OSError, ValueError, AttributeError):
        return "unknown"
    checkpoint = where_now(job_dir, recorded)  # the work dir may have moved
    if checkpoint is None:
        return "none"
    return "kept" if checkpoint.is_file() else "removed"


def size(path: Path) -> int:
    total = 0
    for root, _dirs, files in os.walk(path):
        for name in files:
            try:
                total += os.lstat(os.path.join(root, name)).st_size
            except FileNotFoundError:
                pass
    return total


def has_row(job_dir: Path, recorded: dict) -> bool:
    """Whether the finished job's row is in the leaderboard its result.json names (jobs from
    before membench recorded that: assumed). `recorded` caches each leaderboard's rows."""
    from membench.results.leaderboard import read_rows

    try:
        saved = json.loads((job_dir / "result.json").read_text())
        board = saved.get("leaderboard")
        if board is None:
            return True
        board, row = str(board), saved["row"]
        if board not in recorded:
            rows = read_rows(Path(board) / "results.csv")
            recorded[board] = {(r.get("run_id"), str(r.get("split"))) for r in rows}
        return (row["run_id"], str(row["split"])) in recorded[board]
    except (OSError, ValueError, KeyError, TypeError, AttributeError, csv.Error):  # cannot tell: kept
        return False


# A job key (engine/job.py job_key: ...__s<seed>__<10 hex>), or an evaluation's run id
# (engine/crosseval.py eval_run_id: <key>__on__<dataset>-<part>__<8 hex>): only folders named
# so are job folders; anything else in a work directory is not membench's to list or remove.
KEY_NAME = re.compile(r".+__s-?\d+__[0-9a-f]{10}(__on__.+__[0-9a-f]{8})?")


def job_dirs(work_dir: Path) -> list[Path]:
    """WORK/<key>/split<k> directories, never through a symbolic link."""
    work_dir = Path(work_dir)
    if not work_dir.is_dir():
        raise MembenchError("work directory does not exist (no run has used it yet)", work_dir)
    return [job_dir for key_dir in sorted(work_dir.iterdir())
            if key_dir.is_dir() and not key_dir.is_symlink() and KEY_NAME.fullmatch(key_dir.name)
            for job_dir in sorted(key_dir.glob("split*"))
            if job_dir.is_dir() and not job_dir.is_symlink() and job_dir.name[5:].isdigit()]


def links(work_dir: Path) -> list[Path]:
    """Symbolic links where job directories (or their key folders) belong: never followed."""
    work_dir = Path(work_dir)
    found = [p for p in sorted(work_dir.iterdir()) if p.is_symlink()]
    for key_dir in sorted(p for p in work_dir.iterdir() if p.is_dir() and not p.is_symlink()):
        found += [p for p in sorted(key_dir.glob("split*")) if p.is_symlink()]
    return found


def scan(work_dir: Path) -> list[JobRun]:
    """Every job directory under WORK, by key and split (symbolic links skipped: see links)."""
    recorded: dict = {}
    out = []
    for d in job_dirs(work_dir):
        state = status(d, recorded)
        out.append(JobRun(d.parent.name, int(d.name[5:]), d, state, size(d), checkpoints(d)))
    return out


def leaderboard_of(job_dir: Path) -> str:
    """The leaderboard a finished job's row was meant for (as result.json records it)."""
    try:
        return str(json.loads((Path(job_dir) / "result.json").read_text()).get("leaderboard") or "?")
    except (OSError, ValueError, AttributeError):
        return "?"


def clean(work_dir: Path, dry_run: bool = False, found: list[JobRun] | None = None) -> list[JobRun]:
    """Remove finished and orphaned job directories (never running, interrupted or unrecorded
    ones, nor anything through a link); returns what was (or, with dry_run, would be) removed.
    `found`: scan(work_dir), if the caller has it."""
    removed = []
    for run in scan(work_dir) if found is None else found:
        if run.status not in REMOVABLE:
            continue
        if not dry_run:
            try:  # a job that starts now keeps its directory
                with file_lock(lock_file(run.path), wait=False):
                    remove_own_tree(run.path, work_dir)
            except BlockingIOError:
                continue
            lock_file(run.path).unlink(missing_ok=True)
            if not any(run.path.parent.iterdir()):
                run.path.parent.rmdir()
        removed.append(run)
    return removed
