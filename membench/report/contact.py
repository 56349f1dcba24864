"""The contact sheet of `membench predict --html DIR`: the user's images sorted by predicted
memorability, one column per model (thumbnail, rank, score, optionally the map of what the
model attends to), with the models' rank correlations, beside DIR/scores.csv (the CSV that
predict prints). Self-contained like the report's site (membench.report.pages): thumbnails
are written into DIR/thumbs/ (and DIR/maps/), the stylesheet and script beside index.html,
nothing is fetched."""

from __future__ import annotations

import io
from html import escape
from pathlib import Path

from membench.report import svg
from membench.report.pages import ASSETS, page, write_assets
from membench.util.files import atomic_write_bytes, atomic_write_text

THUMB = 192  # px, the longer side of a thumbnail


def thumbnail(path: Path):
    """The image as RGB, shrunk to THUMB px on its longer side (Pillow)."""
    from membench.data.images import open_rgb

    image = open_rgb(path)
    image.thumbnail((THUMB, THUMB))
    return image


def overlay(image, grid):
    """`grid` (h, w), scaled to its maximum and coloured with matplotlib's jet, stretched
    bilinearly over the thumbnail and blended at half opacity."""
    import numpy as np
    from matplotlib import colormaps
    from PIL import Image

    grid = np.asarray(grid, dtype=np.float64)
    top = grid.max()
    rgba = colormaps["jet"](grid / top if top > 0 else grid, bytes=True)
    heat = Image.fromarray(rgba[..., :3]).resize(image.size, Image.Resampling.BILINEAR)
    return Image.blend(image, heat, 0.5)


def jpeg(image) -> bytes:
    buf = io.BytesIO()
    image.save(buf, format="JPEG", quality=85)
    return buf.getvalue()


def correlations(scores: dict[str, list[float]]) -> list[tuple[str, str, float]]:
    """Spearman's rho between every pair of models' predictions on the same images."""
    from membench.results.metrics import spearman

    names = list(scores)
    return [(a, b, spearman(scores[a], scores[b])) for i, a in enumerate(names) for b in names[i + 1:]]


def ranks(values: list[float]) -> list[int]:
    """1 for the most memorable; ties keep the images' order."""
    order = sorted(range(len(values)), key=lambda i: (-values[i], i))
    out = [0] * len(values)
    for rank, i in enumerate(order, start=1):
        out[i] = rank
    return out


def card(i: int, name: str, score: float, rank: int, others: str, map_src: str | None) -> str:
    img = f'<img src="thumbs/{i:04d}.jpg" alt="{svg.attr(name)}" loading="lazy">'
    extra = f'<img src="{svg.attr(map_src)}" alt="map of {svg.attr(name)}" loading="lazy">' if map_src else ""
    return (f'<figure class="card" data-rank="{rank}" data-score="{score:.6f}">{img}{extra}<figcaption>'
            f"<b>#{rank}</b> {score:.3f}<br>{escape(name)}{others}</figcaption></figure>")


def planned(n_images: int, n_models: int, maps: bool) -> list[str]:
    """Every name (relative to DIR) `write` may write for so many images and models."""
    return ["scores.csv", "index.html", *ASSETS, *(f"thumbs/{i:04d}.jpg" for i in range(n_images)),
            *(f"maps/{m:02d}_{i:04d}.jpg" for m in range(n_models if maps else 0) for i in range(n_images))]


def write(out: Path, names: list[str], paths: list[Path], scores: dict[str, list[float]], csv_text: str,
          maps: dict[str, list] | None = None, map_labels: dict[str, str] | None = None) -> list[Path]:
    """DIR/index.html (with its stylesheet and script), DIR/scores.csv, DIR/thumbs/*.jpg and
    (with `maps`: model -> one (h, w) grid per image) DIR/maps/*.jpg; returns the written paths."""
    out = Path(out)
    written = [out / "scores.csv", *write_assets(out)]
    atomic_write_text(out / "scores.csv", csv_text)
    thumbs = []
    for i, path in enumerate(paths):
        thumbs.append(thumbnail(path))
        atomic_write_bytes(out / "thumbs" / f"{i:04d}.jpg", jpeg(thumbs[-1]))
        written.append(out / "thumbs" / f"{i:04d}.jpg")
    map_files: dict[str, list[str]] = {}
    for m, (model, grids) in enumerate((maps or {}).items()):
        map_files[model] = [f"maps/{m:02d}_{i:04d}.jpg" for i in range(len(paths))]
        for i, grid in enumerate(grids):
            atomic_write_bytes(out / map_files[model][i], jpeg(overlay(thumbs[i], grid)))
            written.append(out / map_files[model][i])
    atomic_write_text(out / "index.html", render(names, scores, map_files, map_labels or {}))
    return written + [out / "index.html"]


def render(names: list[str], scores: dict[str, list[float]], map_files: dict[str, list[str]],
           map_labels: dict[str, str]) -> str:
    by_model = {model: ranks(values) for model, values in scores.items()}
    body = [f"<h1>Predicted memorability of {len(names)} image{'s' * (len(names) != 1)}</h1>",
            '<p class="note">Sorted by the predicted score, most memorable first (<code>membench predict</code>; '
            'the scores are in <a href="scores.csv">scores.csv</a>).' +
            (" Maps: " + "; ".join(f"{escape(m)}: {escape(t)}" for m, t in map_labels.items()) + "." if map_labels
             else "") + "</p>"]
    pairs = correlations(scores)
    if pairs:
        body.append('<table id="rank-correlations"><thead><tr><th>Models</th><th>Spearman ρ of their scores</th>'
                    "</tr></thead><tbody>" + "".join(f"<tr><td>{escape(a)} vs {escape(b)}</td><td class=\"num\">"
                                                     f"{rho:.3f}</td></tr>" for a, b, rho in pairs) + "</tbody></table>")
    columns = []
    for model, values in scores.items():
        order = sorted(range(len(names)), key=lambda i: by_model[model][i])
        cards = []
        for i in order:
            others = "".join(f"<br><small>{escape(o)}: #{r[i]}</small>" for o, r in by_model.items() if o != model)
            src = map_files.get(model, [None] * len(names))[i]
            cards.append(card(i, names[i], values[i], by_model[model][i], others, src))
        columns.append(f'<section class="sheet" data-model="{svg.attr(model)}"><h2>{escape(model)}</h2>'
                       + "".join(cards) + "</section>")
    body.append('<div class="sheets">' + "".join(columns) + "</div>")
    style = ("<style>.sheets{display:flex;gap:1rem;align-items:flex-start}.sheet{flex:1;min-width:220px}"
             ".card{margin:0 0 .8rem;padding:.3rem;border:1px solid #ddd;border-radius:4px}"
             ".card img{display:block;max-width:100%;margin-bottom:.2rem}.card figcaption{font-size:.8rem}</style>")
    return page("membench predict: contact sheet", [style, *body])
