"""The weight and checkpoint files a job loads, with their sha256, for its run JSON.

membench.weights.resolve.load_state_dict notes every file it reads into the innermost open job (a
chained stage's job runs inside its downstream job, so this is a stack). No membench
imports here: the weights module and the engine both use it.
"""

from __future__ import annotations

import hashlib
from functools import lru_cache
from pathlib import Path

_jobs: list[dict[str, str]] = []


def note_loaded(path) -> None:
    """Record that weights were read from `path` (called by membench.weights.resolve)."""
    path = Path(path)
    if _jobs and path.is_file():
        _jobs[-1][str(path.resolve())] = sha256_file(path)


def begin_job() -> None:
    """Start collecting the files a job loads."""
    _jobs.append({})


def end_job() -> dict[str, str]:
    """{absolute path: sha256} of the files loaded since the matching begin_job()."""
    return dict(sorted(_jobs.pop().items())) if _jobs else {}


def sha256_file(path) -> str:
    path = Path(path)
    stat = path.stat()
    return _sha256(str(path.resolve()), stat.st_size, stat.st_mtime_ns)


@lru_cache(maxsize=256)
def _sha256(path: str, size: int, mtime_ns: int) -> str:  # size and mtime: a changed file is hashed again
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()
