"""The `sun` dataset: the SUN memorability dataset (Isola, Xiao, Torralba & Oliva, "What
makes an image memorable?", CVPR 2011): 2,222 scenes from the SUN database scored by hit
rate in a repeat-detection memory game, with the 25 random splits the paper used (also
AMNet's SUN protocol). Read from cvpr_memorability_data.zip as distributed
(web.mit.edu/phillipi/Public/WhatMakesAnImageMemorable/, verified from its README and the
authors' MATLAB code):

    ROOT/.../Data/Image data/target_images.mat        `img`: H x W x 3 x 2400 uint8 (the
                                                       first 2222 are the paper's images)
    ROOT/.../Data/Random splits/image_train_indices.mat, image_test_indices.mat
                                                       25 x 1111 (1-based image indices)
    ROOT/.../Data/Random splits/subject_hrs1.mat, subject_hrs2.mat
                                                       25 x 2222 hit rates of two random
                                                       halves of the participants

Split k (k = 1..25) is the paper's: train on `image_train_indices(k,:)` scored by the
first half `subject_hrs1(k,:)`, test on `image_test_indices(k,:)` scored by the other
half `subject_hrs2(k,:)`, so train and test scores come from different people. The release
has no validation set (AMNet validated on the test set); membench holds out a seeded 10%
of each train set as validation (`--dataset-option seed=N`), scored by the first half.

The images live inside the .mat file: membench writes them once as lossless PNGs
(`0001.png` ... in the order of target_images.mat, the order of
`Data/Experiment data/sorted_target_data.mat`, whose `filename`s are the SUN names) into
its own directory. Human consistency, computed from the files as the paper did: the mean
over the 25 rows of Spearman's rho between the two halves' hit rates, over the images of
that row's train and test sets (those with at least 20 participants).
"""

from __future__ import annotations

from pathlib import Path

from membench import DatasetSpec, hookimpl
from membench.errors import MembenchError
from membench_plugins.datasets import release, shared
from membench_plugins.datasets.lnsim import (
    DerivedLayout,
    datasets_home,
    parse_options,
    parse_seed,
    seeded_order,
    view_key,
    write_view,
)

SPLIT_FILES = ("image_train_indices", "image_test_indices", "subject_hrs1", "subject_hrs2")
VAL_FRACTION = 0.1
OPTIONS = {"seed": "integer seed of the validation tenth held out of each train set, default 0"}
CITATION = "Isola, Xiao, Torralba & Oliva: What makes an image memorable?, CVPR 2011"


def image_name(index: int) -> str:
    """1-based index in target_images.mat -> the file name membench gives the image."""
    return f"{index:04d}.png"


def _matrix(splits_dir: Path, variable: str):
    import numpy as np

    path = splits_dir / f"{variable}.mat"
    array = shared.variable(shared.load_mat(path, "SUN memorability"), variable, path)
    if array.ndim != 2 or array.dtype.kind not in "fiu" or min(array.shape) == 0:
        raise MembenchError(f"{variable} must be a 2-D numeric array (rows: the 25 splits); got "
                            f"{array.dtype} {array.shape}", path)
    return np.asarray(array, dtype=np.float64), path


def read_splits(splits_dir: Path):
    """The four arrays, checked against each other: (train, test, hrs1, hrs2) as index
    arrays (0-based) and score arrays, plus their paths."""
    import numpy as np

    (train, p_train), (test, p_test), (hrs1, p1), (hrs2, p2) = (_matrix(splits_dir, v) for v in SPLIT_FILES)
    if hrs1.shape != hrs2.shape:
        raise MembenchError(f"subject_hrs2 is {hrs2.shape} but subject_hrs1 {hrs1.shape}", p2)
    n_rows, n_images = hrs1.shape
    for array, path, name in ((train, p_train, "image_train_indices"), (test, p_test, "image_test_indices")):
        if array.shape[0] != n_rows:
            raise MembenchError(f"{name} has {array.shape[0]} rows but subject_hrs1 {n_rows}: one row per split",
                                path)
        bad = np.argwhere((array != np.round(array)) | (array < 1) | (array > n_images))
        if len(bad):
            r, c = bad[0]
            raise MembenchError(f"row {r + 1}, column {c + 1}: {float(array[r, c]):g} is not an image index "
                                f"(1 to {n_images})", path)
    for r in range(n_rows):
        both = np.intersect1d(train[r], test[r])
        if len(both) or len(np.unique(train[r])) < train.shape[1] or len(np.unique(test[r])) < test.shape[1]:
            what = f"image {int(both[0])} is in both train and test" if len(both) else "an image is listed twice"
            raise MembenchError(f"row {r + 1}: {what}", p_test if len(both) else p_train)
    return (train.astype(int) - 1, test.astype(int) - 1, hrs1, hrs2), (p_train, p_test, p1, p2)


def _scores(hrs, row: int, indices, path: Path) -> list[tuple[str, float]]:
    import math

    out = []
    for j in indices:
        value = float(hrs[row, j])
        if not math.isfinite(value) or not 0.0 <= value <= 1.0:
            raise MembenchError(f"row {row + 1}, column {j + 1} (image {image_name(j + 1)}): hit rate {value!r} "
                                "is not in [0, 1]", path)
        out.append((image_name(j + 1), value))
    return out


def split_files(arrays, paths, seed: int) -> dict[int, dict[str, list[tuple[str, float]]]]:
    """Split k: train (minus the validation tenth) and val scored by half 1, test by half 2."""
    train, test, hrs1, hrs2 = arrays
    splits = {}
    for r in range(train.shape[0]):
        k = r + 1
        scored = _scores(hrs1, r, train[r], paths[2])
        order = seeded_order(scored, seed, k, name=lambda item: item[0])
        n_val = max(2, round(VAL_FRACTION * len(order)))
        val = {name for name, _ in order[:n_val]}
        splits[k] = {"train": [s for s in scored if s[0] not in val], "val": [s for s in scored if s[0] in val],
                     "test": _scores(hrs2, r, test[r], paths[3])}
    return splits


def consistency(arrays) -> float:
    """Mean over rows of Spearman(half 1, half 2) on that row's train and test images."""
    import numpy as np
    from scipy.stats import spearmanr

    train, test, hrs1, hrs2 = arrays
    rhos = []
    for r in range(train.shape[0]):
        used = np.concatenate([train[r], test[r]])
        rhos.append(float(spearmanr(hrs1[r, used], hrs2[r, used])[0]))
    return float(np.mean(rhos))


def load_images(path: Path, n_images: int):
    """target_images.mat's `img`, H x W x 3 x K uint8 with K >= the scored images."""
    array = shared.variable(shared.load_mat(path, "SUN memorability"), "img", path)
    if array.ndim != 4 or array.shape[2] != 3 or array.dtype.name != "uint8" or array.shape[3] < n_images:
        raise MembenchError(f"img must be a height x width x 3 x images uint8 array with at least {n_images} "
                            f"images (one per column of subject_hrs1); got {array.dtype} {array.shape}", path)
    return array


def write_pngs(img, names: list[str], images_dir: Path) -> None:
    from PIL import Image

    for name in names:
        Image.fromarray(img[:, :, :, int(name[:-4]) - 1]).save(images_dir / name)


def open_sun(root, options=None) -> DerivedLayout:
    opts = parse_options(options, OPTIONS, "sun")
    seed = parse_seed(opts.get("seed"))
    root = Path(root).expanduser()
    found = release.find_file(root, ("image_train_indices.mat",), depth=release.SEARCH_DEPTH + 1)
    if found is None:
        raise MembenchError("not a SUN memorability release: no 'Random splits/image_train_indices.mat' in this "
                            "directory or below (cvpr_memorability_data.zip unpacks to Data/...)", root)
    splits_dir = found.parent
    arrays, paths = read_splits(splits_dir)
    images_mat = splits_dir.parent / "Image data" / "target_images.mat"
    if not images_mat.is_file():
        images_mat = release.find_file(root, ("target_images.mat",), depth=release.SEARCH_DEPTH + 1) or images_mat
    splits = split_files(arrays, paths, seed)
    used = sorted({name for parts in splits.values() for rows in parts.values() for name, _ in rows})
    stat = images_mat.stat() if images_mat.is_file() else None
    key = view_key("sun", *(p.read_bytes() for p in paths), images_mat.resolve(),
                   stat and (stat.st_size, stat.st_mtime_ns), seed)
    dest = datasets_home() / f"sun-{key}"
    if not dest.is_dir():  # the images leave the .mat once, as lossless PNGs
        if not images_mat.is_file():
            raise MembenchError("missing: the SUN memorability release keeps its images in "
                                "Data/Image data/target_images.mat", images_mat)
        img = load_images(images_mat, arrays[2].shape[1])
        write_view(dest, splits, {}, fill=lambda images_dir: write_pngs(img, used, images_dir))
    sources = {name: dest / "images" / name for name in used}
    return DerivedLayout(dest, name="sun", human_consistency=consistency(arrays), sources=sources)


@hookimpl
def register_datasets(register):
    register(DatasetSpec(
        name="sun",
        open=open_sun,
        summary="SUN memorability (Isola et al. 2011): 2,222 scenes, the 25 published splits "
                "(cvpr_memorability_data.zip layout)",
        citation=CITATION,
        size="2,222 images (SUN scenes)",
        split_scheme="25 published train/test splits, train and test scored by different participant halves; "
                     "validation: a seeded tenth of each train set",
        score_measure="hit rate (repeat detected), per participant half",
        consistency_note="computed from the files: mean over the 25 splits of Spearman's rho between the "
                         "participant halves (the paper reports 0.75)",
        license="not stated in the release; the images come from the SUN database",
        homepage="http://web.mit.edu/phillipi/Public/WhatMakesAnImageMemorable/",
        options=OPTIONS,
    ))
