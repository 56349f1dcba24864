"""Weight resolution: an explicit file, then torch's hub cache ($TORCH_HOME/hub/checkpoints),
then (for files with a public URL, such as torchvision's ImageNet weights) a resumable,
hash-checked download into that cache where the network allows. Offline, one line names
the URL and where to put the file by hand."""

from __future__ import annotations

import os
from pathlib import Path

from membench.errors import MembenchError, WeightsUnavailable


def hub_checkpoints_dir() -> Path:
    import torch.hub

    return Path(torch.hub.get_dir()) / "checkpoints"


def resolve_file(file_name: str, what: str, explicit: str | os.PathLike | None = None,
                 url: str | None = None) -> Path:
    """Find `file_name` (an explicit path wins, else $TORCH_HOME/hub/checkpoints, else a
    download of `url` into that directory, checked against the sha256 prefix that torch hub
    file names carry, e.g. resnet50-0676ba61.pth).

    A file that is neither here nor downloadable is a user error naming the file, the URL,
    the directory to put it in and the way out (`--pretrained none`).
    """
    if explicit:
        path = Path(explicit).expanduser()
        if not path.is_file():
            raise MembenchError(f"weights file for {what} not found", path)
        return path
    path = hub_checkpoints_dir() / file_name
    if path.is_file():
        return path
    source = ""
    if url:
        # torch.hub.load_state_dict_from_url would put the file in the same place with the same
        # hash check; membench's downloader adds resuming, a rich progress bar and one-line errors.
        from membench.data.download import DownloadError, DownloadRefused, download

        try:
            return download(url, path, sha256=hub_hash_prefix(file_name))
        except DownloadRefused as exc:  # downloaded, but not what the name promises
            raise WeightsUnavailable(f"{what} weights: {exc.message}") from None
        except DownloadError as exc:
            source = f" (download {url} failed: {_reason(exc.message)})"
    raise WeightsUnavailable(
        f"{what} weights {file_name} are not available offline{source}: put the file in {path.parent} "
        "(or set TORCH_HOME), or run with --pretrained none for random initialisation"
    )


def hub_hash_prefix(file_name: str) -> str | None:
    """torch hub's convention: `name-<first hex digits of the sha256>.ext`."""
    import re

    m = re.search(r"-([a-f0-9]{8,})\.", file_name)
    return m.group(1) if m else None


def _reason(message: str) -> str:
    # "cannot download URL (REASON); download it by hand ..." -> REASON
    start, end = message.find("("), message.find(");")
    return message[start + 1:end] if 0 <= start < end else message


def load_state_dict(path: Path) -> dict:
    """Load a plain state_dict (or a membench checkpoint holding one under 'model') with the
    weights-only loader (membench.weights.safe_load): nothing in the file can run, and NaN,
    infinite or integer weights are refused."""
    from membench.weights.safe_load import check_values, load

    obj = load(path)
    if isinstance(obj, dict) and "model" in obj and isinstance(obj["model"], dict):
        obj = obj["model"]
    if not isinstance(obj, dict):
        raise MembenchError("not a state_dict", path)
    check_values(obj, path)
    from membench.weights.files_loaded import note_loaded

    note_loaded(path)  # its sha256 goes into the run JSON of the job that loaded it
    return obj


def torchvision_weights(arch: str, what: str | None = None, explicit=None) -> dict:
    """ImageNet weights of a torchvision architecture (e.g. "resnet50"), from local files."""
    from torchvision.models import get_model_weights

    enum = get_model_weights(arch)
    # The original ImageNet weights (what 2015-2019 papers used), not torchvision's newer recipe.
    weights = getattr(enum, "IMAGENET1K_V1", enum.DEFAULT)
    file_name = os.path.basename(weights.url)
    return load_state_dict(resolve_file(file_name, what or f"torchvision {arch} ImageNet", explicit, url=weights.url))
