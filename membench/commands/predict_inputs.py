"""What `membench predict` scores: files and directories as given, bad images handled with
predict's own advice (not the split-file wording of `run`)."""

from __future__ import annotations

import sys
from pathlib import Path

from membench.errors import MembenchError

IMAGE_SUFFIXES = frozenset({".jpg", ".jpeg", ".png", ".bmp", ".gif", ".tif", ".tiff", ".webp", ".ppm", ".pgm"})


def expand(paths: list[Path], recursive: bool) -> list[Path]:
    """Files as given; a directory only with --recursive (every image under it, sorted,
    hidden files and folders left out)."""
    out: list[Path] = []
    for p in paths:
        if p.is_dir():
            if not recursive:
                raise MembenchError("is a directory; give image files, or add --recursive to score every "
                                    "image under it", p)
            found = sorted(q for q in p.rglob("*") if q.is_file() and q.suffix.lower() in IMAGE_SUFFIXES
                           and not any(part.startswith(".") for part in q.relative_to(p).parts))
            if not found:
                raise MembenchError(f"no images ({', '.join(sorted(IMAGE_SUFFIXES))}) under this directory", p)
            out.extend(found)
        else:
            out.append(p)
    return out


def usable(samples, on_bad_image: str):
    """Decode every image once; `fail` stops at the first bad one with predict's advice,
    `skip` leaves bad ones out (named on stderr) and refuses when none is left."""
    from membench.data.images import apply_policy, check_images

    check = check_images(samples)
    apply_policy(check, on_bad_image, missing="image not found",
                 skip="use --on-bad-image skip to score the other images")
    for note in check.notes():
        print(f"membench: {note}", file=sys.stderr)
    bad = check.bad
    if not bad:
        return samples
    kept = tuple(s for s in samples if str(s.path) not in bad)
    names = ", ".join(sorted(bad)[:3]) + (f" and {len(bad) - 3} more" if len(bad) > 3 else "")
    print(f"membench: warning: skipping {len(bad)} missing or unreadable image(s) (--on-bad-image skip): {names}",
          file=sys.stderr)
    if not kept:
        raise MembenchError("no image left to score: every image given is missing or unreadable")
    return kept
