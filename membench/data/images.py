"""Opening images the same way everywhere, and checking them before hours of training.

Decoding follows the reference pipelines (PIL -> RGB) with three deliberate choices:
- 16-bit images (PNG/TIFF 'I;16', 'I') are scaled to 8 bits (x 255/65535) and float
  images ('F') read as [0, 1] (values above 1 are taken as 0..255), instead of PIL's
  clipping, which turns them white or black.
- EXIF orientation is ignored by default, as the reference pipelines ignore it;
  `--exif-orientation apply` rotates such images (and is part of the configuration).
- An image above the decompression-bomb limit (Pillow's own, 178,956,970 pixels, unless
  `--max-image-pixels N` says otherwise) is refused with its own message.
The two settings travel in environment variables, so that DataLoader workers (forked or
spawned) decode exactly as the main process does.
"""

from __future__ import annotations

import os
import warnings
from dataclasses import dataclass, field
from pathlib import Path

from membench.errors import MembenchError
from membench.spec import Sample

ON_BAD_IMAGE = ("fail", "skip")
EXIF_ORIENTATION = ("ignore", "apply")
EXIF_ENV = "MEMBENCH_EXIF_ORIENTATION"
MAX_PIXELS_ENV = "MEMBENCH_MAX_IMAGE_PIXELS"
DEFAULT_MAX_PIXELS = 2 * 89_478_485  # where Pillow itself refuses (2 x Image.MAX_IMAGE_PIXELS)
_ORIENTATION_TAG = 0x0112


def set_decoding(exif_orientation: str | None = None, max_image_pixels: int | None = None) -> None:
    """Set how images are decoded in this process and its future workers."""
    if exif_orientation is not None:
        if exif_orientation not in EXIF_ORIENTATION:
            raise MembenchError(f"--exif-orientation must be one of {', '.join(EXIF_ORIENTATION)}")
        os.environ[EXIF_ENV] = exif_orientation
    if max_image_pixels is not None:
        if max_image_pixels < 1:
            raise MembenchError("--max-image-pixels must be a positive number of pixels")
        os.environ[MAX_PIXELS_ENV] = str(max_image_pixels)


def exif_orientation() -> str:
    value = os.environ.get(EXIF_ENV, "ignore")
    return value if value in EXIF_ORIENTATION else "ignore"


def max_image_pixels() -> int:
    try:
        return int(os.environ[MAX_PIXELS_ENV])
    except (KeyError, ValueError):
        return DEFAULT_MAX_PIXELS


def decoding_settings() -> dict[str, str]:
    """Settings that change decoded pixels, for the configuration and job keys: empty when
    images are decoded as the reference pipelines do (so earlier keys stay valid)."""
    return {"exif_orientation": "apply"} if exif_orientation() == "apply" else {}


class ImageTooLarge(MembenchError):
    """More pixels than the decompression-bomb limit."""


def _open(path: Path):
    """Image.open with membench's exact pixel limit in place of Pillow's."""
    from PIL import Image

    saved = Image.MAX_IMAGE_PIXELS
    Image.MAX_IMAGE_PIXELS = None  # checked below, against the user's limit
    try:
        im = Image.open(path)
    finally:
        Image.MAX_IMAGE_PIXELS = saved
    pixels, limit = im.width * im.height, max_image_pixels()
    if pixels > limit:
        im.close()
        raise ImageTooLarge(f"image too large: {im.width}x{im.height} = {pixels:,} pixels, above the "
                            f"decompression-bomb limit of {limit:,}; if you trust this file, allow it with "
                            f"--max-image-pixels {pixels}", path)
    return im


def to_rgb(im):
    """RGB, with 16-bit and float images scaled to 8 bits rather than clipped."""
    if im.mode == "RGB":
        return im
    if im.mode.startswith("I") or im.mode == "F":
        import numpy as np
        from PIL import Image

        a = np.asarray(im)
        if im.mode == "F":
            a = np.nan_to_num(a.astype(np.float64), nan=0.0, posinf=0.0, neginf=0.0)
            if a.size and a.max() <= 1.0:
                a = a * 255.0
            a = np.clip(np.rint(a), 0, 255)
        else:  # 'I;16', 'I;16B', 'I' (16-bit PNG/TIFF): 0..65535 -> 0..255, rounded
            a = (np.clip(a.astype(np.int64), 0, 65535) * 255 + 32767) // 65535
        return Image.fromarray(a.astype(np.uint8), "L").convert("RGB")
    return im.convert("RGB")


def open_rgb(path: Path):
    """Decode an image to RGB (CMYK, greyscale, palette, RGBA, 16-bit and float are
    converted; EXIF orientation applied only with --exif-orientation apply)."""
    from PIL import Image, ImageOps

    with warnings.catch_warnings():
        warnings.simplefilter("ignore", Image.DecompressionBombWarning)
        with _open(path) as im:
            im.load()
            if exif_orientation() == "apply":
                rotated = ImageOps.exif_transpose(im)
                if rotated is not None:
                    return to_rgb(rotated)
            return to_rgb(im)


@dataclass
class ImageCheck:
    """What a full decode of every listed image found."""

    checked: int = 0
    missing: list[str] = field(default_factory=list)
    corrupt: list[str] = field(default_factory=list)  # "path: reason"
    converted: dict[str, int] = field(default_factory=dict)  # mode -> count
    rotated: list[str] = field(default_factory=list)  # images carrying an EXIF rotation tag

    @property
    def bad(self) -> set[str]:
        return {m.split(": ")[0] for m in self.missing + self.corrupt}

    def notes(self) -> list[str]:
        """What is worth a line before training: conversions, and rotation tags (named once)."""
        out = []
        if self.converted:
            kinds = ", ".join(f"{n} {mode}" for mode, n in sorted(self.converted.items()))
            out.append(f"converting non-RGB images to RGB when loading them ({kinds})")
        if self.rotated:
            names = ", ".join(Path(p).name for p in self.rotated[:5])
            more = f" and {len(self.rotated) - 5} more" if len(self.rotated) > 5 else ""
            if exif_orientation() == "apply":
                out.append(f"{len(self.rotated)} image(s) carry an EXIF rotation tag, applied "
                           f"(--exif-orientation apply): {names}{more}")
            else:
                out.append(f"{len(self.rotated)} image(s) carry an EXIF rotation tag, ignored as the reference "
                           f"pipelines do (--exif-orientation apply rotates them): {names}{more}")
        return out

    def problems(self) -> list[str]:
        return ([f"{p}: image listed in the split files but missing on disk" for p in self.missing]
                + [f"{p}" for p in self.corrupt])


def check_one(path: Path) -> tuple[str, str | None, bool]:
    """Return (mode, problem or None, carries an EXIF rotation tag). Decodes fully (at
    reduced JPEG scale) so that a truncated file is caught, not only a broken header."""
    from PIL import Image

    if not path.is_file():
        return "", "missing", False
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            with _open(path) as im:
                mode = im.mode
                rotated = _rotation_tag(im)
                im.draft("RGB", (max(1, im.width // 8), max(1, im.height // 8)))
                im.load()
    except ImageTooLarge as exc:
        return "", exc.message, False
    except Image.UnidentifiedImageError:
        if path.stat().st_size == 0:
            return "", "empty file, not an image", False
        return "", "not an image: no image format recognised in this file (whatever its name says)", False
    except Exception as exc:  # PIL raises many types for broken files
        kind = "truncated or corrupt image" if path.suffix.lower() in (".jpg", ".jpeg") else "unreadable image"
        return "", f"{kind} ({type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''})", False
    return mode, None, rotated


def _rotation_tag(im) -> bool:
    try:
        return im.getexif().get(_ORIENTATION_TAG, 1) not in (1, None)
    except Exception:  # a damaged EXIF block is not a damaged image
        return False


def check_images(samples: list[Sample] | tuple[Sample, ...], progress=None) -> ImageCheck:
    """Decode every distinct image once; `progress(n)` is called as images are checked."""
    result = ImageCheck()
    seen: set[Path] = set()
    for s in samples:
        if s.path in seen:
            continue
        seen.add(s.path)
        mode, problem, rotated = check_one(s.path)
        result.checked += 1
        if problem == "missing":
            result.missing.append(str(s.path))
        elif problem:
            result.corrupt.append(f"{s.path}: {problem}")
        elif mode != "RGB":
            result.converted[mode] = result.converted.get(mode, 0) + 1
        if rotated:
            result.rotated.append(str(s.path))
        if progress:
            progress(1)
    return result


def apply_policy(check: ImageCheck, on_bad_image: str, *,
                 missing: str = "image listed in the split files is missing on disk",
                 skip: str = "use --on-bad-image skip to leave such images out") -> None:
    """`fail`: the first bad image is an error naming it. `skip`: the caller drops them.
    `missing` and `skip` word the message for the command (run, predict) that applies it."""
    if on_bad_image not in ON_BAD_IMAGE:
        raise MembenchError(f"--on-bad-image must be one of {ON_BAD_IMAGE}")
    if on_bad_image == "fail":
        if check.missing:
            more = f" (and {len(check.missing) - 1} more)" if len(check.missing) > 1 else ""
            raise MembenchError(f"{missing}{more}; {skip}", check.missing[0])
        if check.corrupt:
            path, _, why = check.corrupt[0].partition(": ")
            more = f" (and {len(check.corrupt) - 1} more)" if len(check.corrupt) > 1 else ""
            raise MembenchError(f"{why}{more}; {skip}", path)
