"""Pretrained backbones from the Hugging Face Hub, downloaded the way their own libraries
download them: timm's and open_clip's weights through `huggingface_hub` (timm's model
files, open_clip's `download_pretrained`), into the user's Hugging Face cache
(`$HF_HOME/hub`, shared with every other tool), with huggingface_hub's progress bars.
A file already in that cache is used without any network access.

Offline (MEMBENCH_OFFLINE or HF_HUB_OFFLINE set, or the Hub unreachable) a missing file is
one line naming its URL and the ways out (a file of your own with `--model-option
weights=PATH`, or `--pretrained none`). Older timm configurations that name a plain URL
instead of a Hub repository go through `resolve.resolve_file` (torch's hub cache,
membench's checked downloader).
"""

from __future__ import annotations

import os
from pathlib import Path

from membench.errors import MembenchError, WeightsUnavailable

# the file names timm's and open_clip's Hub downloads look for, safetensors first (as they do)
TIMM_FILES = ("model.safetensors", "pytorch_model.bin")
OPEN_CLIP_FILES = ("open_clip_model.safetensors", "open_clip_pytorch_model.bin")


def offline() -> bool:
    from huggingface_hub import constants

    from membench.data.download import offline as membench_offline

    return membench_offline() or bool(constants.HF_HUB_OFFLINE)


def cache_dir() -> str:
    from huggingface_hub import constants

    return constants.HF_HUB_CACHE


def file_url(repo: str, filename: str) -> str:
    from huggingface_hub import constants

    return f"{constants.ENDPOINT}/{repo}/resolve/main/{filename}"


def cached(repo: str, names: tuple[str, ...]) -> str | None:
    """The first of `names` of Hub repository `repo` in the local cache, or None."""
    from huggingface_hub import try_to_load_from_cache

    for name in names:
        found = try_to_load_from_cache(repo, name, cache_dir=cache_dir())
        if isinstance(found, str) and os.path.isfile(found):
            return found
    return None


def download(repo: str, names: tuple[str, ...], what: str, library: str) -> str:
    """The first of `names` that the Hub repository has, downloaded into the cache (or found
    there) by huggingface_hub as `library` would; one line when it cannot be."""
    found = cached(repo, names)
    if found:
        return found
    url = file_url(repo, names[0])
    if offline():
        raise WeightsUnavailable(f"{what} weights are not available offline: {url} is not in the Hugging Face "
                                 f"cache {cache_dir()} (run once with a network to download it there, or pass "
                                 "--model-option weights=PATH, or --pretrained none)")
    from huggingface_hub import hf_hub_download
    from huggingface_hub.errors import RemoteEntryNotFoundError

    reason = ""
    for name in names:  # as timm and open_clip do: safetensors first, then the pickle
        try:
            return hf_hub_download(repo, name, cache_dir=cache_dir(), library_name=library)
        except Exception as exc:  # the Hub has no such file: try the next name; anything else is said below
            reason = f"{type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''}"
            if not isinstance(exc, RemoteEntryNotFoundError):
                break
    raise WeightsUnavailable(f"cannot download {what} weights {url} ({reason}); put the file in the Hugging Face "
                             "cache by running once with a network, or pass --model-option weights=PATH, or "
                             "--pretrained none")


def explicit_file(path, what: str) -> str:
    file = Path(path).expanduser()
    if not file.is_file():
        raise MembenchError(f"weights file for {what} not found", file)
    return str(file)


def timm_file(arch: str, explicit=None) -> str:
    """A local file of timm's pretrained weights for `arch`: `explicit`, else the Hugging
    Face cache, else timm's Hub download (or, for configurations with a plain URL, torch's
    hub cache and membench's download)."""
    import timm.models

    what = f"timm {arch}"
    if explicit:
        return explicit_file(explicit, what)
    cfg = timm.models.get_pretrained_cfg(arch)
    hub_id = getattr(cfg, "hf_hub_id", None) if cfg else None
    if hub_id:
        return download(hub_id, TIMM_FILES, what, "timm")
    url = getattr(cfg, "url", None) if cfg else None
    if url:
        from membench.weights.resolve import resolve_file

        return str(resolve_file(os.path.basename(url), what, url=url))
    raise WeightsUnavailable(f"timm publishes no pretrained weights for {arch}: pass --model-option weights=PATH "
                             "or run with --pretrained none")


def open_clip_file(model: str, tag: str, explicit=None) -> str:
    """A local file of open_clip's pretrained weights `tag` for `model` (explicit, cached, or
    downloaded by open_clip's own `download_pretrained` for URL-only configurations)."""
    import open_clip

    what = f"open_clip {model} ({tag})"
    if explicit:
        return explicit_file(explicit, what)
    cfg = open_clip.get_pretrained_cfg(model, tag)
    if not cfg:
        tags = ", ".join(t for m, t in open_clip.list_pretrained() if m == model) or "none"
        raise MembenchError(f"open_clip has no pretrained weights {tag!r} for {model} (it has: {tags})")
    hub = cfg.get("hf_hub", "")
    if hub:
        repo, name = os.path.split(hub)  # "org/model/" (the default file names) or "org/model/file"
        if not name or name == OPEN_CLIP_FILES[1]:
            names = OPEN_CLIP_FILES
        else:
            names = (name[:-4] + ".safetensors", name) if name.endswith((".bin", ".pth")) else (name,)
        return download(repo, names, what, "open_clip")
    if offline():
        raise WeightsUnavailable(f"{what} weights are not available offline: {cfg.get('url')} (pass "
                                 "--model-option weights=PATH, or --pretrained none)")
    try:
        return open_clip.download_pretrained(cfg)
    except Exception as exc:
        raise WeightsUnavailable(f"cannot download {what} weights {cfg.get('url')} ({type(exc).__name__}); pass "
                                 "--model-option weights=PATH, or --pretrained none") from None
