"""The `csv` dataset: any folder of images plus a CSV of scores (users' own data).

    DIR/scores.csv     header row; an image column, a score column in [0, 1], and
                       optionally a split column whose values are train, val or test
    DIR/<image paths>  relative to DIR (or to --dataset-option images=SUBDIR)

Columns named `image`, `score` and `split` (any case) are found by themselves; other
names are given with --dataset-option image_column=..., score_column=..., split_column=...
With a split column the dataset has that one split; without, membench defines 5 seeded
70/10/20 splits. Either way the splits are written as LaMem-style split files in a
directory membench owns ($MEMBENCH_HOME/datasets/csv-<key>/), never in DIR.
"""

from __future__ import annotations

import csv
import re
from pathlib import Path

from membench import DatasetSpec, hookimpl
from membench.errors import MembenchError
from membench_plugins.datasets.lnsim import (
    DerivedLayout,
    datasets_home,
    parse_options,
    parse_seed,
    seeded_splits,
    view_key,
    write_view,
)

OPTIONS = {
    "csv": "the CSV file (default: the only *.csv in DIR)",
    "images": "folder the image paths are relative to (default: DIR)",
    "image_column": "column of image paths (default: 'image')",
    "score_column": "column of scores in [0, 1] (default: 'score')",
    "split_column": "column of train/val/test (default: 'split' if present)",
    "seed": "integer seed of the 5 random 70/10/20 splits, default 0",
    "name": "dataset name in results, recorded as csv-<name> (default: csv)",
    "human_consistency": "published split-half consistency to show beside results",
}
PARTS = ("train", "val", "test")


def find_csv(root: Path, given: str | None) -> Path:
    if given:
        path = root / Path(given).expanduser()
        if not path.is_file():
            raise MembenchError("CSV file not found", path)
        return path
    found = sorted(root.glob("*.csv"))
    if len(found) != 1:
        what = "no *.csv file" if not found else f"{len(found)} *.csv files ({', '.join(p.name for p in found)})"
        raise MembenchError(f"{what} in the data directory; name one with --dataset-option csv=FILE", root)
    return found[0]


def find_column(header: list[str], given: str | None, default: str, option: str, path: Path,
                required: bool = True) -> int | None:
    lowered = [h.strip().lower() for h in header]
    wanted = (given or default).strip().lower()
    if wanted in lowered:
        return lowered.index(wanted)
    if not required and given is None:
        return None
    how = "" if given else f"; name it with --dataset-option {option}=COLUMN"
    raise MembenchError(f"no column {given or default!r} (columns: {', '.join(header)}){how}", path, 1)


def view_name(rel: str) -> str:
    """A plain file name for the split files (`<name> <score>` lines): paths with folders,
    spaces or commas are flattened, other names are kept as the user wrote them."""
    name = rel.replace("\\", "/").strip("/").replace("/", "__")
    name = "".join("_" if c.isspace() or c == "," else c for c in name)
    return "_" + name if name.startswith(".") else name


def read_scores(path: Path, opts: dict[str, str]):
    """Rows of (image path as written, score, split part or None, line number); every
    problem is an error naming path:line."""
    try:
        text = path.read_text(encoding="utf-8-sig")  # -sig: spreadsheets often write a BOM
    except UnicodeDecodeError:
        raise MembenchError("CSV file is not UTF-8 text", path) from None
    except OSError as exc:
        raise MembenchError(f"cannot read CSV file ({exc.strerror})", path) from None
    reader = csv.reader(text.splitlines())
    header = next(reader, None)
    if not header:
        raise MembenchError("CSV file is empty (expected a header row)", path)
    image_col = find_column(header, opts.get("image_column"), "image", "image_column", path)
    score_col = find_column(header, opts.get("score_column"), "score", "score_column", path)
    split_col = find_column(header, opts.get("split_column"), "split", "split_column", path, required=False)
    rows, seen = [], {}
    for fields in reader:
        line = reader.line_num
        if not any(f.strip() for f in fields):
            continue
        needed = max(c for c in (image_col, score_col, split_col) if c is not None) + 1
        if len(fields) < needed:
            raise MembenchError(f"expected {len(header)} columns, got {len(fields)}", path, line)
        image = fields[image_col].strip()
        if not image:
            raise MembenchError("empty image name", path, line)
        if image in seen:
            raise MembenchError(f"image {image} listed twice (first on line {seen[image]})", path, line)
        seen[image] = line
        score_text = fields[score_col].strip()
        try:
            score = float(score_text)
        except ValueError:
            raise MembenchError(f"score {score_text!r} is not a number", path, line) from None
        if not score == score or not 0.0 <= score <= 1.0:
            raise MembenchError(f"score {score_text} is outside [0, 1]", path, line)
        part = None
        if split_col is not None:
            part = fields[split_col].strip().lower()
            if part not in PARTS:
                raise MembenchError(f"split {fields[split_col].strip()!r} must be one of "
                                    f"{', '.join(PARTS)}", path, line)
        rows.append((image, score, part, line))
    if not rows:
        raise MembenchError("CSV file has a header but no rows", path)
    return rows, split_col is not None


def open_csv(root, options=None) -> DerivedLayout:
    opts = parse_options(options, OPTIONS, "csv")
    seed = parse_seed(opts.get("seed"))
    root = Path(root).expanduser()
    if not root.is_dir():
        raise MembenchError("data directory does not exist or is not a directory", root)
    path = find_csv(root, opts.get("csv"))
    images_root = root / Path(opts["images"]).expanduser() if opts.get("images") else root
    if not images_root.is_dir():
        raise MembenchError("images folder does not exist", images_root)
    from membench_plugins.datasets import shared

    # an empty value is unset for a csv dataset (its column-mapping options may be left empty too)
    consistency = shared.consistency_option({k: v for k, v in opts.items() if v}, what="a rank correlation")
    label = opts.get("name", "")
    if label and not re.fullmatch(r"[A-Za-z0-9._-]+", label):
        raise MembenchError(f"dataset option name must be letters, digits, '.', '_' or '-' (it becomes "
                            f"part of file names), got {label!r}")

    rows, has_split = read_scores(path, opts)
    sources, scores, parts, where = {}, {}, {}, {}
    for image, score, part, line in rows:
        name = view_name(image)
        if name in where:
            raise MembenchError(f"image {image} becomes {name!r} in membench's split files, as "
                                f"does the image on line {where[name]}; rename one", path, line)
        where[name] = line
        sources[name] = images_root / image
        scores[name] = score
        parts[name] = part

    if has_split:
        split = {p: [(n, scores[n]) for n in scores if parts[n] == p] for p in PARTS}
        small = [p for p in PARTS if len(split[p]) < 2]
        if small:
            raise MembenchError(f"the split column gives fewer than 2 images to {', '.join(small)}; "
                                "train, val and test each need at least 2", path)
        splits = {1: split}
    else:
        splits = seeded_splits(scores, seed, path)

    columns = (opts.get("image_column"), opts.get("score_column"), opts.get("split_column"))
    key = view_key(path.resolve(), path.read_bytes(), images_root.resolve(), seed, columns)
    dest = write_view(datasets_home() / f"csv-{key}", splits, sources)
    return DerivedLayout(dest, name=f"csv-{label}" if label else "csv", human_consistency=consistency, sources=sources)


@hookimpl
def register_datasets(register):
    register(DatasetSpec(
        name="csv",
        open=open_csv,
        summary="a folder of images + a CSV (image, score[, split] columns); "
                "5 seeded 70/10/20 splits unless a split column is given",
        size="your images",
        split_scheme="5 seeded 70/10/20, or one split from a split column",
        score_measure="yours, on [0, 1]",
        consistency_note="--dataset-option human_consistency=X",
        license="yours",
        options=OPTIONS,
    ))
