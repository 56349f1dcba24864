"""Reading a dataset's files as its authors distribute them: what the memcat, things,
figrim and sun plugins share. Finding files and image folders inside an unpacked release
(archives wrap them in folders of their own), CSV rows with their line numbers, MATLAB
files, scores checked value by value, and the optional `human_consistency` option.

Every problem is a MembenchError naming the file (and line, or entry) the user must fix.
"""

from __future__ import annotations

import csv
import math
from pathlib import Path

from membench.errors import MembenchError

SEARCH_DEPTH = 3  # how deep below --data a release's files may sit (archives add a folder or two)


def _dirs(root: Path, depth: int):
    """root and its sub-folders down to `depth` levels, breadth first, hidden ones skipped;
    links to folders are followed (an imported folder is linked, not copied)."""
    level = [root]
    for _ in range(depth + 1):
        following = []
        for d in level:
            yield d
            try:
                following += sorted(p for p in d.iterdir() if not p.name.startswith(".") and p.is_dir())
            except OSError:
                continue
        level = following


def find_file(root: Path, names: tuple[str, ...], depth: int = SEARCH_DEPTH) -> Path | None:
    """The first file named one of `names` in root or below (shallowest first)."""
    for d in _dirs(root, depth):
        for name in names:
            if (d / name).is_file():
                return d / name
    return None


def find_base(root: Path, tails: list[str], depth: int = SEARCH_DEPTH) -> Path | None:
    """The folder B (root or below) with B/tail an existing file for one of `tails`
    (relative paths of a few listed images): where the release keeps its images."""
    for d in _dirs(root, depth):
        if any((d / tail).is_file() for tail in tails):
            return d
    return None


def read_csv(path: Path) -> tuple[list[str], list[tuple[int, list[str]]]]:
    """Header and (line number, fields) of every non-blank row; a file that is not UTF-8
    or CSV is an error naming the line."""
    try:
        raw = path.read_bytes()
    except OSError as exc:
        raise MembenchError(f"cannot read ({exc.strerror})", path) from None
    try:
        text = raw.decode("utf-8-sig")  # -sig: spreadsheets often start files with a BOM
    except UnicodeDecodeError as exc:
        raise MembenchError("not UTF-8 text", path, raw[:exc.start].count(b"\n") + 1) from None
    reader = csv.reader(text.splitlines(keepends=True))
    rows = []
    try:
        for fields in reader:
            if any(f.strip() for f in fields):
                rows.append((reader.line_num, fields))
    except csv.Error as exc:
        raise MembenchError(f"malformed CSV ({exc})", path, reader.line_num) from None
    if not rows:
        raise MembenchError("empty file: expected a header row and one row per image", path)
    return [h.strip() for h in rows[0][1]], rows[1:]


def column(header: list[str], name: str, path: Path, option: str | None = None) -> int:
    if name in header:
        return header.index(name)
    how = f"; choose another with --dataset-option {option}=COLUMN" if option else ""
    raise MembenchError(f"no column {name!r} (columns: {', '.join(h or '(unnamed)' for h in header)}){how}",
                        path, 1)


def number(text: str, what: str, path: Path, line: int | None, low: float, high: float) -> float | None:
    """A score read from the file: None when empty or NaN (no score published for the
    image), else a finite number within [low, high]."""
    text = text.strip()
    if text == "" or text.lower() in ("nan", "na"):
        return None
    try:
        value = float(text)
    except ValueError:
        raise MembenchError(f"{what} {text!r} is not a number", path, line) from None
    if not math.isfinite(value) or not low <= value <= high:
        raise MembenchError(f"{what} {text} is outside [{low:g}, {high:g}]", path, line)
    return value


def scored_rows(path: Path, columns: tuple[str, ...], score_column: str, image_of) -> tuple[list, list[str]]:
    """(line, image path in the release, score) for each row of a release's CSV with a
    score, and notes: `image_of(values of columns, line)` gives the image path; a row
    without a score is left out, a negative corrected recognition counts as 0 (counted
    in the notes); anything else wrong is an error naming file and line."""
    header, rows = read_csv(path)
    cols = [column(header, c, path) for c in columns]
    score_col = column(header, score_column, path, option="score")
    items, unscored, negative = [], 0, 0
    for line, fields in rows:
        if len(fields) <= max(*cols, score_col):
            raise MembenchError(f"expected {len(header)} columns, got {len(fields)}", path, line)
        image = image_of([fields[c].strip() for c in cols], line)
        score = number(fields[score_col], score_column, path, line, -1.0, 1.0)
        if score is None:
            unscored += 1
            continue
        if score < 0:  # the harness scores on [0, 1]: tied at the bottom in Spearman's rank
            negative += 1
            score = 0.0
        items.append((line, image, score))
    notes = [f"{negative} image(s) have a negative {score_column} (more false alarms than hits): scored 0, the "
             "bottom of membench's [0, 1] scale (tied in Spearman's rank)"] if negative else []
    if unscored:
        notes.append(f"{unscored} row(s) without a {score_column} value are left out")
    return items, notes


def seeded_view(name: str, root: Path, scores_file: Path, items: list[tuple[int | str, str, float]], seed: int,
                key_parts: tuple, human_consistency: float | None, notes: list[str], images_hint: str):
    """The LaMem-layout view of a release scored image by image, without official splits:
    `items` are (CSV line number, or the entry of a .mat file as text; image path relative
    to the release's image folder; score); the image folder is found below `root` (see
    find_base); 5 seeded 70/10/20 splits as LNSIM's, written into a directory membench owns."""
    from membench_plugins.datasets.csvdata import view_name
    from membench_plugins.datasets.lnsim import DerivedLayout, datasets_home, seeded_splits, view_key, write_view

    if not items:
        raise MembenchError("no image with a score", scores_file)
    where: dict[str, int | str] = {}
    scores: dict[str, float] = {}
    names = [view_name(tail) for _, tail, _ in items]
    for (ref, tail, score), key in zip(items, names):
        if key in where:
            first = where[key]
            if isinstance(ref, int):
                raise MembenchError(f"image {tail} listed twice (first on line {first})", scores_file, ref)
            raise MembenchError(f"{ref}: image {tail} listed twice (first in {first})", scores_file)
        where[key] = ref
        scores[key] = score
    tails = [tail for _, tail, _ in items]
    base = find_base(root, tails[:25])
    if base is None:
        raise MembenchError(f"none of the first listed images found below the data directory (expected "
                            f"{images_hint}, e.g. .../{tails[0]})", root)
    sources = {key: base / tail for key, tail in zip(names, tails)}
    splits = seeded_splits(scores, seed, scores_file)
    key = view_key(name, scores_file.resolve(), scores_file.read_bytes(), base.resolve(), seed, *key_parts)
    dest = write_view(datasets_home() / f"{name}-{key}", splits, sources)
    return DerivedLayout(dest, name=name, human_consistency=human_consistency, sources=sources, notes=notes)
