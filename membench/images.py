"""Opening images the same way everywhere, and checking them before hours of training."""

from __future__ import annotations

import warnings
from dataclasses import dataclass, field
from pathlib import Path

from membench.errors import MembenchError
from membench.spec import Sample

ON_BAD_IMAGE = ("fail", "skip")


def open_rgb(path: Path):
    """Decode an image to RGB (CMYK, greyscale, palette and RGBA are converted)."""
    from PIL import Image

    with warnings.catch_warnings():
        warnings.simplefilter("ignore", Image.DecompressionBombWarning)
        with Image.open(path) as im:
            im.load()
            return im if im.mode == "RGB" else im.convert("RGB")


@dataclass
class ImageCheck:
    """What a full decode of every listed image found."""

    checked: int = 0
    missing: list[str] = field(default_factory=list)
    corrupt: list[str] = field(default_factory=list)  # "path: reason"
    converted: dict[str, int] = field(default_factory=dict)  # mode -> count

    @property
    def bad(self) -> set[str]:
        return {m.split(": ")[0] for m in self.missing + self.corrupt}

    def problems(self) -> list[str]:
        return ([f"{p}: image listed in the split files but missing on disk" for p in self.missing]
                + [f"{p}" for p in self.corrupt])


def check_one(path: Path) -> tuple[str, str | None]:
    """Return (mode, problem or None). Decodes fully (at reduced JPEG scale) so that a
    truncated file is caught, not only a broken header."""
    from PIL import Image

    if not path.is_file():
        return "", "missing"
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            with Image.open(path) as im:
                mode = im.mode
                im.draft("RGB", (max(1, im.width // 8), max(1, im.height // 8)))
                im.load()
    except Image.UnidentifiedImageError:
        if path.stat().st_size == 0:
            return "", "empty file, not an image"
        return "", "not an image: no image format recognised in this file (whatever its name says)"
    except Exception as exc:  # PIL raises many types for broken files
        kind = "truncated or corrupt image" if path.suffix.lower() in (".jpg", ".jpeg") else "unreadable image"
        return "", f"{kind} ({type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''})"
    return mode, None


def check_images(samples: list[Sample] | tuple[Sample, ...], progress=None) -> ImageCheck:
    """Decode every distinct image once; `progress(n)` is called as images are checked."""
    result = ImageCheck()
    seen: set[Path] = set()
    for s in samples:
        if s.path in seen:
            continue
        seen.add(s.path)
        mode, problem = check_one(s.path)
        result.checked += 1
        if problem == "missing":
            result.missing.append(str(s.path))
        elif problem:
            result.corrupt.append(f"{s.path}: {problem}")
        elif mode != "RGB":
            result.converted[mode] = result.converted.get(mode, 0) + 1
        if progress:
            progress(1)
    return result


def apply_policy(check: ImageCheck, on_bad_image: str) -> None:
    """`fail`: the first bad image is an error naming it. `skip`: the caller drops them."""
    if on_bad_image not in ON_BAD_IMAGE:
        raise MembenchError(f"--on-bad-image must be one of {ON_BAD_IMAGE}")
    if on_bad_image == "fail":
        if check.missing:
            more = f" (and {len(check.missing) - 1} more)" if len(check.missing) > 1 else ""
            raise MembenchError(f"image listed in the split files is missing on disk{more}; "
                                "use --on-bad-image skip to leave such images out", check.missing[0])
        if check.corrupt:
            path, _, why = check.corrupt[0].partition(": ")
            more = f" (and {len(check.corrupt) - 1} more)" if len(check.corrupt) > 1 else ""
            raise MembenchError(f"{why}{more}; use --on-bad-image skip to leave such images out", path)
