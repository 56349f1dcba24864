"""The `figrim` dataset: FIGRIM, the FIne-GRained Image Memorability dataset (Bylinskii,
Isola, Bainbridge, Torralba & Oliva, "Intrinsic and extrinsic effects on image
memorability", Vision Research 116, 2015): 1,754 target scenes of 21 SUN categories
(at least 700x700 pixels) with hits, misses, false alarms and correct rejections from two
Amazon Mechanical Turk experiments. Read from the files as distributed:

    ROOT/.../image_data_targets.mat   the struct array `image_data_targets`
    ROOT/.../<category>/<filename>    the target images (or all in one folder)

Verified from the authors' analysis code (github.com/cvzoya/memorability-distinctiveness,
context_correlations.m, calculateScores.m, getContext.m) and third-party code reading the
file: `image_data_targets(i)` has `filename`, `category`, and `amt1`, `amt2`, each with
`hits`, `misses`, `false_alarms`, `correct_rejections`. AMT 1 showed the targets among
fillers of their own category, AMT 2 across categories. NOT verified: how the target
images are laid out in the download (membench looks for `<category>/<filename>`, then
`<filename>`, below --data), and the download's name.

The score is the hit rate, hits / (hits + misses), of AMT 1 (`--dataset-option
experiment=amt2` for AMT 2), the first of the 5 measures of calculateScores.m; an image no
participant saw repeated in that experiment is left out (counted by `data check`). No
official split: 5 seeded 70/10/20 splits as LNSIM's (`--dataset-option seed=N`). The file
holds per-image totals, so the split-half consistency the paper reports (not verified
here) can only be given, with `--dataset-option human_consistency=X`.
"""

from __future__ import annotations

from pathlib import Path

from membench import DatasetSpec, hookimpl
from membench.errors import MembenchError
from membench_plugins.datasets import release, shared
from membench_plugins.datasets.lnsim import parse_options, parse_seed

MAT_NAME = "image_data_targets.mat"
VARIABLE = "image_data_targets"
COUNTS = ("hits", "misses", "false_alarms", "correct_rejections")
EXPERIMENTS = ("amt1", "amt2")
OPTIONS = {
    "experiment": "amt1 (default: targets among fillers of their category) or amt2 (across categories)",
    "seed": "integer seed of the 5 random 70/10/20 splits, default 0",
    "human_consistency": "published split-half consistency to show beside results (not in the files)",
}
CITATION = ("Bylinskii, Isola, Bainbridge, Torralba & Oliva: Intrinsic and extrinsic effects on image "
            "memorability, Vision Research 116, 2015")


def _text(entry, field: str, where: str, path: Path) -> str:
    value = getattr(entry, field, None)
    if not isinstance(value, str) or not value.strip():
        raise MembenchError(f"{where}: {field} must be text, got {type(value).__name__}", path)
    value = value.strip()
    if value in (".", "..") or "/" in value or "\\" in value:
        raise MembenchError(f"{where}: {field} {value!r} must be a plain name", path)
    return value


def _counts(entry, experiment: str, where: str, path: Path) -> tuple[float, ...] | None:
    """The experiment's four counts, or None when the image was not in it (no struct)."""
    import numpy as np

    if not hasattr(entry, experiment):
        raise MembenchError(f"{where}: no field {experiment!r} (fields: {', '.join(entry._fieldnames)})", path)
    block = getattr(entry, experiment)
    if not hasattr(block, "_fieldnames"):
        return None
    out = []
    for name in COUNTS:
        value = np.asarray(getattr(block, name, np.array([])), dtype=object)
        try:
            number = float(value.item()) if value.size == 1 else float("nan")
        except (TypeError, ValueError):
            number = float("nan")
        if not number >= 0 or number != int(number):
            raise MembenchError(f"{where}: {experiment}.{name} must be a count (a whole number >= 0), got "
                                f"{value.tolist()!r}", path)
        out.append(number)
    return tuple(out)


def read_targets(path: Path, experiment: str) -> tuple[list[tuple[str, str, str, float]], list[str]]:
    """(entry, category, filename, hit rate) per target seen repeated, and notes."""
    import numpy as np

    data = shared.load_mat(path, "FIGRIM", squeeze_me=True, struct_as_record=False)
    entries = np.atleast_1d(shared.variable(data, VARIABLE, path))
    out, unseen = [], 0
    for i, entry in enumerate(entries, start=1):
        where = f"{VARIABLE}({i})"
        if not hasattr(entry, "_fieldnames"):
            raise MembenchError(f"{where} is not a struct (got {type(entry).__name__})", path)
        filename = _text(entry, "filename", where, path)
        category = _text(entry, "category", f"{where} ({filename})", path)
        counts = _counts(entry, experiment, f"{where} ({filename})", path)
        if counts is None or counts[0] + counts[1] == 0:
            unseen += 1
            continue
        hits, misses = counts[0], counts[1]
        out.append((where, category, filename, hits / (hits + misses)))
    notes = [f"{unseen} target(s) without {experiment} repeats are left out"] if unseen else []
    return out, notes


def open_figrim(root, options=None):
    opts = parse_options(options, OPTIONS, "figrim")
    seed = parse_seed(opts.get("seed"))
    experiment = opts.get("experiment", "amt1")
    if experiment not in EXPERIMENTS:
        raise MembenchError(f"dataset option experiment must be amt1 or amt2, got {experiment!r}")
    root = Path(root).expanduser()
    path = release.find_file(root, (MAT_NAME,))
    if path is None:
        raise MembenchError(f"not a FIGRIM release: no {MAT_NAME} in this directory or below", root)
    targets, notes = read_targets(path, experiment)
    # Category folders if the images sit in them, else one folder of file names.
    nested = release.find_base(root, [f"{c}/{f}" for _, c, f, _ in targets[:25]]) is not None
    items = [(i, f"{c}/{f}" if nested else f, score) for i, c, f, score in targets]
    return release.seeded_view("figrim", root, path, items, seed, (experiment,), shared.consistency_option(opts),
                               notes, "<category>/<filename> or <filename>")


@hookimpl
def register_datasets(register):
    register(DatasetSpec(
        name="figrim",
        open=open_figrim,
        summary="FIGRIM: 1,754 target scenes in 21 categories (image_data_targets.mat + the target "
                "images); hit rate of AMT 1; 5 seeded 70/10/20 splits",
        citation=CITATION,
        size="1,754 target images in 21 scene categories",
        split_scheme="none published: 5 seeded 70/10/20 (--dataset-option seed=N)",
        score_measure="hit rate, hits / (hits + misses), of AMT 1 (within-category); "
                      "--dataset-option experiment=amt2",
        consistency_note="published in the paper, not computable from the per-image totals: give it with "
                         "--dataset-option human_consistency=X",
        license="not stated in the files membench reads; the images come from the SUN database",
        homepage="http://figrim.mit.edu/",
        manual_download="download the target images and image_data_targets.mat from http://figrim.mit.edu/",
        options=OPTIONS,
    ))
