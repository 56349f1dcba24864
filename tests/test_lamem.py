"""The LaMem-layout reader on generated data."""

import pytest

from membench.data.layout import LamemLayout, parse_splits
from membench.errors import MembenchError


def test_demo_is_in_lamem_layout_with_lamem_proportions(demo_root):
    ds = LamemLayout(demo_root)
    assert ds.splits == (1, 2, 3, 4, 5)
    split = ds.load_split(1)
    n = len(split.train) + len(split.val) + len(split.test)
    assert n == 80
    assert len(split.train) == round(80 * 45_000 / 58_741)
    names = [s.name for part in split.parts().values() for s in part]
    assert len(set(names)) == 80  # disjoint parts covering every image
    assert all(0 <= s.score <= 1 for s in split.test)


def test_same_image_scored_per_split(demo_root):
    ds = LamemLayout(demo_root)
    a = {s.name: s.score for p in ds.load_split(1).parts().values() for s in p}
    b = {s.name: s.score for p in ds.load_split(2).parts().values() for s in p}
    assert sum(a[n] != b[n] for n in a) > 70


def test_demo_scores_depend_on_content(demo_root):
    """The disc area drives the score: red-pixel fraction correlates with it."""
    import numpy as np
    from PIL import Image
    from scipy.stats import spearmanr

    split = LamemLayout(demo_root).load_split(1)
    red, score = [], []
    for s in split.train:
        a = np.asarray(Image.open(s.path).convert("RGB")).astype(int)
        red.append(((a[..., 0] > 180) & (a[..., 1] < 90)).mean())
        score.append(s.score)
    assert spearmanr(red, score).statistic > 0.5


def test_fingerprint_changes_with_split_content(tmp_path):
    from membench.data.demo import generate

    root = generate(tmp_path / "d", n_images=30, n_splits=1)
    ds = LamemLayout(root)
    before = ds.fingerprint()
    f = root / "splits" / "test_1.txt"
    f.write_text(f.read_text().replace("0.", "0.0", 1))
    assert ds.fingerprint() != before


def test_parse_splits(demo_root):
    assert parse_splits("all", (1, 2, 3), "x") == [1, 2, 3]
    assert parse_splits("3,1,3", (1, 2, 3), "x") == [3, 1]
    with pytest.raises(MembenchError, match="split 7 not found"):
        parse_splits("7", (1, 2, 3), "x")
    with pytest.raises(MembenchError, match="--splits takes"):
        parse_splits("one", (1,), "x")


def test_not_a_lamem_directory(tmp_path):
    with pytest.raises(MembenchError, match="missing images/"):
        LamemLayout(tmp_path)
