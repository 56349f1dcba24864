"""Offline weight resolution: an explicit file, then the local torch hub cache. Never a download."""

from __future__ import annotations

import os
from pathlib import Path

from membench.errors import MembenchError, WeightsUnavailable


def hub_checkpoints_dir() -> Path:
    import torch.hub

    return Path(torch.hub.get_dir()) / "checkpoints"


def resolve_file(file_name: str, what: str, explicit: str | os.PathLike | None = None) -> Path:
    """Find `file_name` (an explicit path wins, else $TORCH_HOME/hub/checkpoints).

    A missing file is a user error naming the file, the directory to put it in and the
    way out (`--pretrained none`), because these machines cannot download anything.
    """
    if explicit:
        path = Path(explicit).expanduser()
        if not path.is_file():
            raise MembenchError(f"weights file for {what} not found", path)
        return path
    path = hub_checkpoints_dir() / file_name
    if path.is_file():
        return path
    raise WeightsUnavailable(
        f"{what} weights {file_name} are not available offline: put the file in {path.parent} "
        "(or set TORCH_HOME), or run with --pretrained none for random initialisation"
    )


def load_state_dict(path: Path) -> dict:
    """Load a plain state_dict (or a membench checkpoint holding one under 'model')."""
    import torch

    try:
        obj = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:
        raise MembenchError(f"cannot read weights ({type(exc).__name__}: {str(exc).splitlines()[0]})", path) from None
    if isinstance(obj, dict) and "model" in obj and isinstance(obj["model"], dict):
        obj = obj["model"]
    if not isinstance(obj, dict):
        raise MembenchError("not a state_dict", path)
    return obj


def torchvision_weights(arch: str, what: str | None = None, explicit=None) -> dict:
    """ImageNet weights of a torchvision architecture (e.g. "resnet50"), from local files."""
    from torchvision.models import get_model_weights

    enum = get_model_weights(arch)
    # The original ImageNet weights (what 2015-2019 papers used), not torchvision's newer recipe.
    weights = getattr(enum, "IMAGENET1K_V1", enum.DEFAULT)
    file_name = os.path.basename(weights.url)
    return load_state_dict(resolve_file(file_name, what or f"torchvision {arch} ImageNet", explicit))
