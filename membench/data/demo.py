"""A deterministic synthetic dataset in exactly the LaMem layout.

Each image shows a textured background with one red disc; its "memorability" grows with
the disc's size (plus per-split observer noise, as in LaMem where each split's scores come
from different people). A model that learns shows a clearly positive rho; one that does
not stays near 0. A few images are greyscale or CMYK JPEGs, as in real data.
"""

from __future__ import annotations

import os
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


def generate(root: Path, n_images: int = DEFAULT_IMAGES, n_splits: int = DEFAULT_SPLITS, seed: int = 0) -> Path:
    """Write images/ and splits/ under `root` (atomically: into a temporary sibling first)."""
    import numpy as np
    from PIL import Image, ImageDraw

    if n_images < 20:
        raise MembenchError("the demo dataset needs at least 20 images")
    root = Path(root)
    tmp = root.with_name(root.name + f".tmp{os.getpid()}")
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
    if root.exists():
        import shutil

        shutil.rmtree(root)
    tmp.rename(root)
    return root


def cache_dir() -> Path:
    from membench.util.files import membench_home

    return membench_home() / f"demo-v{VERSION}"


def ensure_demo() -> Path:
    """The demo dataset in the cache directory, generated on first use."""
    root = cache_dir()
    if not (root / "splits" / f"test_{DEFAULT_SPLITS}.txt").is_file():
        root.parent.mkdir(parents=True, exist_ok=True)
        generate(root)
    return root
