"""What every result records about where it was computed: the hardware, the software
environment and the git commit of membench, plus the run's full configuration."""

from __future__ import annotations

import os
import platform
from dataclasses import asdict
from functools import lru_cache
from pathlib import Path

from membench import __version__
from membench.engine.job import PRESETS
from membench.results.identity import git_commit  # noqa: F401  (re-exported: provenance is where results read it)

PACKAGES = ("torch", "torchvision", "timm", "numpy", "scipy", "pillow")
FROZEN_TRAIN_CACHE_MEANING = ("0: exact protocol (frozen nets on every augmented image); K: K cached augmented "
                              "views per training image (approximation)")


@lru_cache(maxsize=1)
def cpu_name() -> str:
    """The CPU's model name from /proc/cpuinfo (read once), else what platform knows."""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine() or "unknown"


def hardware(device_type: str) -> str:
    if device_type == "cuda":
        import torch

        return torch.cuda.get_device_name()
    return f"{cpu_name()} ({os.cpu_count()} cores)"


def environment(device_type: str) -> dict:
    from importlib.metadata import PackageNotFoundError, version

    versions = {}
    for pkg in PACKAGES:
        try:
            versions[pkg] = version(pkg)
        except PackageNotFoundError:
            versions[pkg] = None
    import torch

    # CPU float sums depend on the thread count (tiny-cnn smoke: rho 0.0901 with 1 thread,
    # 0.0857 with 2), so a run is reproduced exactly only with the same number of threads.
    return {"python": platform.python_version(), "platform": platform.platform(), "versions": versions,
            "membench": __version__, "git_commit": git_commit(), "hardware": hardware(device_type),
            "torch_threads": torch.get_num_threads()}


def run_provenance(spec, dataset, cfg, key: str, stages, pre, outcomes: dict, device_type: str) -> dict:
    """OUT/runs/<run_id>.json: everything needed to say what a row measured."""
    from membench.data.feature_store import describe

    return {
        "run_id": key, "model": spec.name, "plugin": spec.plugin, "citation": spec.citation,
        "dataset": {"name": dataset.name, "root": str(dataset.root), "fingerprint": dataset.fingerprint(),
                    "human_consistency": getattr(dataset, "human_consistency", None)},
        "preset": {"name": cfg.preset, "meaning": PRESETS[cfg.preset].meaning},
        "config": {"seed": cfg.seed, "patience": cfg.patience, "pretrained": cfg.pretrained,
                   "init": cfg.init, "train": cfg.train, "options": cfg.options,
                   "on_bad_image": cfg.on_bad_image,
                   "checkpoint": str(cfg.checkpoint) if cfg.checkpoint else None,
                   "frozen_train_cache": cfg.frozen_train_cache,
                   "frozen_train_cache_meaning": FROZEN_TRAIN_CACHE_MEANING},
        "recipe": [asdict(s) for s in stages], "preprocess": asdict(pre),
        "stages": outcomes, "environment": environment(device_type),
        "feature_store": describe(),  # None, or the store that served the frozen outputs (exact)
    }
