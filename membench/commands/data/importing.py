"""`membench data import NAME SOURCE... [--to DIR]`: install a dataset the user downloaded
by hand (a source that needs a form, a password or a licence), then check it.

- One folder and no --to: nothing is copied; $MEMBENCH_DATA/NAME becomes a link to it, so
  `--dataset NAME` finds it (the folder stays where it is and membench never writes in it).
- Otherwise DIR (default $MEMBENCH_DATA/NAME, which must be empty or absent) receives each
  SOURCE: an archive (zip, tar) is unpacked into it, a file is copied, a folder is linked.
  DIR/.membench-import.json records what came from where (with each file's sha256).
The dataset's plugin finds its files below DIR whatever folders the archives add.
"""

from __future__ import annotations

import os
import shutil
import tarfile
import tempfile
import zipfile
from pathlib import Path

from membench.errors import MembenchError

MARKER = ".membench-import.json"


def add_parser(dsub) -> None:
    import argparse

    p = dsub.add_parser(
        "import", help="install a dataset downloaded by hand (archive, files or folder), then check it",
        formatter_class=argparse.RawDescriptionHelpFormatter,
        description=__doc__.split("\n", 2)[2].strip(),
        epilog="examples:\n"
               "  membench data import memcat ~/Downloads/MemCat.zip\n"
               "  membench data import things ~/THINGS/THINGS_Memorability_Scores.csv ~/THINGS/object_images\n"
               "  membench data import figrim ~/data/figrim        (a folder: linked, not copied)")
    p.add_argument("name", metavar="NAME", help="a registered dataset (see `membench datasets`)")
    p.add_argument("sources", nargs="+", type=Path, metavar="SOURCE", help="archive, file or folder")
    p.add_argument("--to", type=Path, metavar="DIR",
                   help="install into DIR (default: $MEMBENCH_DATA/NAME, i.e. $MEMBENCH_HOME/data/NAME)")
    p.set_defaults(func=cmd_import)


def cmd_import(args) -> int:
    from membench import registry
    from membench.commands.data.download import check_installed
    from membench.data.datasets import data_home

    spec = registry.get_dataset(args.name)
    if not spec.needs_path:
        raise MembenchError(f"dataset {spec.name!r} is built in: there is nothing to import")
    sources = [Path(s).expanduser() for s in args.sources]
    for src in sources:
        if not src.exists():
            raise MembenchError("not found", src)
    if len(sources) == 1 and sources[0].is_dir() and args.to is None:
        link = data_home() / spec.name
        if link.exists() or link.is_symlink():
            raise MembenchError(f"already installed (delete {link} to import again)", link)
        link.parent.mkdir(parents=True, exist_ok=True)
        link.symlink_to(sources[0].resolve(), target_is_directory=True)
        print(f"linked {link} -> {sources[0].resolve()} (nothing copied; membench never writes there)")
        return check_installed(spec.name, link)
    to = (args.to or data_home() / spec.name).expanduser()
    if to.is_symlink() or (to.exists() and (not to.is_dir() or any(to.iterdir()))):
        raise MembenchError("already holds files; import into an empty or new directory (--to DIR)", to)
    _check_sources(sources)
    # Filled beside DIR and renamed into place: a failed import leaves nothing behind.
    to.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(dir=to.parent, prefix=f".{to.name}.import-"))  # new: nothing of anyone's
    try:
        record = install(sources, staging)
        from membench.util.files import atomic_write_json

        atomic_write_json(staging / MARKER, {"dataset": spec.name, "sources": record})
        if to.is_dir():
            to.rmdir()  # empty, checked above
        os.replace(staging, to)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return check_installed(spec.name, to)


ARCHIVE_SUFFIXES = (".zip", ".tar", ".tar.gz", ".tgz", ".tar.bz2", ".tar.xz")


def _check_sources(sources: list[Path]) -> None:
    """Before anything is written: an HTML page saved in place of the data (a login or
    consent page) or an archive that cannot be read is reported; the user's file is never
    removed."""
    from membench.data.download import looks_like_web_page

    for src in sources:
        if not src.is_file() or zipfile.is_zipfile(src) or tarfile.is_tarfile(src):
            continue
        if looks_like_web_page(src):
            raise MembenchError("is an HTML page, not the data (saved from a login or consent page?); download "
                                "the file itself", src)
        if src.name.lower().endswith(ARCHIVE_SUFFIXES):
            raise MembenchError("cannot be read as a zip or tar archive (a damaged or incomplete download?)", src)


def install(sources: list[Path], to: Path) -> list[dict]:
    """Unpack, copy or link each source into `to`; what was done, for the record."""
    from membench.data.download import extract, file_sha256

    to.mkdir(parents=True, exist_ok=True)
    record = []
    for src in sources:
        entry = {"path": str(src.resolve())}
        if src.is_dir():
            target = _free(to / src.name)
            target.symlink_to(src.resolve(), target_is_directory=True)
            entry["linked_as"] = target.name
        else:
            entry["sha256"] = file_sha256(src)
            if zipfile.is_zipfile(src) or tarfile.is_tarfile(src):
                print(f"unpacking {src} into {to}")
                extract(src, to)
                entry["unpacked"] = True
            else:
                shutil.copy2(src, _free(to / src.name))
                entry["copied_as"] = src.name
        record.append(entry)
    return record


def _free(target: Path) -> Path:
    if target.exists() or target.is_symlink():
        raise MembenchError("two sources have this name; rename one", target)
    return target
