"""A deterministic synthetic dataset in exactly the LaMem layout.

Each image shows a textured background with one red disc; its "memorability" grows with
the disc's size (plus per-split observer noise, as in LaMem where each split's scores come
from different people). A model that learns shows a clearly positive rho; one that does
not stays near 0. A few images are greyscale or CMYK JPEGs, as in real data.
"""

from __future__ import annotations

import os
import re
import shutil
from pathlib import Path

from membench.errors import MembenchError

# LaMem's proportions: 45,000 / 3,741 / 10,000 of 58,741.
TRAIN_FRACTION = 45_000 / 58_741
VAL_FRACTION = 3_741 / 58_741
DEFAULT_IMAGES = 1200
DEFAULT_SPLITS = 5
VERSION = 1  # bump when the generated content changes (invalidates caches)


def latent_to_score(u: float) -> float:
    return 0.45 + 0.45 * u


MARKER = ".membench-demo.json"  # written first: this directory is membench's demo dataset
LOCK = ".membench-demo.lock"
WRITTEN_BY = "membench demo-data"
# What generate() writes: only files with these names are ever replaced (nothing else is touched).
OWN_NAMES = {"images": re.compile(r"\d{8}\.jpg"), "splits": re.compile(r"(train|val|test)_\d+\.txt")}
_SCRATCH = re.compile(r"\.demo-(new|old)\.\d+")


def generate(root: Path, n_images: int = DEFAULT_IMAGES, n_splits: int = DEFAULT_SPLITS, seed: int = 0) -> Path:
    """Write images/ and splits/ under `root`: a new or empty directory, or one this function
    wrote before (its MARKER file), whose images/ and splits/ are then replaced; nothing else
    in it is touched. Written into a scratch folder inside `root` first, so a killed run
    leaves the previous dataset."""
    from membench.util.files import atomic_write_json, file_lock

    if n_images < 20:
        raise MembenchError("the demo dataset needs at least 20 images")
    root = Path(root)
    _claim(root)
    with file_lock(root / LOCK):  # concurrent first uses of the cached demo agree
        for p in root.iterdir():  # scratch folders of a killed run (none is live: we hold the lock)
            if _SCRATCH.fullmatch(p.name) and p.is_dir() and not p.is_symlink():
                shutil.rmtree(p)
        _check_own(root)
        new = root / f".demo-new.{os.getpid()}"
        _write(new, n_images, n_splits, seed)
        old = root / f".demo-old.{os.getpid()}"
        old.mkdir()
        for sub in OWN_NAMES:
            if os.path.lexists(root / sub):
                os.rename(root / sub, old / sub)
            os.rename(new / sub, root / sub)
        atomic_write_json(root / MARKER, {"written_by": WRITTEN_BY, "version": VERSION, "images": n_images,
                                          "splits": n_splits, "seed": seed})
        shutil.rmtree(old)
        new.rmdir()
    return root


def _claim(root: Path) -> None:
    """Refuse a directory membench did not make a demo dataset; mark a new or empty one."""
    from membench.util.files import atomic_write_json

    if os.path.lexists(root) and not root.is_dir():
        raise MembenchError("exists and is not a directory", root)
    marker = root / MARKER
    if os.path.lexists(marker):
        if not _is_marker(marker):
            raise MembenchError("not a marker membench wrote; membench writes a demo dataset only into a "
                                "new or empty directory or one it wrote before", marker)
        return
    root.mkdir(parents=True, exist_ok=True)
    if any(root.iterdir()):
        raise MembenchError(f"not empty and not a demo dataset membench wrote (no {MARKER}); membench "
                            "never deletes what it did not write: give a new or empty directory", root)
    atomic_write_json(marker, {"written_by": WRITTEN_BY, "version": VERSION})


def _is_marker(path: Path) -> bool:
    import json

    try:
        return not path.is_symlink() and json.loads(path.read_text()).get("written_by") == WRITTEN_BY
    except (OSError, ValueError, AttributeError):
        return False


def _check_own(root: Path) -> None:
    """images/ and splits/ hold only files generate() writes (never a link): else refuse."""
    for sub, names in OWN_NAMES.items():
        folder = root / sub
        if not os.path.lexists(folder):
            continue
        if folder.is_symlink() or not folder.is_dir():
            raise MembenchError("membench did not write this (a link or a file, not its folder): move it "
                                "away, then run again", folder)
        for entry in os.scandir(folder):
            if not (names.fullmatch(entry.name) and entry.is_file(follow_symlinks=False)):
                raise MembenchError("membench did not write this into its demo dataset and never deletes "
                                    "what it did not write: move it away, then run again", Path(entry.path))


def _write(tmp: Path, n_images: int, n_splits: int, seed: int) -> None:
    import numpy as np
    from PIL import Image, ImageDraw

    images = tmp / "images"
    splits = tmp / "splits"
    images.mkdir(parents=True, exist_ok=True)
    splits.mkdir(exist_ok=True)
    rng = np.random.RandomState(seed)
    names, latents = [], []
    for i in range(n_images):
        w, h = int(rng.randint(200, 400)), int(rng.randint(160, 320))
        u = float(rng.rand())
        base = rng.randint(40, 200, size=3)
        noise = rng.randint(-40, 40, size=(h // 8 + 1, w // 8 + 1, 3))
        tex = np.clip(base + noise, 0, 255).astype("uint8")
        im = Image.fromarray(tex).resize((w, h), Image.BILINEAR)
        r = (0.08 + 0.32 * u) * min(w, h)
        cx, cy = rng.uniform(r, w - r), rng.uniform(r, h - r)
        ImageDraw.Draw(im).ellipse([cx - r, cy - r, cx + r, cy + r], fill=(230, 30, 30))
        kind = i % 50
        if kind == 7:
            im = im.convert("L")  # greyscale JPEGs exist in LaMem
        elif kind == 23:
            im = im.convert("CMYK")  # so do CMYK ones
        name = f"{i + 1:08d}.jpg"
        im.save(images / name, quality=90)
        names.append(name)
        latents.append(u)
    n_train = int(round(TRAIN_FRACTION * n_images))
    n_val = max(2, int(round(VAL_FRACTION * n_images)))
    for k in range(1, n_splits + 1):
        order = rng.permutation(n_images)
        parts = {"train": order[:n_train], "val": order[n_train:n_train + n_val],
                 "test": order[n_train + n_val:]}
        for part, idx in parts.items():
            lines = []
            for j in idx:
                score = latent_to_score(latents[j]) + rng.normal(0, 0.04)
                lines.append(f"{names[j]} {min(1.0, max(0.0, score)):.6f}\n")
            (splits / f"{part}_{k}.txt").write_text("".join(lines))


def cache_dir() -> Path:
    from membench.util.files import membench_home

    return membench_home() / f"demo-v{VERSION}"


def ensure_demo() -> Path:
    """The demo dataset in the cache directory, generated on first use."""
    from membench.util.files import file_lock

    root = cache_dir()
    done = lambda: (root / "splits" / f"test_{DEFAULT_SPLITS}.txt").is_file()  # noqa: E731
    if not done():
        with file_lock(root.parent / f".{root.name}.lock"):  # parallel first uses: one writes it
            if not done():
                generate(root)
    return root
