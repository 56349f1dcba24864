"""Unpacking downloaded archives without trusting them, and installing files without
overwriting the user's.

    from membench.data.archives import extract, install_files
    extract(archive, into)              # .zip / .tar(.gz) -> into/, all or nothing

- Every member must land inside the target; only files and folders are unpacked (a link,
  even one inside the target, is refused: once a subtree is moved elsewhere, a relative
  link can point anywhere).
- Size: the members may hold at most UNPACK_RATIO times the archive's size (a zip bomb
  holds thousands of times), or `max_size` bytes when given, and never more than the free
  disk space.
- Nothing of the user's is overwritten: a file already at a target is kept when it holds
  the same bytes, else nothing moves and the error names it; no symbolic link in the
  target is followed.
- Split ("spanned") zips (name.z01 + name.zip) are joined as `zip -s-` would.
"""

from __future__ import annotations

import filecmp
import os
import shutil
import struct
import tarfile
import tempfile
import zipfile
import zlib
from pathlib import Path

from membench.errors import MembenchError

UNPACK_RATIO = 100  # images and weights compress little; text about 10x; bombs 1000x and more
UNPACK_FLOOR = 64 << 20  # a small archive may always unpack this much
_CHUNK = 1 << 20
_DAMAGED = (zipfile.BadZipFile, tarfile.TarError, EOFError, zlib.error)


def extract(archive: Path, into: Path, max_size: int | None = None) -> Path:
    """Unpack a .zip or .tar(.gz) into `into` (see the module's rules). Unpacks into a
    temporary directory next to `into` first, so a refused or killed extraction leaves no
    half-filled target."""
    archive, into = Path(archive), Path(into)
    into.parent.mkdir(parents=True, exist_ok=True)
    budget = unpack_budget(archive, into.parent, max_size)
    tmp = Path(tempfile.mkdtemp(dir=into.parent, prefix=f".{into.name}.unpack."))
    try:
        if zipfile.is_zipfile(archive):
            _unzip(archive, tmp, budget)
        elif tarfile.is_tarfile(archive):
            _untar(archive, tmp, budget)
        else:
            raise MembenchError("not a zip or tar archive (a damaged download?)", archive)
        into.mkdir(parents=True, exist_ok=True)
        move_tree(tmp, into)
    except _DAMAGED as exc:
        raise MembenchError(f"cannot unpack ({exc}): a damaged or incomplete archive", archive) from None
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return into


def unpack_budget(archive: Path, folder: Path | None = None, max_size: int | None = None) -> "_Budget":
    """What `archive` may unpack to (into `folder`, whose free space counts; None when the
    members are read into memory): call `.add(n)` for each member, before reading it."""
    return _Budget(Path(archive), folder, max_size)


class _Budget:
    def __init__(self, archive: Path, folder: Path | None, max_size: int | None):
        self.archive, self.folder, self.used, self.given = archive, folder, 0, max_size is not None
        self.size = archive.stat().st_size
        self.limit = max_size if self.given else max(UNPACK_RATIO * self.size, UNPACK_FLOOR)
        self.free = shutil.disk_usage(folder).free if folder is not None else None

    def add(self, n: int) -> None:
        self.used += n
        if self.used > self.limit:
            why = "given" if self.given else f"{UNPACK_RATIO} times the archive's size, at least {UNPACK_FLOOR >> 20} MiB"
            raise MembenchError(f"refusing to unpack: its members hold more than {self.limit:,} bytes (the limit: "
                                f"{why}); a zip bomb, or not the archive expected", self.archive)
        if self.free is not None and self.used > self.free:
            raise MembenchError(f"unpacking {self.archive.name} needs more than {self.used:,} bytes, only "
                                f"{self.free:,} bytes free here: free some space, then run the same command "
                                "again", self.folder)


def _unzip(archive: Path, tmp: Path, budget) -> None:
    with zipfile.ZipFile(archive) as z:
        infos = z.infolist()
        for info in infos:  # every check before the first byte is written
            _inside(tmp, info.filename, archive)
            budget.add(info.file_size)  # zipfile stops at the declared size (and checks the CRC)
        z.extractall(tmp)


def _untar(archive: Path, tmp: Path, budget) -> None:
    with tarfile.open(archive) as t:  # one streaming pass (a .tar.gz has no index)
        for member in t:
            _inside(tmp, member.name, archive)
            if not (member.isfile() or member.isdir()):
                kind = "a symbolic link" if member.issym() else "a hard link" if member.islnk() else "not a file"
                raise MembenchError(f"refusing archive member {member.name!r}: {kind} (membench unpacks "
                                    "only files and folders)", archive)
            budget.add(member.size)
            t.extract(member, tmp, **({"filter": "data"} if hasattr(tarfile, "data_filter") else {}))


def _inside(root: Path, name: str, archive: Path) -> None:
    target = (root / name).resolve()
    if not target.is_relative_to(root.resolve()):
        raise MembenchError(f"refusing archive member {name!r}: it would be written outside the target", archive)


# ---- installing files without overwriting the user's ----------------------------------------

def move_tree(src: Path, dst: Path) -> None:
    """Move every file under `src` to the same place under `dst` (install_files' rules)."""
    pairs, folders = [], []
    for top, dirs, files in os.walk(src):  # never follows links
        rel = Path(top).relative_to(src)
        folders += [dst / rel / d for d in dirs]
        pairs += [(Path(top) / f, dst / rel / f) for f in files]
    install_files(pairs, dst, folders=folders)


def install_files(pairs: list[tuple[Path, Path]], root: Path, *, copy: bool = False,
                  folders: list[Path] = ()) -> None:
    """Move (or copy) each (source, target), targets under `root`. A target that already
    exists is kept when it holds the same bytes; any other (a different file, a symbolic
    link, a link on the way under `root`) is an error naming it, before anything moves."""
    root = Path(root)
    todo = []
    for source, target in pairs:
        _check_path(target, root)
        if os.path.lexists(target):
            if target.is_symlink() or not target.is_file() or not filecmp.cmp(source, target, shallow=False):
                _refuse(target, source)
            continue  # the same bytes: nothing to do
        todo.append((source, target))
    for folder in folders:
        _check_path(folder / "x", root)
    for folder in folders:
        folder.mkdir(parents=True, exist_ok=True)
    for source, target in todo:
        target.parent.mkdir(parents=True, exist_ok=True)
        _place(source, target, copy)


def _check_path(target: Path, root: Path) -> None:
    """No symbolic link and no file on the way from `root` down to `target`'s folder."""
    here = root
    for part in target.parent.relative_to(root).parts:
        here = here / part
        if here.is_symlink() or (os.path.lexists(here) and not here.is_dir()):
            _refuse(here, None)


def _refuse(target: Path, source: Path | None) -> None:
    what = ("is a symbolic link" if target.is_symlink() else
            "is in the way" if source is None else f"already exists and differs from the new {source.name}")
    raise MembenchError(f"{what}; membench never overwrites a file it did not create (nor writes through a "
                        "link): move it away, or install into an empty directory", target)


def _place(source: Path, target: Path, copy: bool) -> None:
    """Move or copy without replacing anything that appeared at `target` meanwhile: a
    hard link fails if the name exists (os.replace would overwrite it)."""
    if not copy:
        try:
            os.link(source, target)
            os.unlink(source)
            return
        except FileExistsError:
            _refuse(target, source)
        except OSError:
            pass  # another file system, or one without hard links: copy, then rename
    fd, name = tempfile.mkstemp(dir=target.parent, prefix=f".{target.name}.", suffix=".tmp")  # new: ours
    os.close(fd)
    tmp = Path(name)
    shutil.copyfile(source, tmp)
    try:
        os.link(tmp, target)
    except FileExistsError:
        _refuse(target, source)
    except OSError:
        if os.path.lexists(target):
            _refuse(target, source)
        os.replace(tmp, target)
    finally:
        if tmp.exists():
            tmp.unlink()
    if not copy:
        os.unlink(source)


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
    tmp = out.with_name(out.name + ".part")
    with open(tmp, "wb") as w:
        for i, seg in enumerate(segments):
            with open(seg, "rb") as r:
                if i == 0:
                    r.seek(marker)
                shutil.copyfileobj(r, w, _CHUNK)
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
