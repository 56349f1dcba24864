"""Seeds that make a run reproducible whatever ran before it, and the global RNG state a
Ctrl-C checkpoint saves so that a resumed epoch continues exactly where it stopped."""

from __future__ import annotations


def epoch_seed(seed: int, stage: str, epoch: int) -> int:
    """The seed of (run seed, stage, epoch): the shuffle, augmentation and dropout of an
    epoch do not depend on how many epochs this process ran before it."""
    import zlib

    return (seed * 1_000_003 + zlib.crc32(stage.encode()) * 101 + epoch) % (2**31 - 1)


def get_rng(device_type: str) -> dict:
    import torch

    out = {"cpu": torch.get_rng_state()}
    if device_type == "cuda":
        out["cuda"] = torch.cuda.get_rng_state_all()
    return out


def set_rng(rng: dict | None, device_type: str) -> None:
    import torch

    if rng is None:
        return
    torch.set_rng_state(rng["cpu"])
    if device_type == "cuda" and "cuda" in rng:
        torch.cuda.set_rng_state_all(rng["cuda"])
