"""The `lnsim` dataset: LNSIM, 2,632 outdoor natural-scene images with memorability scores
(Lu, Xu, Yang, Wang: "Understanding and Predicting the Memorability of Outdoor Natural
Scenes", IEEE TIP 2020), read from its public release layout:

    ROOT/Image_data/0001.jpg ... 2632.jpg
    ROOT/Random_splits/subject_hrs1.mat, subject_hrs2.mat

Each .mat file holds a float64 array (`subject_hrs1`, `subject_hrs2`) of shape R x N: row r
is one random halving of the participants, column i is image i+1. An image's score is the
mean over rows of (hrs1 + hrs2) / 2; the human consistency (the ceiling to show next to
results) is the mean over rows of Spearman(hrs1[r], hrs2[r]).

The release defines no train/test split, so membench defines 5 seeded 70/10/20 splits and
writes them, with the scores, as LaMem-style split files in a directory it owns
($MEMBENCH_HOME/datasets/lnsim-<key>/), never in the user's data directory. The helpers
for such derived views (also used by the `csv` dataset) live here too.
"""

from __future__ import annotations

import hashlib
import os
import shutil
from dataclasses import dataclass, field, replace
from pathlib import Path

from membench import DatasetSpec, hookimpl
from membench.data.layout import LamemLayout
from membench.errors import MembenchError
from membench.spec import Split

VIEW_VERSION = 1  # bump when the derived split files change for the same inputs
N_SPLITS = 5
TRAIN_FRACTION, VAL_FRACTION = 0.7, 0.1  # test is the rest
MIN_IMAGES = 20  # below this a 10% validation set has fewer than 2 images (no Spearman)
CITATION = ("Lu, Xu, Yang, Wang: Understanding and Predicting the Memorability of Outdoor "
            "Natural Scenes, IEEE TIP 2020")


# --- derived LaMem-layout views (shared with plugins/datasets/csvdata.py) -------------------------

def datasets_home() -> Path:
    from membench.util.files import membench_home

    return membench_home() / "datasets"


def parse_options(options: dict | None, allowed: dict[str, str], dataset: str) -> dict[str, str]:
    """`--dataset-option` pairs with `-` read as `_`; an unknown key lists the known ones."""
    out = {}
    for key, value in (options or {}).items():
        key = str(key).strip().replace("-", "_")
        if key not in allowed:
            known = ", ".join(f"{k} ({v})" for k, v in allowed.items())
            raise MembenchError(f"dataset {dataset!r} has no option {key!r}; options: {known}")
        out[key] = str(value).strip()
    return out


def parse_seed(text: str | None) -> int:
    if text is None:
        return 0
    try:
        return int(text)
    except ValueError:
        raise MembenchError(f"dataset option seed must be an integer, got {text!r}") from None


def seeded_order(items: list, seed: int, k: int, name=lambda item: item) -> list:
    """`items` in the order of a hash of (seed, k, name): it does not depend on numpy's or
    Python's random-number streams and never changes across versions."""
    return sorted(items, key=lambda item: hashlib.sha256(f"{seed}:{k}:{name(item)}".encode()).digest())


def seeded_split(names: list[str], seed: int, k: int) -> dict[str, list[str]]:
    """Split k of `names` 70/10/20, in their seeded order."""
    order = seeded_order(names, seed, k)
    n_train = round(TRAIN_FRACTION * len(order))
    n_val = round(VAL_FRACTION * len(order))
    return {"train": order[:n_train], "val": order[n_train:n_train + n_val],
            "test": order[n_train + n_val:]}


def seeded_splits(scores: dict[str, float], seed: int, where) -> dict[int, dict[str, list[tuple[str, float]]]]:
    if len(scores) < MIN_IMAGES:
        raise MembenchError(f"{len(scores)} scored images; seeded 70/10/20 splits need at "
                            f"least {MIN_IMAGES}", where)
    names = sorted(scores)
    return {k: {part: [(n, scores[n]) for n in members]
                for part, members in seeded_split(names, seed, k).items()}
            for k in range(1, N_SPLITS + 1)}


def view_key(*parts) -> str:
    h = hashlib.sha256(f"view-v{VIEW_VERSION}".encode())
    for p in parts:
        h.update(b"\0")
        h.update(p if isinstance(p, bytes) else str(p).encode())
    return h.hexdigest()[:16]


def write_view(dest: Path, splits: dict[int, dict[str, list[tuple[str, float]]]],
               sources: dict[str, Path], fill=None) -> Path:
    """Write a LaMem-layout directory: images/<name> symlinks to `sources`, splits/<part>_<k>.txt.
    Written into a temporary sibling and renamed, so a reader never sees half a view and
    concurrent runs (one per GPU) agree. An existing view is reused once its split files
    are checked against what they must hold (a damaged or edited one is an error naming
    it: its images and scores would be read as the dataset's). With `fill`,
    `fill(images_dir)` writes the image files instead (images kept inside a .mat file)."""
    texts = {f"{part}_{k}.txt": "".join(f"{name} {score!r}\n" for name, score in rows)
             for k, parts in splits.items() for part, rows in parts.items()}
    if dest.is_dir():
        _check_view(dest, texts)
        return dest
    tmp = dest.with_name(f".{dest.name}.tmp{os.getpid()}")
    try:
        shutil.rmtree(tmp, ignore_errors=True)
        (tmp / "splits").mkdir(parents=True)
        (tmp / "images").mkdir()
        if fill is not None:
            fill(tmp / "images")
        for name, path in ({} if fill is not None else sources).items():
            (tmp / "images" / name).symlink_to(path.resolve())
        for file_name, text in texts.items():
            (tmp / "splits" / file_name).write_text(text, encoding="utf-8")
        try:
            tmp.rename(dest)
        except OSError:
            if not dest.is_dir():
                raise
            shutil.rmtree(tmp, ignore_errors=True)  # another process wrote the same view first
    except OSError as exc:
        shutil.rmtree(tmp, ignore_errors=True)
        raise MembenchError(f"cannot write membench's copy of the split files ({exc.strerror}); "
                            "set MEMBENCH_HOME to a writable directory", dest.parent) from None
    return dest


def _check_view(dest: Path, texts: dict[str, str]) -> None:
    """The split files of an existing view are exactly `texts` (no file missing or added)."""
    fix = f"membench's derived copy was damaged or edited: delete the directory {dest}, membench writes it again"
    extra = sorted({p.name for p in (dest / "splits").glob("*.txt")} - set(texts))
    if extra:
        raise MembenchError(f"a split file this dataset does not define; {fix}", dest / "splits" / extra[0])
    for name, text in sorted(texts.items()):
        path = dest / "splits" / name
        try:
            on_disk = path.read_bytes()
        except OSError:
            raise MembenchError(f"split file missing or unreadable; {fix}", path) from None
        if on_disk != text.encode("utf-8"):
            line = next((i for i, (a, b) in enumerate(zip(on_disk.split(b"\n"), text.encode().split(b"\n")), 1)
                         if a != b), min(on_disk.count(b"\n"), text.count("\n")) + 1)
            raise MembenchError(f"differs from the split the source data define; {fix}", path, line)


@dataclass
class DerivedLayout(LamemLayout):
    """A LaMem-layout view written by membench. Samples point at the user's original files
    (`sources`), so messages about a bad image name the file the user can fix."""

    sources: dict[str, Path] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)  # what `data check` reports that is not a problem

    def load_split(self, k: int) -> Split:
        split = super().load_split(k)

        def real(samples):
            return tuple(replace(s, path=self.sources.get(s.name, s.path)) for s in samples)

        return Split(index=k, train=real(split.train), val=real(split.val), test=real(split.test))

    def fingerprint(self) -> str:
        """Hash of the split files and the source images (names and sizes; -1 if missing)."""
        h = hashlib.sha256()
        for p in sorted(self.splits_dir.glob("*.txt")):
            h.update(p.name.encode())
            h.update(p.read_bytes())
        for name, path in sorted(self.sources.items()):
            size = path.stat().st_size if path.is_file() else -1
            h.update(f"{name}:{size}".encode())
        return h.hexdigest()[:16]


# --- LNSIM ---------------------------------------------------------------------------------

OPTIONS = {"seed": "integer seed of the 5 random 70/10/20 splits, default 0"}


def load_matrix(path: Path, variable: str):
    """One R x N half-split score array, finite and within [0, 1]."""
    import numpy as np

    from membench_plugins.datasets import shared

    data = shared.load_mat(path, "LNSIM", missing=f"the LNSIM release keeps the split-half scores in "
                                                    f"Random_splits/{path.name}",
                            resave=f"save('{path.name}', '{variable}', '-v7')")
    array = shared.variable(data, variable, path)
    if array.ndim != 2 or array.dtype.kind not in "fiu" or min(array.shape) == 0:
        raise MembenchError(f"{variable} must be a 2-D numeric array (rows: participant "
                            f"halvings, columns: images); got {array.dtype} {array.shape}", path)
    array = array.astype(np.float64)
    bad = np.argwhere(~np.isfinite(array) | (array < 0) | (array > 1))
    if len(bad):
        r, c = bad[0]
        value = float(array[r, c])
        what = "NaN" if value != value else ("infinite" if abs(value) == float("inf") else f"{value!r} (outside [0, 1])")
        raise MembenchError(f"{variable} has {what} at row {r + 1}, column {c + 1} "
                            f"(image {image_name(c, array.shape[1])}); {len(bad)} such value(s)", path)
    return array


def image_name(column: int, n_images: int) -> str:
    return f"{column + 1:0{max(4, len(str(n_images)))}d}.jpg"


def human_consistency(hrs1, hrs2, where: Path) -> float:
    """Mean over rows of Spearman's rho between the two halves' scores."""
    from scipy.stats import spearmanr

    rhos = []
    for r in range(hrs1.shape[0]):
        rho = float(spearmanr(hrs1[r], hrs2[r])[0])
        if rho != rho:
            raise MembenchError(f"row {r + 1} is constant, so its split-half Spearman is undefined", where)
        rhos.append(rho)
    return sum(rhos) / len(rhos)


def open_lnsim(root, options=None) -> DerivedLayout:
    opts = parse_options(options, OPTIONS, "lnsim")
    seed = parse_seed(opts.get("seed"))
    root = Path(root).expanduser()
    if not root.is_dir():
        raise MembenchError("data directory does not exist or is not a directory", root)
    images_dir = root / "Image_data"
    if not images_dir.is_dir():
        raise MembenchError("not an LNSIM release directory: missing Image_data/", root)
    path1 = root / "Random_splits" / "subject_hrs1.mat"
    path2 = root / "Random_splits" / "subject_hrs2.mat"
    hrs1 = load_matrix(path1, "subject_hrs1")
    hrs2 = load_matrix(path2, "subject_hrs2")
    if hrs1.shape != hrs2.shape:
        raise MembenchError(f"subject_hrs2 has shape {hrs2.shape} but subject_hrs1 "
                            f"{hrs1.shape}; both must be halvings x images", path2)
    on_disk = {p.name for p in images_dir.iterdir() if p.suffix.lower() in (".jpg", ".jpeg")}
    n_rows, n_images = hrs1.shape
    if n_rows == len(on_disk) != n_images:
        raise MembenchError(f"subject_hrs1 is {n_rows} x {n_images} but Image_data/ holds "
                            f"{len(on_disk)} images: the array looks transposed (expected "
                            "halvings x images)", path1)
    names = [image_name(c, n_images) for c in range(n_images)]
    mean = ((hrs1 + hrs2) / 2).mean(axis=0)
    scores = {name: float(s) for name, s in zip(names, mean)}
    consistency = human_consistency(hrs1, hrs2, path1)

    # Missing images are left to the image check (`data check`, `run --on-bad-image`),
    # as for LaMem; unscored extra images it cannot see, so they are reported here.
    extra = sorted(on_disk - set(names))
    problems = []
    if extra:
        problems.append(f"{images_dir}: {len(extra)} image(s) without scores are ignored "
                        f"(e.g. {extra[0]})")

    key = view_key(root.resolve(), path1.read_bytes(), path2.read_bytes(), seed)
    sources = {n: images_dir / n for n in names}
    dest = write_view(datasets_home() / f"lnsim-{key}", seeded_splits(scores, seed, path1), sources)
    return DerivedLayout(dest, name="lnsim", human_consistency=consistency, problems=problems,
                         sources=sources)


@hookimpl
def register_datasets(register):
    register(DatasetSpec(
        name="lnsim",
        open=open_lnsim,
        summary="LNSIM natural scenes: Image_data/ + Random_splits/subject_hrs{1,2}.mat; "
                "5 seeded 70/10/20 splits (--dataset-option seed=N)",
        citation=CITATION,
        size="2,632 outdoor natural scenes",
        split_scheme="none published: 5 seeded 70/10/20 (--dataset-option seed=N)",
        score_measure="hit rate, mean over 25 participant halvings",
        consistency_note="computed from the files: mean over the 25 halvings of Spearman's rho between halves (0.779)",
        license="no licence file in the repository (ask the authors for uses beyond research)",
        homepage="https://github.com/JiaxinLu-home/Natural-Scene-Memorability-Dataset",
        options=OPTIONS,
    ))
