"""Reading datasets in the LaMem layout, strictly.

    ROOT/images/<name>.jpg
    ROOT/splits/{train,val,test}_<k>.txt    lines "<image file name> <score>"

The same image has different scores in different split files (disjoint groups of
observers), so every split is scored from its own files. Other datasets (demo, LNSIM,
CSV) write this layout and reuse this reader.
"""

from __future__ import annotations

import hashlib
import math
import re
from dataclasses import dataclass, field
from pathlib import Path

from membench.errors import MembenchError
from membench.spec import Sample, Split

PARTS = ("train", "val", "test")
# What a user who points --data at the wrong place needs to read (one line).
LAYOUT_HINT = ("expected the LaMem layout DIR/images/ + DIR/splits/{train,val,test}_K.txt "
               "(`membench data download lamem --to DIR` fetches LaMem; --dataset lnsim or csv read "
               "other layouts; --data demo uses built-in synthetic data)")
_SPLIT_FILE = re.compile(r"^(train|val|test)_(\d+)\.txt$")


def read_split_file(path: Path, images_dir: Path, errors: list[MembenchError] | None = None) -> tuple[Sample, ...]:
    """Parse one split file; any malformed line is an error naming file:line.

    With `errors` (a list), problems are appended to it instead of raised and the valid
    lines are returned, so a checker can report every bad line at once.
    """
    def fail(message: str, line: int | None = None) -> None:
        error = MembenchError(message, path, line)
        if errors is None:
            raise error
        errors.append(error)

    try:
        raw = path.read_bytes()
    except OSError as exc:
        fail(f"cannot read split file ({exc.strerror})")
        return ()
    try:
        text = raw.decode("utf-8-sig")  # -sig: Notepad and Excel start files with a BOM
    except UnicodeDecodeError as exc:
        line = raw[:exc.start].count(b"\n") + 1
        fail("split file is not UTF-8 text", line)
        return ()
    samples: list[Sample] = []
    seen: dict[str, int] = {}
    for number, line in enumerate(text.splitlines(), start=1):
        line = line.strip()
        if not line:
            continue
        fields = line.split()
        if len(fields) != 2:
            fail(f"expected '<image> <score>', got {line[:60]!r}", number)
            continue
        name, score_text = fields
        try:
            score = float(score_text)
        except ValueError:
            fail(f"score {score_text!r} is not a number", number)
            continue
        if not math.isfinite(score) or not 0.0 <= score <= 1.0:
            fail(f"score {score_text} is outside [0, 1]", number)
            continue
        if name in seen:
            fail(f"image {name} listed twice (first on line {seen[name]})", number)
            continue
        if "/" in name or "\\" in name or name.startswith("."):
            fail(f"image name {name!r} must be a plain file name", number)
            continue
        seen[name] = number
        samples.append(Sample(name=name, path=images_dir / name, score=score))
    if not samples and not (errors and any(e.path == str(path) for e in errors)):
        fail("split file is empty")
    return tuple(samples)


@dataclass
class LamemLayout:
    """A dataset on disk in the LaMem layout. `name` is the dataset it holds."""

    root: Path
    name: str = "lamem"
    human_consistency: float | None = None
    problems: list[str] = field(default_factory=list)

    def __post_init__(self):
        self.root = Path(self.root)
        if not self.root.is_dir():
            raise MembenchError(f"data directory does not exist or is not a directory; {LAYOUT_HINT}", self.root)
        for sub in ("images", "splits"):
            if not (self.root / sub).is_dir():
                raise MembenchError(f"not a LaMem-layout directory: missing {sub}/; {LAYOUT_HINT}", self.root)

    @property
    def images_dir(self) -> Path:
        return self.root / "images"

    @property
    def splits_dir(self) -> Path:
        return self.root / "splits"

    @property
    def splits(self) -> tuple[int, ...]:
        """Split indices for which train, val and test files all exist."""
        found: dict[int, set[str]] = {}
        for p in self.splits_dir.iterdir():
            m = _SPLIT_FILE.match(p.name)
            if m:
                found.setdefault(int(m.group(2)), set()).add(m.group(1))
        return tuple(sorted(k for k, parts in found.items() if parts == set(PARTS)))

    def split_file(self, part: str, k: int) -> Path:
        return self.splits_dir / f"{part}_{k}.txt"

    def load_split(self, k: int) -> Split:
        return self._read_split(k, None)

    def split_problems(self, k: int) -> list[MembenchError]:
        """Every problem of split k's files (all bad lines, not only the first)."""
        errors: list[MembenchError] = []
        self._read_split(k, errors)
        return errors

    def _read_split(self, k: int, errors: list[MembenchError] | None) -> Split:
        files = {part: self.split_file(part, k) for part in PARTS}
        missing = [str(p) for p in files.values() if not p.is_file()]
        if missing:
            error = MembenchError(f"split {k} is incomplete: missing {', '.join(missing)}", self.root)
            if errors is None:
                raise error
            errors.append(error)
            files = {part: p for part, p in files.items() if p.is_file()}
        parts = {part: read_split_file(path, self.images_dir, errors) for part, path in files.items()}
        owner: dict[str, tuple[str, int]] = {}
        for part, samples in parts.items():
            for i, s in enumerate(samples):
                if s.name in owner:
                    error = MembenchError(f"image {s.name} is in both {owner[s.name][0]}_{k}.txt and "
                                          f"{part}_{k}.txt", files[part], _line_of(files[part], s.name))
                    if errors is None:
                        raise error
                    errors.append(error)
                owner.setdefault(s.name, (part, i))
        parts = {part: parts.get(part, ()) for part in PARTS}
        return Split(index=k, train=parts["train"], val=parts["val"], test=parts["test"])

    def fingerprint(self) -> str:
        """Hash of the split files' contents and the image list (names and sizes)."""
        h = hashlib.sha256()
        for p in sorted(self.splits_dir.glob("*.txt")):
            h.update(p.name.encode())
            h.update(p.read_bytes())
        for p in sorted(self.images_dir.iterdir()):
            h.update(f"{p.name}:{p.stat().st_size}".encode())
        return h.hexdigest()[:16]


def _line_of(path: Path, name: str) -> int | None:
    """The line of `path` listing image `name` (messages point at it)."""
    try:
        for number, line in enumerate(path.read_text(encoding="utf-8-sig").splitlines(), start=1):
            if line.split()[:1] == [name]:
                return number
    except (OSError, UnicodeDecodeError):
        pass
    return None


def incomplete_splits(splits_dir: Path) -> dict[int, list[str]]:
    """Split indices with some but not all of train_k/val_k/test_k.txt -> missing names."""
    if not splits_dir.is_dir():
        return {}
    found: dict[int, set[str]] = {}
    for p in splits_dir.iterdir():
        m = _SPLIT_FILE.match(p.name)
        if m:
            found.setdefault(int(m.group(2)), set()).add(m.group(1))
    return {k: [f"{part}_{k}.txt" for part in PARTS if part not in parts]
            for k, parts in sorted(found.items()) if parts != set(PARTS)}


def parse_splits(expr: str, available: tuple[int, ...], where: Path | str) -> list[int]:
    """`all` or a comma list like `1,3`; every named split must exist."""
    if expr.strip() == "all":
        if not available:
            raise MembenchError("no complete split (train_k/val_k/test_k.txt) found", where)
        partial = incomplete_splits(Path(where) / "splits")
        if partial:  # `all` must not quietly mean "all but the broken one"
            k, missing = next(iter(partial.items()))
            raise MembenchError(f"split {k} is incomplete: missing splits/{', splits/'.join(missing)}; fix it or "
                                f"choose splits with --splits {','.join(map(str, available))}", where)
        return list(available)
    wanted: list[int] = []
    for part in expr.split(","):
        part = part.strip()
        if not part.isdigit():
            raise MembenchError(f"--splits takes 'all' or numbers like 1,3; got {part!r}")
        k = int(part)
        if k not in available:
            names = [f"{p}_{k}.txt" for p in PARTS]
            splits_dir = Path(where) / "splits"
            if splits_dir.is_dir() and any((splits_dir / n).is_file() for n in names):
                names = [n for n in names if not (splits_dir / n).is_file()]
                what = f"split {k} is incomplete: missing splits/{', splits/'.join(names)}"
            else:
                what = f"split {k} not found (split files {', '.join(names)})"
            raise MembenchError(f"{what}; available: {list(available) or 'none'}", where)
        if k not in wanted:
            wanted.append(k)
    return wanted
