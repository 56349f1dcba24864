"""Which files a membench command may replace in a directory the user named (`report --out`,
`predict --html`, `explain --out`): only those it wrote there before, listed in
DIR/.membench-<command>.json; never a user's file, never through a link. Checked before any
work, recorded after (also after a command that failed half-way)."""

from __future__ import annotations

import json
import os
from pathlib import Path

from membench.errors import MembenchError
from membench.util.files import atomic_write_json, refuse_links


def manifest(command: str) -> str:
    return f".membench-{command}.json"


def written(out: Path, command: str) -> set[str]:
    """The names (relative to OUT) `membench COMMAND` lists as its own in OUT."""
    path = Path(out) / manifest(command)
    try:
        found = json.loads(path.read_text(encoding="utf-8"))
        if not path.is_symlink() and found.get("written_by") == f"membench {command}":
            return {str(n) for n in found["files"]}
    except (OSError, ValueError, AttributeError, KeyError, TypeError):
        pass
    return set()


def check(out: Path, names, command: str, own: set[str] | None = None) -> list[str]:
    """Refuse, in one line naming it, a file among NAMES (relative to OUT) that exists and is
    not `membench COMMAND`'s own (`own`: those names, default the manifest's), or a link on
    the way to one. Returns what `record` lists once the files exist."""
    out = Path(out)
    if os.path.lexists(out) and not out.is_dir():
        raise MembenchError(f"membench {command} writes its files into a directory, and this is not one: choose "
                            "a directory (it is made if missing)", out)
    own = written(out, command) if own is None else own
    for name in names:
        path = out / name
        refuse_links(path, out)
        if os.path.lexists(path) and name not in own:
            raise MembenchError(f"membench {command} did not write this file and never replaces one it did not "
                                "write: move it away, or choose another directory", path)
    return sorted(set(names) | own)


def record(out: Path, names, command: str) -> None:
    """List in OUT the files of NAMES that exist now, with those listed before."""
    out = Path(out)
    files = sorted(written(out, command) | {n for n in names if (out / n).is_file()})
    if files:
        atomic_write_json(out / manifest(command), {"written_by": f"membench {command}", "files": files})
