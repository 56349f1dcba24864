"""JSON records that carry their own checksum, so that a changed value is noticed when read.

membench reads back JSON it wrote: a finished job's result.json (its row and predictions go
into the leaderboard again on --resume), a stage's stage.json (its outcome goes into the
row), a run's runs/<run id>.json (the report's labels and columns). A flipped bit or an
edited number there would flow into a table as if measured. `seal` adds

    "checksum": "sha256:<hex>"

over the record's canonical JSON (keys sorted, compact, as it reads back), and
`read_sealed` recomputes it: a mismatch, or a file that is not a JSON object, is one
MembenchError naming the file. Records written before membench sealed them (no
"checksum") are read as they are.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

from membench.errors import MembenchError

KEY = "checksum"


def _digest(record: dict) -> str:
    # through JSON and back first: the digest is of what a reader will load (Paths as
    # strings, tuples as lists), whatever Python objects the writer held
    canonical = json.loads(json.dumps(record, default=str))
    text = json.dumps(canonical, sort_keys=True, separators=(",", ":"))
    return "sha256:" + hashlib.sha256(text.encode("utf-8")).hexdigest()


def seal(record: dict) -> dict:
    """`record` with its checksum (any earlier one replaced)."""
    plain = {k: v for k, v in record.items() if k != KEY}
    return {**plain, KEY: _digest(plain)}


def read_sealed(path: Path, what: str, fix: str) -> dict:
    """The JSON object in `path`, its checksum verified and removed. `what` names the file
    in a message ("finished job's result"), `fix` says what to do about damage."""
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise MembenchError(f"the {what} is missing; {fix}", path) from None
    except (OSError, UnicodeDecodeError) as exc:
        raise MembenchError(f"cannot read the {what} ({getattr(exc, 'strerror', None) or exc}); {fix}",
                            path) from None
    try:
        record = json.loads(text)
    except ValueError as exc:
        raise MembenchError(f"the {what} is not valid JSON ({getattr(exc, 'msg', exc)}): damaged; {fix}", path,
                            getattr(exc, "lineno", None)) from None
    if not isinstance(record, dict):
        raise MembenchError(f"the {what} is not a JSON object: damaged; {fix}", path)
    recorded = record.pop(KEY, None)
    if recorded is not None and recorded != _digest(record):
        raise MembenchError(f"the {what} was changed or damaged since membench wrote it (its checksum does not "
                            f"match its content); {fix}", path)
    return record
