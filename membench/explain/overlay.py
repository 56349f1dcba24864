"""Overlays of `membench explain`: the image as the model saw it (its evaluation transform),
then each map laid over it (stretched bilinearly to the image: an 8x8 or 14x14 attention
grid covers the whole image), one PNG per image, and the maps as .npy for other tools."""

from __future__ import annotations

import io
from pathlib import Path

from membench.util.files import atomic_write_bytes, safe_name


def stem(image: Path, index: int, seen: dict[str, int]) -> str:
    """A file stem per image: its name, numbered when two images share one."""
    base = safe_name(Path(image).stem) or f"image{index}"
    seen[base] = seen.get(base, 0) + 1
    return base if seen[base] == 1 else f"{base}_{seen[base]}"


def planned(images, model: str, methods) -> list[str]:
    """The names `save` may give the files of these images (in this order) for these methods."""
    seen: dict[str, int] = {}
    stems = [stem(image, i, seen) for i, image in enumerate(images)]
    return [f"{name}_{safe_name(model)}_{method}{suffix}" for name in stems for method in methods
            for suffix in (".png", ".npy")]


def figure(rgb, maps, title: str):
    """A bare matplotlib Figure: the image, then one panel per map."""
    from matplotlib.figure import Figure

    n = 1 + len(maps.names)
    fig = Figure(figsize=(3.2 * n, 3.6), layout="constrained")
    axes = fig.subplots(1, n, squeeze=False)[0]
    height, width = rgb.shape[:2]
    axes[0].imshow(rgb)
    axes[0].set_title("input (evaluation transform)", fontsize=8)
    for ax, grid, name in zip(axes[1:], maps.maps, maps.names):
        ax.imshow(rgb)
        ax.imshow(grid, cmap="jet", alpha=0.5, interpolation="bilinear", extent=(-0.5, width - 0.5, height - 0.5, -0.5))
        ax.set_title(f"{name}" + (f" ({maps.layer})" if maps.layer else ""), fontsize=8)
    for ax in axes:
        ax.axis("off")
    fig.suptitle(title, fontsize=9)
    return fig


def save(out_dir: Path, name: str, model: str, rgb, maps, title: str) -> list[Path]:
    """OUT/<name>_<model>_<method>.png (the overlay) and .npy (the maps, (K, h, w) float32)."""
    import numpy as np

    base = Path(out_dir) / f"{name}_{safe_name(model)}_{maps.method}"
    buf = io.BytesIO()
    figure(rgb, maps, title).savefig(buf, format="png", dpi=100, metadata={"Software": None})
    atomic_write_bytes(base.with_suffix(".png"), buf.getvalue())
    buf = io.BytesIO()
    np.save(buf, np.asarray(maps.maps, dtype=np.float32))
    atomic_write_bytes(base.with_suffix(".npy"), buf.getvalue())
    return [base.with_suffix(".png"), base.with_suffix(".npy")]
