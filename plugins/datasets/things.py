"""The `things` dataset: THINGS memorability (Kramer, Hebart, Baker & Bainbridge, "The
features underlying the memorability of objects", Science Advances 9, 2023): 26,107 object
images of the THINGS database (1,854 concepts), >1 million responses of 13,946
participants in a continuous recognition task. Read from the files as distributed:

    ROOT/.../THINGS_Memorability_Scores.csv   one row per image
    ROOT/.../<concept>/<image>.jpg            the THINGS images (object_images/ in their archive)

Verified from public code that reads them: the CSV's `file_path` column ("images/<concept>/
<image>.jpg") and `cr` column (corrected recognition: hit rate minus false-alarm rate),
with an `image_name` column beside them; some rows have no `cr` (left out, counted by `data
check`). The images come from the THINGS database's password-protected archive
(images_THINGS.zip on https://osf.io/jum2f/), which unpacks to
`object_images/<concept>/<image>.jpg`; the first folder of `file_path` is not
needed: membench finds `<concept>/<image>.jpg` below --data. A negative corrected
recognition counts as 0 (said by `data check`); `--dataset-option score=COLUMN` reads
another score column of the CSV if it has one.

No official split: 5 seeded 70/10/20 splits as LNSIM's (`--dataset-option seed=N`). The
CSV holds per-image scores, not per-participant responses: the split-half consistency
the paper reports (not verified here) can be given with `--dataset-option
human_consistency=X`.
"""

from __future__ import annotations

from pathlib import Path, PurePosixPath

from membench import DatasetSpec, hookimpl
from membench.errors import MembenchError
from membench_plugins.datasets import release, shared
from membench_plugins.datasets.lnsim import parse_options, parse_seed

CSV_NAME = "THINGS_Memorability_Scores.csv"
OPTIONS = {
    "score": "score column of the CSV (default: cr, corrected recognition)",
    "seed": "integer seed of the 5 random 70/10/20 splits, default 0",
    "human_consistency": "published split-half consistency to show beside results (not in the files)",
}
CITATION = ("Kramer, Hebart, Baker & Bainbridge: The features underlying the memorability of objects, "
            "Science Advances 9(17), 2023; images: Hebart et al., THINGS, PLoS ONE 2019")


def image_tail(file_path: str, path: Path, line: int) -> str:
    """"images/aardvark/aardvark_01b.jpg" -> "aardvark/aardvark_01b.jpg"."""
    parts = PurePosixPath(file_path.strip().replace("\\", "/")).parts
    if len(parts) < 2 or any(p in ("..", ".") for p in parts) or parts[0] == "/":
        raise MembenchError(f"file_path {file_path!r} is not <folder>/<concept>/<image>", path, line)
    return "/".join(parts[-2:])


def read_rows(path: Path, score_column: str) -> tuple[list[tuple[int, str, float]], list[str]]:
    """(line, <concept>/<image>, score) per scored row, and notes."""
    return release.scored_rows(path, ("file_path",), score_column,
                               lambda values, line: image_tail(values[0], path, line))


def open_things(root, options=None):
    opts = parse_options(options, OPTIONS, "things")
    seed = parse_seed(opts.get("seed"))
    score = opts.get("score", "cr")
    root = Path(root).expanduser()
    path = release.find_file(root, (CSV_NAME,))
    if path is None:
        raise MembenchError(f"not a THINGS memorability release: no {CSV_NAME} in this directory or below", root)
    items, notes = read_rows(path, score)
    return release.seeded_view("things", root, path, items, seed, (score,), shared.consistency_option(opts),
                               notes, "<concept>/<image>.jpg as in the THINGS archive's object_images/")


@hookimpl
def register_datasets(register):
    register(DatasetSpec(
        name="things",
        open=open_things,
        summary="THINGS memorability: 26,107 object images (THINGS_Memorability_Scores.csv + the THINGS "
                "images); 5 seeded 70/10/20 splits",
        citation=CITATION,
        size="26,107 images of 1,854 object concepts, 13,946 participants",
        split_scheme="none published: 5 seeded 70/10/20 (--dataset-option seed=N)",
        score_measure="corrected recognition, hit rate minus false-alarm rate (cr)",
        consistency_note="published in the paper, not computable from the files: give it with "
                         "--dataset-option human_consistency=X",
        license="images: the THINGS database's LICENSE (read and confirm it before unzipping); scores: "
                "the terms of the paper's data release (not verified here)",
        homepage="https://osf.io/jum2f/ (THINGS database)",
        manual_download="download images_THINGS.zip and password_images.txt from https://osf.io/jum2f/, "
                        "read its LICENSE, unzip with that password; get THINGS_Memorability_Scores.csv "
                        "from the paper's OSF data",
        options=OPTIONS,
    ))
