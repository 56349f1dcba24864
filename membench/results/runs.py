"""The job directories under a work directory ($MEMBENCH_HOME/runs by default): what each
holds, how much disk it takes, and removing those nobody needs.

    WORK/<job key>/split<k>/           one job (membench.engine.job)
        result.json                    written last: the job finished
        <stage>/last.pt, best.pt       checkpoints; <stage>/stage.json once the stage finished
    WORK/<job key>/.split<k>.lock      held by the process running the job

Status: `running` (its lock is held now), `finished` (result.json), `interrupted` (a stage
left last.pt or finished: `membench run ... --resume` continues it), `orphaned` (nothing
to resume: killed before its first checkpoint). Checkpoints: `kept`, `removed` (smoke and
quick jobs drop theirs after success) or `none`.
"""

from __future__ import annotations

import json
import os
import shutil
from dataclasses import dataclass
from pathlib import Path

from membench.engine.checkpoints import STAGE_DONE
from membench.errors import MembenchError
from membench.util.files import file_lock

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


def status(job_dir: Path) -> str:
    if is_running(job_dir):
        return "running"
    if (job_dir / "result.json").is_file():
        return "finished"
    if any(job_dir.glob("*/last.pt")) or any(job_dir.glob(f"*/{STAGE_DONE}")):
        return "interrupted"
    return "orphaned"


def checkpoints(job_dir: Path, status: str) -> str:
    """Whether the job's weights are still on disk, for `membench evaluate --from-run` and
    `--resume`: "kept", "removed" (a finished smoke/quick job drops them unless run with
    --keep-checkpoints) or "none" (a job that saved none: released weights, or killed before
    its first checkpoint)."""
    if status != "finished":
        return "kept" if any(job_dir.glob("*/*.pt")) else "none"
    try:
        recorded = json.loads((job_dir / "result.json").read_text()).get("checkpoint")
    except (OSError, ValueError, AttributeError):
        return "unknown"
    if not recorded:
        return "none"
    here = job_dir / Path(recorded).parent.name / Path(recorded).name  # the work dir may have moved
    return "kept" if Path(recorded).is_file() or here.is_file() else "removed"


def size(path: Path) -> int:
    total = 0
    for root, _dirs, files in os.walk(path):
        for name in files:
            try:
                total += os.lstat(os.path.join(root, name)).st_size
            except FileNotFoundError:
                pass
    return total


def scan(work_dir: Path) -> list[JobRun]:
    """Every job directory under WORK, by key and split."""
    work_dir = Path(work_dir)
    if not work_dir.is_dir():
        raise MembenchError("work directory does not exist (no run has used it yet)", work_dir)
    out = []
    for key_dir in sorted(p for p in work_dir.iterdir() if p.is_dir()):
        for job_dir in sorted(key_dir.glob("split*")):
            if job_dir.is_dir() and job_dir.name[5:].isdigit():
                state = status(job_dir)
                out.append(JobRun(key_dir.name, int(job_dir.name[5:]), job_dir, state, size(job_dir),
                                  checkpoints(job_dir, state)))
    return out


def clean(work_dir: Path, dry_run: bool = False) -> list[JobRun]:
    """Remove finished and orphaned job directories (never running or interrupted ones);
    returns what was (or, with dry_run, would be) removed."""
    removed = []
    for run in scan(work_dir):
        if run.status not in REMOVABLE:
            continue
        if not dry_run:
            try:  # a job that starts now keeps its directory
                with file_lock(lock_file(run.path), wait=False):
                    shutil.rmtree(run.path)
            except BlockingIOError:
                continue
            lock_file(run.path).unlink(missing_ok=True)
            if not any(run.path.parent.iterdir()):
                run.path.parent.rmdir()
        removed.append(run)
    return removed
