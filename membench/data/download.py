"""Resumable downloads: one call for weights, datasets and anything a plugin publishes.

    from membench.data.download import download
    path = download(url, dest, sha256="...", progress=True)   # -> Path of the finished file

- Resume: the bytes arrive in `dest.part`; an interrupted download (connection lost,
  Ctrl-C, a killed process) continues from there with an HTTP Range request the next
  time, and within one call after a lost connection (`retries`).
- Checksum: with `sha256` (or `git_blob_sha1`, the object id git and GitHub publish for
  every file of a commit) the finished file is verified; a mismatch removes the partial
  file and is an error, so nothing corrupt is ever left at `dest`.
- Offline (no network, or MEMBENCH_OFFLINE=1): a one-line error naming the URL and the
  path where the file can be put by hand.
- Progress: a rich bar on stderr (size, speed, time left) when `progress` is true.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import shutil
import struct
import tarfile
import tempfile
import zipfile
from pathlib import Path

from membench.errors import MembenchError

OFFLINE_ENV = "MEMBENCH_OFFLINE"
CHUNK = 1 << 20
PART_SUFFIX = ".part"


class DownloadError(MembenchError):
    """A download that could not happen or complete (offline, HTTP error, cut off)."""


def offline() -> bool:
    return os.environ.get(OFFLINE_ENV, "").strip().lower() not in ("", "0", "false", "no")


def by_hand(url: str, dest: Path) -> str:
    return f"download it by hand and put it at {dest}"


def download(url: str, dest, sha256: str | None = None, progress: bool = True, *,
             git_blob_sha1: str | None = None, retries: int = 3, timeout: float = 30.0) -> Path:
    """Fetch `url` to `dest` (resumable, verified); returns `dest`.

    An existing `dest` is kept when it passes the checksum (or when there is none), so
    running the same command twice downloads nothing twice.
    """
    dest = Path(dest).expanduser()
    if dest.is_file():
        problem = _checksum_problem(dest, sha256, git_blob_sha1)
        if problem is None:
            return dest
        raise MembenchError(f"already exists but {problem}; delete it to download {url} again", dest)
    if offline():
        raise DownloadError(f"cannot download {url} (offline: {OFFLINE_ENV} is set); {by_hand(url, dest)}")
    dest.parent.mkdir(parents=True, exist_ok=True)
    part = dest.with_name(dest.name + PART_SUFFIX)
    attempt = 0
    while True:
        try:
            _fetch(url, part, progress, timeout)
            break
        except _CutOff as exc:
            attempt += 1
            if attempt > retries:
                raise DownloadError(f"download of {url} stopped after {exc.have:,} of "
                                    f"{exc.total or '?'} bytes ({exc.reason}); run the same command "
                                    "again to resume", part) from None
    problem = _checksum_problem(part, sha256, git_blob_sha1)
    if problem is not None:
        part.unlink()
        raise DownloadError(f"download of {url} refused: {problem} (the file was removed; run again, "
                            f"or {by_hand(url, dest)} if the source changed)")
    os.replace(part, dest)
    return dest


class _CutOff(Exception):
    def __init__(self, have: int, total: int | None, reason: str):
        super().__init__(reason)
        self.have, self.total, self.reason = have, total, reason


def _fetch(url: str, part: Path, progress: bool, timeout: float) -> None:
    """One HTTP request appending to `part` (Range from its size); _CutOff when the
    transfer stops early, DownloadError when it cannot start."""
    import urllib.error
    import urllib.request

    from membench import __version__

    have = part.stat().st_size if part.is_file() else 0
    request = urllib.request.Request(url, headers={"User-Agent": f"membench/{__version__}"})
    if have:
        request.add_header("Range", f"bytes={have}-")
    try:
        response = urllib.request.urlopen(request, timeout=timeout)
    except urllib.error.HTTPError as exc:
        if exc.code == 416 and have:  # nothing left to send: the part is already complete
            return
        raise DownloadError(f"cannot download {url} (HTTP {exc.code} {exc.reason}); "
                            f"{by_hand(url, _dest_of(part))}") from None
    except (urllib.error.URLError, OSError) as exc:
        reason = getattr(exc, "reason", None) or exc
        raise DownloadError(f"cannot download {url} ({reason}); "
                            f"{by_hand(url, _dest_of(part))}") from None
    with response:
        length = response.headers.get("Content-Length")
        if response.status == 206:
            start = _range_start(response.headers.get("Content-Range"))
            if start != have:  # a server that answers another range: start again
                response.close()
                part.unlink()
                return _fetch(url, part, progress, timeout)
            mode = "ab"
        else:  # 200: the server ignored Range (or there was nothing yet)
            have, mode = 0, "wb"
        total = have + int(length) if length and length.isdigit() else None
        with open(part, mode) as f, _bar(progress, _dest_of(part).name, total, have) as advance:
            got = have
            try:
                while chunk := response.read(CHUNK):
                    f.write(chunk)
                    got += len(chunk)
                    advance(len(chunk))
            except (OSError, TimeoutError) as exc:  # connection reset, timeout, IncompleteRead
                f.flush()
                raise _CutOff(got, total, type(exc).__name__) from None
    if total is not None and got < total:
        raise _CutOff(got, total, "connection closed early")


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
    from rich.progress import (BarColumn, DownloadColumn, Progress, TextColumn, TimeRemainingColumn,
                               TransferSpeedColumn)

    with Progress(TextColumn("{task.description}"), BarColumn(), DownloadColumn(), TransferSpeedColumn(),
                  TimeRemainingColumn(), console=Console(stderr=True), transient=False) as bar:
        task = bar.add_task(name, total=total, completed=done)
        yield lambda n: bar.advance(task, n)


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


def _checksum_problem(path: Path, sha256: str | None, git_blob_sha1: str | None) -> str | None:
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


# ---- unpacking ---------------------------------------------------------------------------

def extract(archive: Path, into: Path) -> Path:
    """Unpack a .zip or .tar(.gz) into `into`, refusing members that would land outside it.
    Unpacks into a temporary directory next to `into` first, so a killed extraction leaves
    no half-filled target."""
    archive, into = Path(archive), Path(into)
    into.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(dir=into.parent, prefix=f".{into.name}.unpack."))
    try:
        if zipfile.is_zipfile(archive):
            with zipfile.ZipFile(archive) as z:
                for name in z.namelist():
                    _inside(tmp, name, archive)
                z.extractall(tmp)
        elif tarfile.is_tarfile(archive):
            with tarfile.open(archive) as t:  # one streaming pass (a .tar.gz has no index)
                for member in t:
                    _inside(tmp, member.name, archive)
                    if member.issym() or member.islnk():
                        _inside(tmp, str(Path(member.name).parent / member.linkname), archive)
                    t.extract(member, tmp, **({"filter": "data"} if hasattr(tarfile, "data_filter") else {}))
        else:
            raise MembenchError("not a zip or tar archive (damaged download? delete it and run again)", archive)
        into.mkdir(parents=True, exist_ok=True)
        _merge(tmp, into)
    except (zipfile.BadZipFile, tarfile.TarError, EOFError) as exc:
        raise MembenchError(f"cannot unpack ({exc}); delete it and run again", archive) from None
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return into


def _merge(src: Path, dst: Path) -> None:
    """Move the tree under src into dst, merging folders that exist in both."""
    for child in src.iterdir():
        target = dst / child.name
        if target.is_dir() and child.is_dir():
            _merge(child, target)
        else:
            os.replace(child, target)


def _inside(root: Path, name: str, archive: Path) -> None:
    target = (root / name).resolve()
    if not target.is_relative_to(root.resolve()):
        raise MembenchError(f"refusing archive member {name!r}: it would be written outside the target", archive)


# ---- split ("spanned") zip archives: images.z01 + images.zip ---------------------------------

_SPAN_MARKER = b"PK\x07\x08"
_EOCD = b"PK\x05\x06"
_CDH = b"PK\x01\x02"


def join_split_zip(segments: list[Path], out: Path) -> Path:
    """Join a split zip (segments in order: name.z01, name.z02, ..., name.zip) into one
    ordinary zip at `out`, as `zip -s- name.zip -O out.zip` does: the segments are
    concatenated and the central directory's per-segment offsets made absolute."""
    segments = [Path(s) for s in segments]
    sizes = [s.stat().st_size for s in segments]
    with open(segments[0], "rb") as f:
        marker = len(_SPAN_MARKER) if f.read(4) == _SPAN_MARKER else 0
    starts = [sum(sizes[:i]) - marker for i in range(len(sizes))]  # segment start in `out`
    manual = f"join it by hand: zip -s- {segments[-1].name} -O {out.name}"
    last = segments[-1].read_bytes()[-(22 + 0xFFFF):]
    at = last.rfind(_EOCD)
    if at < 0:
        raise MembenchError(f"no zip directory at the end of the last segment; {manual}", segments[-1])
    (_, _, cd_disk, _, n_total, cd_size, cd_offset, comment_len) = struct.unpack("<4sHHHHIIH", last[at:at + 22])
    if 0xFFFF in (cd_disk, n_total) or 0xFFFFFFFF in (cd_size, cd_offset):
        raise MembenchError(f"a zip64 split archive is not supported here; {manual}", segments[-1])
    cd_start = starts[cd_disk] + cd_offset
    tmp = out.with_name(out.name + PART_SUFFIX)
    with open(tmp, "wb") as w:
        for i, seg in enumerate(segments):
            with open(seg, "rb") as r:
                if i == 0:
                    r.seek(marker)
                shutil.copyfileobj(r, w, CHUNK)
    with open(tmp, "r+b") as f:
        f.seek(cd_start)
        cd = bytearray(f.read(cd_size))
        pos = 0
        for _ in range(n_total):
            if cd[pos:pos + 4] != _CDH:
                raise MembenchError(f"damaged zip directory; {manual}", segments[-1])
            name_len, extra_len, comment, disk = struct.unpack_from("<HHHH", cd, pos + 28)
            (offset,) = struct.unpack_from("<I", cd, pos + 42)
            if disk == 0xFFFF or offset == 0xFFFFFFFF or disk >= len(starts):
                raise MembenchError(f"a zip64 split archive is not supported here; {manual}", segments[-1])
            struct.pack_into("<H", cd, pos + 34, 0)
            struct.pack_into("<I", cd, pos + 42, starts[disk] + offset)
            pos += 46 + name_len + extra_len + comment
        f.seek(cd_start)
        f.write(cd)
        f.write(struct.pack("<4sHHHHIIH", _EOCD, 0, 0, n_total, n_total, cd_size, cd_start, 0))
        f.truncate()
    os.replace(tmp, out)
    return out
