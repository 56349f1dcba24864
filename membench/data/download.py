"""Resumable downloads: one call for weights, datasets and anything a plugin publishes.

    from membench.data.download import download
    path = download(url, dest, sha256="...", progress=True)   # -> Path of the finished file

- Resume: the bytes arrive in `dest.part`; an interrupted download (connection lost or
  cut off mid-chunk, Ctrl-C, a killed process) continues from there with an HTTP Range
  request the next time, and within one call after a lost connection (`retries`).
- Checks: with `sha256` (or `git_blob_sha1`, the object id git and GitHub publish for
  every file of a commit) the finished file is verified; a web page where a file was
  expected (a sign-in, quota or error page) is refused too. A file that fails is removed,
  so nothing corrupt is ever left at `dest`.
- Reuse: an existing `dest` is used when it passes those checks. What this module
  downloads is recorded in the folder's `.membench-downloads.json`; such a file is
  downloaded again when it fails a check, or (without a checksum) when another URL is
  asked for; a file membench did not download is never removed or overwritten.
  `discard(path)` removes a download that a later check (e.g. an import) refused.
- Slow servers: `timeout` seconds without a byte, or less than `min_rate` bytes/s over
  `rate_window` seconds, stop the transfer (the bytes so far are kept for a resume).
- Two processes: downloads into one folder take turns (a lock in that folder); the second
  then finds the file done.
- Offline (no network, or MEMBENCH_OFFLINE=1): a one-line error naming the URL and the
  path where the file can be put by hand.
- Progress: a rich bar on stderr (size, speed, time left) when `progress` is true.
- Other transports: `transfer(url, part, progress)` fills `part` instead of HTTP (Google
  Drive through gdown); every rule above still applies.

Unpacking lives in membench.data.archives (`extract`, `join_split_zip`, re-exported here).
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import stat
import sys
import time
from dataclasses import dataclass
from pathlib import Path

from membench.data.archives import extract, join_split_zip  # noqa: F401 (public API here too)
from membench.errors import MembenchError
from membench.util.files import refuse_link

OFFLINE_ENV = "MEMBENCH_OFFLINE"
CHUNK = 1 << 20
PART_SUFFIX = ".part"
LEDGER = ".membench-downloads.json"  # per folder: what download() put there, from which URL
LOCK = ".membench-downloads.lock"
MIN_RATE = 1024  # bytes/s, averaged over RATE_WINDOW: below that a server only trickles
RATE_WINDOW = 60.0
_WEB_PAGE_SUFFIXES = (".html", ".htm")


class DownloadError(MembenchError):
    """A download that could not happen or complete (offline, HTTP error, cut off)."""


class DownloadRefused(DownloadError):
    """A download that completed, but is not the file expected (hash, size, a web page)."""


def offline() -> bool:
    return os.environ.get(OFFLINE_ENV, "").strip().lower() not in ("", "0", "false", "no")


def by_hand(url: str, dest: Path) -> str:
    """The way out when a download fails; messages name `url` themselves."""
    return f"download it by hand and put it at {dest}"


@dataclass(frozen=True)
class _Limits:
    timeout: float
    min_rate: float
    rate_window: float


def download(url: str, dest, sha256: str | None = None, progress: bool = True, *,
             git_blob_sha1: str | None = None, retries: int = 3, timeout: float = 30.0,
             min_rate: float = MIN_RATE, rate_window: float = RATE_WINDOW, transfer=None) -> Path:
    """Fetch `url` to `dest` (resumable, verified; the module's rules); returns `dest`.

    Running the same call twice downloads nothing twice. `transfer(url, part, progress)`
    replaces the HTTP transfer (it must leave the whole file at `part` or raise).
    """
    dest = Path(dest).expanduser()
    if offline() and not os.path.lexists(dest):
        raise DownloadError(f"cannot download {url} (offline: {OFFLINE_ENV} is set); {by_hand(url, dest)}")
    dest.parent.mkdir(parents=True, exist_ok=True)
    with _folder_lock(dest.parent):
        if _reusable(url, dest, sha256, git_blob_sha1):
            return dest
        if offline():
            raise DownloadError(f"cannot download {url} (offline: {OFFLINE_ENV} is set); {by_hand(url, dest)}")
        part = dest.with_name(dest.name + PART_SUFFIX)
        for path in (dest, part):  # written or replaced below: never through (or over) a link
            refuse_link(path)
        if transfer is not None:
            transfer(url, part, progress)
        else:
            _transfer_http(url, part, progress, retries, _Limits(timeout, min_rate, rate_window))
        problem = _problem(part, dest, sha256, git_blob_sha1)
        if problem is not None:
            part.unlink()
            raise DownloadRefused(f"download of {url} refused: {problem} (the file was removed; run again, "
                                f"or {by_hand(url, dest)} if the source changed)")
        os.replace(part, dest)
        _remember(dest, url)
    return dest


def _reusable(url: str, dest: Path, sha256: str | None, git_blob_sha1: str | None) -> bool:
    """True: use `dest` as it is. False: nothing there (any download of ours that failed a
    check, or came from another URL without a checksum to vouch for it, was removed)."""
    if not os.path.lexists(dest):
        return False
    ours = _recorded(dest)
    problem = _problem(dest, dest, sha256, git_blob_sha1) if dest.is_file() else "it is not a file"
    if ours is None:
        if problem is None:
            return True
        raise MembenchError(f"already exists but {problem}, and membench did not download it: move it "
                            f"away to download {url} again", dest)
    if problem is None and (sha256 or git_blob_sha1 or ours.get("url") == url):
        return True
    dest.unlink()
    _record(dest, None)
    return False


def discard(path) -> bool:
    """Remove `path` if download() put it there (and it is unchanged since), so the next
    call downloads it again: for a file a later check refused (an archive that does not
    import). False, and nothing removed, for any other file."""
    path = Path(path)
    with _folder_lock(path.parent):
        if _recorded(path) is None:
            return False
        path.unlink()
        _record(path, None)
    return True


def remove_downloaded(folder) -> list[Path]:
    """Remove what download() put in `folder` and its bookkeeping, then the folder if
    empty; returns the files left (not downloaded by membench, e.g. put there by hand).
    Only when nothing else downloads into `folder`."""
    folder = Path(folder)
    if not folder.is_dir():
        return []
    for name in list(_ledger(folder)):
        discard(folder / name)
    for name in (LEDGER, LOCK):
        with contextlib.suppress(FileNotFoundError):
            (folder / name).unlink()
    left = sorted(p for p in folder.iterdir())
    if not left:
        folder.rmdir()
    return left


# ---- the record of what membench downloaded ------------------------------------------------

def _ledger(folder: Path) -> dict:
    import json

    try:
        data = json.loads((folder / LEDGER).read_text())
    except (OSError, ValueError):  # none yet, or damaged: then nothing here is provably ours
        return {}
    return data if isinstance(data, dict) else {}


def _identity(path: Path) -> dict | None:
    try:
        st = os.lstat(path)
    except FileNotFoundError:
        return None
    if not stat.S_ISREG(st.st_mode):
        return None
    return {"size": st.st_size, "mtime_ns": st.st_mtime_ns, "inode": st.st_ino}


def _recorded(path: Path) -> dict | None:
    """The ledger's entry for `path` if the file there is still the one download() wrote."""
    entry = _ledger(path.parent).get(path.name)
    now = _identity(path)
    if not isinstance(entry, dict) or now is None:
        return None
    return entry if all(entry.get(k) == v for k, v in now.items()) else None


def _remember(dest: Path, url: str) -> None:
    _record(dest, {"url": url, **_identity(dest)})


def _record(path: Path, entry: dict | None) -> None:
    from membench.util.files import atomic_write_json

    ledger = _ledger(path.parent)
    if entry is None and path.name not in ledger:
        return
    if entry is None:
        del ledger[path.name]
    else:
        ledger[path.name] = entry
    atomic_write_json(path.parent / LEDGER, ledger)


@contextlib.contextmanager
def _folder_lock(folder: Path):
    from membench.util.files import file_lock

    def say():
        print(f"membench: waiting for another download into {folder} to finish", file=sys.stderr)

    with file_lock(folder / LOCK, wait=True, on_busy=say):
        yield


# ---- HTTP ------------------------------------------------------------------------------------

class _CutOff(Exception):
    def __init__(self, have: int, total: int | None, reason: str, retry: bool = True):
        super().__init__(reason)
        self.have, self.total, self.reason, self.retry = have, total, reason, retry


def _transfer_http(url: str, part: Path, progress: bool, retries: int, limits: _Limits) -> None:
    attempt = 0
    while True:
        try:
            return _fetch(url, part, progress, limits)
        except _CutOff as exc:
            attempt += 1
            if attempt > retries or not exc.retry:
                of = f" of {exc.total:,}" if exc.total else ""
                raise DownloadError(f"download of {url} stopped after {exc.have:,}{of} bytes ({exc.reason}); "
                                    "run the same command again to resume", part) from None


def _fetch(url: str, part: Path, progress: bool, limits: _Limits) -> None:
    """One HTTP request appending to `part` (Range from its size); _CutOff when the
    transfer stops early, DownloadError when it cannot start."""
    have = part.stat().st_size if part.is_file() else 0
    response = _open(url, part, have, limits.timeout)
    if response is None:  # nothing left to send: the part is already complete
        return
    with response:
        if response.status == 206:
            if _range_start(response.headers.get("Content-Range")) != have:  # another range: start again
                response.close()
                part.unlink()
                return _fetch(url, part, progress, limits)
            mode = "ab"
        else:  # 200: the server ignored Range (or there was nothing yet)
            have, mode = 0, "wb"
        length = response.headers.get("Content-Length")
        total = have + int(length) if length and length.isdigit() else None
        with open(part, mode) as f, _bar(progress, _dest_of(part).name, total, have) as advance:
            got = _copy(response, f, have, total, advance, limits)
    if total is not None and got < total:
        raise _CutOff(got, total, "connection closed early")


def _open(url: str, part: Path, have: int, timeout: float):
    import urllib.error
    import urllib.request

    from membench import __version__

    request = urllib.request.Request(url, headers={"User-Agent": f"membench/{__version__}"})
    if have:
        request.add_header("Range", f"bytes={have}-")
    try:
        return urllib.request.urlopen(request, timeout=timeout)
    except urllib.error.HTTPError as exc:
        if exc.code == 416 and have:
            return None
        raise DownloadError(f"cannot download {url} (HTTP {exc.code} {exc.reason}); "
                            f"{by_hand(url, _dest_of(part))}") from None
    except (urllib.error.URLError, OSError) as exc:
        reason = getattr(exc, "reason", None) or exc
        raise DownloadError(f"cannot download {url} ({reason}); {by_hand(url, _dest_of(part))}") from None


def _copy(response, f, got: int, total: int | None, advance, limits: _Limits) -> int:
    """Copy the body to `f` as it arrives; _CutOff (with every byte received written) when
    the connection drops, goes silent for `timeout`, or trickles below `min_rate`."""
    import http.client

    window_start, window_from = time.monotonic(), got
    while True:
        try:
            chunk = response.read1(CHUNK)  # what has arrived, not a full CHUNK
        except http.client.IncompleteRead as exc:  # a chunked transfer cut off
            f.write(exc.partial)
            raise _CutOff(got + len(exc.partial), total, "connection closed early") from None
        except (OSError, http.client.HTTPException) as exc:  # reset, timeout
            raise _CutOff(got, total, type(exc).__name__) from None
        if not chunk:
            return got
        f.write(chunk)
        got += len(chunk)
        advance(len(chunk))
        elapsed = time.monotonic() - window_start
        if elapsed >= limits.rate_window:
            if got - window_from < limits.min_rate * elapsed:
                raise _CutOff(got, total, f"slower than {limits.min_rate:,.0f} bytes/s for {elapsed:.0f} s",
                              retry=False)
            window_start, window_from = time.monotonic(), got


def _dest_of(part: Path) -> Path:
    return part.with_name(part.name[:-len(PART_SUFFIX)])


def _range_start(content_range: str | None) -> int | None:
    # "bytes 100-999/1000"
    try:
        return int(content_range.split()[1].split("-")[0])
    except (AttributeError, IndexError, ValueError):
        return None


@contextlib.contextmanager
def _bar(show: bool, name: str, total: int | None, done: int):
    if not show:
        yield lambda n: None
        return
    from rich.console import Console
    from rich.progress import BarColumn, DownloadColumn, Progress, TextColumn, TimeRemainingColumn, TransferSpeedColumn

    with Progress(TextColumn("{task.description}"), BarColumn(), DownloadColumn(), TransferSpeedColumn(),
                  TimeRemainingColumn(), console=Console(stderr=True), transient=False) as bar:
        task = bar.add_task(name, total=total, completed=done)
        yield lambda n: bar.advance(task, n)


# ---- checks ----------------------------------------------------------------------------------

def file_sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while chunk := f.read(CHUNK):
            h.update(chunk)
    return h.hexdigest()


def git_blob_id(path: Path) -> str:
    """The object id git gives the file's content (sha1 of 'blob <size>\\0' + content)."""
    h = hashlib.sha1(f"blob {Path(path).stat().st_size}\0".encode())
    with open(path, "rb") as f:
        while chunk := f.read(CHUNK):
            h.update(chunk)
    return h.hexdigest()


def _problem(path: Path, dest: Path, sha256: str | None, git_blob_sha1: str | None) -> str | None:
    """Why the file at `path` (to become `dest`) is not the one expected, or None."""
    if not dest.name.lower().endswith(_WEB_PAGE_SUFFIXES) and looks_like_web_page(path):
        return "it is a web page, not the file (a sign-in, quota or error page?)"
    if sha256:
        got = file_sha256(path)
        # torch hub file names carry only a prefix of the sha256 (resnet50-0676ba61.pth)
        if not got.startswith(sha256.lower()):
            return f"its sha256 is {got}, not {sha256}"
    if git_blob_sha1:
        got = git_blob_id(path)
        if got != git_blob_sha1.lower():
            return f"its git object id is {got}, not {git_blob_sha1}"
    return None


def looks_like_web_page(path: Path) -> bool:
    """A web page (a sign-in, consent, quota or error page served with status 200) where an
    archive or a data file was expected."""
    with open(path, "rb") as f:
        head = f.read(1024).lstrip(b"\xef\xbb\xbf \t\r\n").lower()
    return head.startswith((b"<!doctype html", b"<html")) or (head.startswith(b"<") and b"<html" in head)
