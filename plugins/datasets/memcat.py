"""The `memcat` dataset: MemCat (Goetschalckx & Wagemans, "MemCat: a new category-based
image set quantified on memorability", PeerJ 7:e8169, 2019): 10,000 images in 5 categories
(animal, food, landscape, sports, vehicle) and their subcategories, each scored by about 99
participants of a repeat-detection memory game. Read from the release as distributed:

    ROOT/.../memcat_image_data.csv       one row per image
    ROOT/.../<category>/<subcategory>/<image_file>   (MemCat_images/MemCat/... in the release)

Verified from public code that reads the release: the CSV's columns `image_file`,
`category`, `subcategory`, `H`, `FA`, `n_resp`, `memorability_wo_fa_correction` and
`memorability_w_fa_correction` (the last column), after an unnamed index column, 13
columns in all (the other four were not verified: membench reads columns by name); the
images under `<category>/<subcategory>/<image_file>`. The score is
`memorability_w_fa_correction`: memorability corrected for false alarms, the measure the
paper reports (`--dataset-option score=memorability_wo_fa_correction` takes the hit rate
without the correction). A negative corrected score would count as 0 (said by `data check`).

The release defines no train/test split: 5 seeded 70/10/20 splits as LNSIM's
(`--dataset-option seed=N`). The files hold per-image totals, not per-participant
responses, so the split-half human consistency cannot be computed from them; the paper
reports it (not verified here): pass it with `--dataset-option human_consistency=X`.
"""

from __future__ import annotations

from pathlib import Path

from membench import DatasetSpec, hookimpl
from membench.errors import MembenchError
from membench_plugins.datasets import release, shared
from membench_plugins.datasets.lnsim import parse_options, parse_seed

CSV_NAME = "memcat_image_data.csv"
SCORES = ("memorability_w_fa_correction", "memorability_wo_fa_correction")
OPTIONS = {
    "score": f"score column: {SCORES[0]} (default, corrected for false alarms) or {SCORES[1]}",
    "seed": "integer seed of the 5 random 70/10/20 splits, default 0",
    "human_consistency": "published split-half consistency to show beside results (not in the files)",
}
CITATION = ("Goetschalckx & Wagemans: MemCat: a new category-based image set quantified on memorability, "
            "PeerJ 7:e8169, 2019 (doi:10.7717/peerj.8169)")


def read_rows(path: Path, score_column: str) -> tuple[list[tuple[int, str, float]], list[str]]:
    """(line, category/subcategory/image_file, score) per scored row, and notes."""
    def image_of(values: list[str], line: int) -> str:
        image, category, sub = values
        if not image or not category or not sub:
            raise MembenchError("empty image_file, category or subcategory", path, line)
        if any(part in ("..", ".") or "/" in part or "\\" in part for part in values):
            raise MembenchError(f"image_file, category and subcategory must be plain names, got "
                                f"{category}/{sub}/{image}", path, line)
        return f"{category}/{sub}/{image}"

    return release.scored_rows(path, ("image_file", "category", "subcategory"), score_column, image_of)


def open_memcat(root, options=None):
    opts = parse_options(options, OPTIONS, "memcat")
    seed = parse_seed(opts.get("seed"))
    score = opts.get("score", SCORES[0])
    if score not in SCORES:
        raise MembenchError(f"dataset option score must be one of {', '.join(SCORES)}, got {score!r}")
    root = Path(root).expanduser()
    path = release.find_file(root, (CSV_NAME,))
    if path is None:
        raise MembenchError(f"not a MemCat release: no {CSV_NAME} in this directory or below "
                            "(the release keeps it in MemCat_data/)", root)
    items, notes = read_rows(path, score)
    return release.seeded_view("memcat", root, path, items, seed, (score,), shared.consistency_option(opts),
                               notes, "<category>/<subcategory>/<image_file> as in MemCat_images/MemCat/")


@hookimpl
def register_datasets(register):
    register(DatasetSpec(
        name="memcat",
        open=open_memcat,
        summary="MemCat: 10,000 images in 5 categories (memcat_image_data.csv + category folders); "
                "5 seeded 70/10/20 splits",
        citation=CITATION,
        size="10,000 images, 5 categories, ~99 participants per image",
        split_scheme="none published: 5 seeded 70/10/20 (--dataset-option seed=N)",
        score_measure="memorability corrected for false alarms (memorability_w_fa_correction)",
        consistency_note="published in the paper, not computable from the files: give it with "
                         "--dataset-option human_consistency=X",
        license="see the MemCat page (not verified here); the images come from existing image sets, "
                "each with its own licence",
        homepage="https://gestaltrevision.be/projects/memcat/",
        manual_download="download the release from https://gestaltrevision.be/projects/memcat/ "
                        "(the page's terms apply)",
        options=OPTIONS,
    ))
