"""Generated replicas of the field's dataset releases, in each source's exact file format
(as far as it is verified: see each plugin's docstring), with tiny random images and fake
scores. No third-party image or score is used or committed.

Each `make_*` writes a release tree under `root` and returns the true per-image score it
wrote, keyed by the name membench gives the image, so tests compare what a plugin reads
with what was written.
"""

from __future__ import annotations

import csv
from pathlib import Path

import numpy as np
import scipy.io

MEMCAT_CATEGORIES = {"animal": ("bear", "cat"), "food": ("pizza",), "landscape": ("beach",),
                     "sports": ("tennis",), "vehicle": ("bus",)}


def write_jpeg(path: Path, seed: int, size=(24, 20)) -> None:
    from PIL import Image

    rng = np.random.RandomState(seed)
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(rng.randint(0, 255, size=(size[1], size[0], 3)).astype("uint8")).save(path, quality=85)


def make_memcat(root: Path, n: int = 30, seed: int = 0, wrap: str = "") -> dict[str, float]:
    """MemCat_data/memcat_image_data.csv (unnamed index column first, the score column
    last) + MemCat_images/MemCat/<category>/<subcategory>/<image_file>; `wrap` puts it all
    in a folder, as an archive would."""
    rng = np.random.RandomState(seed)
    base = root / wrap if wrap else root
    (base / "MemCat_data").mkdir(parents=True, exist_ok=True)
    subs = [(c, s) for c, ss in MEMCAT_CATEGORIES.items() for s in ss]
    truth = {}
    with open(base / "MemCat_data" / "memcat_image_data.csv", "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["", "image_file", "category", "subcategory", "H", "FA", "n_resp",
                    "memorability_wo_fa_correction", "memorability_w_fa_correction"])
        for i in range(n):
            category, sub = subs[i % len(subs)]
            image = f"{sub}_{i:05d}.jpg"
            n_resp = int(rng.randint(80, 120))
            hits = int(rng.randint(n_resp // 3, n_resp))
            fas = int(rng.randint(0, 8))
            w.writerow([i, image, category, sub, hits, fas, n_resp, hits / n_resp, (hits - fas) / n_resp])
            write_jpeg(base / "MemCat_images" / "MemCat" / category / sub / image, seed=i)
            truth[f"{category}__{sub}__{image}"] = (hits - fas) / n_resp
    return truth


def make_things(root: Path, n: int = 30, seed: int = 0, missing_scores: int = 0) -> dict[str, float]:
    """THINGS_Memorability_Scores.csv (image_name, file_path "images/<concept>/<image>",
    cr) + object_images/<concept>/<image>.jpg, as the THINGS archive unpacks;
    `missing_scores` rows at the end get no cr."""
    rng = np.random.RandomState(seed)
    root.mkdir(parents=True, exist_ok=True)
    concepts = ("aardvark", "abacus", "accordion", "acorn")
    truth = {}
    with open(root / "THINGS_Memorability_Scores.csv", "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["image_name", "file_path", "cr"])
        for i in range(n + missing_scores):
            concept = concepts[i % len(concepts)]
            image = f"{concept}_{i:02d}{'abcdefgh'[i % 8]}.jpg"
            cr = float(np.round(rng.uniform(0.1, 0.9), 6))
            scored = i < n
            w.writerow([image[:-4], f"images/{concept}/{image}", repr(cr) if scored else ""])
            write_jpeg(root / "object_images" / concept / image, seed=100 + i)
            if scored:
                truth[f"{concept}__{image}"] = cr
    return truth


def figrim_entry(filename: str, category: str, amt1: tuple, amt2: tuple | None):
    def counts(c):
        if c is None:
            return np.zeros((0, 0))  # not in that experiment: an empty matrix in MATLAB
        block = np.zeros((1,), dtype=[("hits", "O"), ("misses", "O"), ("false_alarms", "O"),
                                      ("correct_rejections", "O")])
        for name, value in zip(block.dtype.names, c):
            block[0][name] = float(value)
        return block
    return (filename, category, counts(amt1), counts(amt2))


def save_figrim(path: Path, entries: list) -> None:
    array = np.zeros((1, len(entries)), dtype=[("filename", "O"), ("category", "O"), ("amt1", "O"),
                                               ("amt2", "O")])
    for i, e in enumerate(entries):
        array[0, i] = e
    scipy.io.savemat(path, {"image_data_targets": array})


def make_figrim(root: Path, n: int = 30, seed: int = 0) -> dict[str, float]:
    """image_data_targets.mat (struct array: filename, category, amt1/amt2 with hits,
    misses, false_alarms, correct_rejections) + targets/<category>/<filename>."""
    rng = np.random.RandomState(seed)
    root.mkdir(parents=True, exist_ok=True)
    categories = ("airport_terminal", "bathroom", "castle")
    entries, truth = [], {}
    for i in range(n):
        category = categories[i % len(categories)]
        filename = f"sun_a{i:05d}.jpg"
        hits, misses = int(rng.randint(10, 60)), int(rng.randint(1, 40))
        amt1 = (hits, misses, int(rng.randint(0, 10)), int(rng.randint(40, 90)))
        amt2 = None if i % 4 == 0 else (misses, hits, 1, 50)
        entries.append(figrim_entry(filename, category, amt1, amt2))
        write_jpeg(root / "targets" / category / filename, seed=200 + i)
        truth[f"{category}__{filename}"] = hits / (hits + misses)
    save_figrim(root / "image_data_targets.mat", entries)
    return truth


def make_sun(root: Path, n_images: int = 40, n_extra: int = 4, n_splits: int = 25, seed: int = 0,
             size: int = 16):
    """cvpr_memorability_data's Data/: Image data/target_images.mat (img: size x size x 3 x
    (n_images + n_extra) uint8; the extra ones stand for the textures the paper skips),
    Random splits/image_{train,test}_indices.mat (n_splits x n/2, 1-based) and
    subject_hrs{1,2}.mat (n_splits x n_images). Returns (train, test, hrs1, hrs2, img)."""
    rng = np.random.RandomState(seed)
    data = root / "Data"
    (data / "Image data").mkdir(parents=True)
    (data / "Random splits").mkdir()
    img = rng.randint(0, 256, size=(size, size, 3, n_images + n_extra)).astype(np.uint8)
    scipy.io.savemat(data / "Image data" / "target_images.mat", {"img": img})
    truth = rng.uniform(0.3, 0.9, size=n_images)
    hrs1 = np.clip(truth + rng.normal(0, 0.1, size=(n_splits, n_images)), 0, 1)
    hrs2 = np.clip(truth + rng.normal(0, 0.1, size=(n_splits, n_images)), 0, 1)
    half = n_images // 2
    train = np.zeros((n_splits, half))
    test = np.zeros((n_splits, n_images - half))
    for r in range(n_splits):
        order = rng.permutation(n_images) + 1.0  # MATLAB indices, stored as doubles
        train[r], test[r] = order[:half], order[half:]
    for name, value in (("image_train_indices", train), ("image_test_indices", test), ("subject_hrs1", hrs1),
                        ("subject_hrs2", hrs2)):
        scipy.io.savemat(data / "Random splits" / f"{name}.mat", {name: value})
    return train, test, hrs1, hrs2, img
