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
_SPLIT_FILE = re.compile(r"^(train|val|test)_(\d+)\.txt$")


def read_split_file(path: Path, images_dir: Path) -> tuple[Sample, ...]:
    """Parse one split file; any malformed line is an error naming file:line."""
    try:
        raw = path.read_bytes()
    except OSError as exc:
        raise MembenchError(f"cannot read split file ({exc.strerror})", path) from None
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError:
        raise MembenchError("split file is not UTF-8 text", path) from None
    samples: list[Sample] = []
    seen: dict[str, int] = {}
    for number, line in enumerate(text.splitlines(), start=1):
        line = line.strip()
        if not line:
            continue
        fields = line.split()
        if len(fields) != 2:
            raise MembenchError(f"expected '<image> <score>', got {line[:60]!r}", path, number)
        name, score_text = fields
        try:
            score = float(score_text)
        except ValueError:
            raise MembenchError(f"score {score_text!r} is not a number", path, number) from None
        if not math.isfinite(score) or not 0.0 <= score <= 1.0:
            raise MembenchError(f"score {score_text} is outside [0, 1]", path, number)
        if name in seen:
            raise MembenchError(f"image {name} listed twice (first on line {seen[name]})", path, number)
        if "/" in name or "\\" in name or name.startswith("."):
            raise MembenchError(f"image name {name!r} must be a plain file name", path, number)
        seen[name] = number
        samples.append(Sample(name=name, path=images_dir / name, score=score))
    if not samples:
        raise MembenchError("split file is empty", path)
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
            raise MembenchError("data directory does not exist or is not a directory", self.root)
        for sub in ("images", "splits"):
            if not (self.root / sub).is_dir():
                raise MembenchError(f"not a LaMem-layout directory: missing {sub}/", self.root)

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
        files = {part: self.split_file(part, k) for part in PARTS}
        missing = [str(p) for p in files.values() if not p.is_file()]
        if missing:
            raise MembenchError(f"split {k} is incomplete: missing {', '.join(missing)}", self.root)
        parts = {part: read_split_file(path, self.images_dir) for part, path in files.items()}
        owner: dict[str, str] = {}
        for part, samples in parts.items():
            for s in samples:
                if s.name in owner:
                    raise MembenchError(f"image {s.name} is in both {owner[s.name]}_{k}.txt and "
                                        f"{part}_{k}.txt", files[part])
                owner[s.name] = part
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


def parse_splits(expr: str, available: tuple[int, ...], where: Path | str) -> list[int]:
    """`all` or a comma list like `1,3`; every named split must exist."""
    if expr.strip() == "all":
        if not available:
            raise MembenchError("no complete split (train_k/val_k/test_k.txt) found", where)
        return list(available)
    wanted: list[int] = []
    for part in expr.split(","):
        part = part.strip()
        if not part.isdigit():
            raise MembenchError(f"--splits takes 'all' or numbers like 1,3; got {part!r}")
        k = int(part)
        if k not in available:
            raise MembenchError(f"split {k} not found (split files train_{k}.txt, val_{k}.txt, "
                                f"test_{k}.txt); available: {list(available) or 'none'}", where)
        if k not in wanted:
            wanted.append(k)
    return wanted
