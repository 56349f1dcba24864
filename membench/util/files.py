"""Files membench writes: atomic replacement, one lock helper, and where its own data lives.

Every result file is replaced atomically (write a temporary file, fsync, rename, fsync the
directory), so a reader or a killed writer never sees half a file. Read-modify-write and
job directories are guarded by `file_lock`, an flock that the kernel drops when its holder
dies (even by SIGKILL), so no stale lock outlives a killed run.
"""

from __future__ import annotations

import contextlib
import errno
import json
import os
import re
import tempfile
from pathlib import Path

from membench.errors import MembenchError
from membench.util.testhooks import kill_point

TMP_SUFFIX = ".tmp"


def membench_home() -> Path:
    """$MEMBENCH_HOME, or ~/.cache/membench: runs, captioner, converted datasets."""
    return Path(os.environ.get("MEMBENCH_HOME") or Path.home() / ".cache" / "membench")


LINK = ("is a symbolic link: membench never writes or deletes through a link, nor replaces one; put "
        "the real file or directory here, or write elsewhere")


def atomic_write_bytes(path: Path, data: bytes) -> None:
    path = Path(path)
    refuse_link(path)  # os.replace would replace a user's link by a file
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
    except BaseException as exc:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        if isinstance(exc, OSError) and exc.errno in _DISK_FULL:
            # The OSError of a failed write names no file; the user needs to know which one.
            raise MembenchError(f"disk full while writing this file ({exc.strerror}); its previous version, "
                                "if any, is intact: free space, then run the same command again (with --resume "
                                "for a run)", path) from None
        raise
    _fsync_dir(path.parent)


_DISK_FULL = {errno.ENOSPC, errno.EDQUOT}


def atomic_write_text(path: Path, text: str) -> None:
    atomic_write_bytes(path, text.encode("utf-8"))


def atomic_write_json(path: Path, obj) -> None:
    atomic_write_text(path, json.dumps(obj, indent=2, sort_keys=True, default=str) + "\n")


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


def refuse_link(path: Path) -> None:
    if Path(path).is_symlink():
        raise MembenchError(LINK, path)


def refuse_links(path: Path, root: Path) -> None:
    """PATH, below membench's directory ROOT, is reached through no symbolic link below ROOT
    (ROOT itself may be one: the user chose it)."""
    here = Path(root)
    for part in Path(path).relative_to(root).parts:
        here = here / part
        refuse_link(here)


def remove_own_tree(path: Path, root: Path) -> None:
    """Delete PATH, a directory membench made below ROOT, never through a link (rmtree itself
    never follows links inside the tree)."""
    import shutil

    refuse_links(path, root)
    shutil.rmtree(path)


# atomic_write_bytes' temporary names (".<file name>.<mkstemp's 8 random characters>.tmp") of
# the files written where stale ones are removed (leaderboard csv/json, checkpoints): a user's
# ".notes.tmp" or ".notes.csv.old.tmp" is not one
_OWN_TEMP = re.compile(rf"\..+\.(csv|json|pt)\.[a-z0-9_]{{8}}{re.escape(TMP_SUFFIX)}")


def remove_stale_temp_files(directory: Path) -> None:
    """Temporary files left by a process killed mid-write (only names atomic_write_bytes
    makes, only regular files). Only call this where no other process can be writing (under
    the leaderboard lock, or in a locked job directory)."""
    for p in Path(directory).glob(f".*{TMP_SUFFIX}"):
        if _OWN_TEMP.fullmatch(p.name) and p.is_file() and not p.is_symlink():
            with contextlib.suppress(OSError):
                p.unlink()


def check_writable(directory: Path) -> None:
    """Fail before any training if DIRECTORY cannot be written."""
    directory = Path(directory)
    try:
        directory.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=directory, prefix=".write-test.")
        os.close(fd)
        os.unlink(tmp)
    except OSError as exc:
        raise MembenchError(f"output directory is not writable ({exc.strerror})", directory) from None


@contextlib.contextmanager
def file_lock(lock_file: Path, *, wait: bool = True, on_busy=None):
    """Exclusive flock on LOCK_FILE for the block. Busy: with `wait`, call `on_busy()` (if
    given, e.g. to say that we wait) and block; without, `on_busy()` must raise."""
    import fcntl

    lock_file = Path(lock_file)
    lock_file.parent.mkdir(parents=True, exist_ok=True)
    with open(lock_file, "a+") as f:
        try:
            fcntl.flock(f.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            if on_busy is not None:
                on_busy()
            if not wait:
                raise
            fcntl.flock(f.fileno(), fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(f.fileno(), fcntl.LOCK_UN)


def safe_name(text: str) -> str:
    """A dataset or model name as a file-name stem (tables, figures)."""
    return re.sub(r"[^A-Za-z0-9._-]+", "_", text)
