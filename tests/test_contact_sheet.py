"""`membench predict --html DIR`: the contact sheet holds every image once per model, sorted
by that model's score, with the thumbnails and maps it names on disk, beside the CSV that
predict prints; several models side by side with their rank correlation (scipy's)."""

from __future__ import annotations

import csv
import io
import re

import pytest
from scipy.stats import spearmanr


@pytest.fixture
def images(demo_root):
    return sorted((demo_root / "images").glob("*.jpg"))[:6]


def test_one_model_sheet_sorted_by_score_beside_the_csv(tiny_plugin, images, tmp_path, run_cli):
    sheet = tmp_path / "sheet"
    code, out, err = run_cli("predict", "--model", "tiny-cnn", "--pretrained", "none", *images, "--html", sheet)
    assert code == 0, err
    rows = list(csv.DictReader(io.StringIO(out)))
    assert list(rows[0]) == ["image", "score"]  # one model: the CSV predict always printed
    assert (sheet / "scores.csv").read_text() == out
    page = (sheet / "index.html").read_text()
    cards = re.findall(r'<figure class="card" data-rank="(\d+)" data-score="([0-9.e-]+)"><img src="([^"]+)"', page)
    assert len(cards) == len(images)
    assert [float(s) for _, s, _ in cards] == sorted((float(r["score"]) for r in rows), reverse=True)
    assert [int(r) for r, _, _ in cards] == list(range(1, len(images) + 1))
    for _, _, src in cards:
        assert (sheet / src).read_bytes()[:2] == b"\xff\xd8"  # a JPEG thumbnail
    assert "rank-correlations" not in page and "https://" not in page


def test_several_models_side_by_side_with_their_rank_correlation_and_maps(tiny_plugin, images, tmp_path, run_cli):
    pytest.importorskip("pytorch_grad_cam", reason="the maps of a CNN are Grad-CAM (extra: explain)")
    sheet = tmp_path / "sheet"
    code, out, err = run_cli("predict", "--model", "tiny-cnn,tiny-chain", "--pretrained", "none", *images,
                             "--html", sheet, "--maps")
    assert code == 0, err
    rows = list(csv.DictReader(io.StringIO(out)))
    assert list(rows[0]) == ["image", "tiny-cnn", "tiny-chain"]
    page = (sheet / "index.html").read_text()
    rho = spearmanr([float(r["tiny-cnn"]) for r in rows], [float(r["tiny-chain"]) for r in rows])[0]
    assert re.search(rf"tiny-cnn vs tiny-chain</td><td class=\"num\">{rho:.3f}</td>", page)
    for model in ("tiny-cnn", "tiny-chain"):
        section = page[page.index(f'data-model="{model}"'):]
        section = section[:section.index("</section>")]
        scores = [float(s) for s in re.findall(r'data-score="([0-9.e-]+)"', section)]
        assert scores == sorted((float(r[model]) for r in rows), reverse=True)
        maps = re.findall(r'<img src="(maps/[^"]+)" alt="map of', section)
        assert len(maps) == len(images) and all((sheet / m).is_file() for m in maps)
    assert "Grad-CAM" in page


def test_sheet_errors_are_one_line(tiny_plugin, images, tmp_path, run_cli):
    code, _, err = run_cli("predict", "--model", "tiny-cnn", "--pretrained", "none", images[0], "--maps")
    assert code == 2 and "--maps draws the maps on the contact sheet: add --html DIR" in err
    code, _, err = run_cli("predict", "--model", "tiny-cnn,tiny-chain", "--checkpoint", tmp_path / "a.pt",
                           images[0])
    assert code == 2 and "1 --checkpoint for 2 models: give one per model" in err
