"""Frugal checkpoints: a stage's files hold what the stage trains, not its frozen parts.

A stage that freezes submodules (stage 2 of the proposed model freezes two ResNet50s and
the captioner, ~90% of its weights) saves in best.pt and last.pt only the tensors it can
change: the trainable parameters and the buffers (small; frozen BatchNorm statistics may
change too when a recipe trains them). The frozen parameters are referenced instead:

    "frozen": {"prefixes": [...], "digest": sha256 of the frozen parameters,
               "sources": {name: {"path": file they came from, "sha256": its hash}}}

Loading rebuilds the model the usual way (its builder reads the same source files), checks
the rebuilt frozen parameters against `digest` and loads the trained part. A stage that
freezes nothing saves its whole state_dict, as before.

A finished stage writes `stage.json` (its outcome) and drops last.pt (unless --keep-last),
so a resumed job reuses the stage from best.pt + stage.json.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

from membench.errors import MembenchError
from membench.util.files import atomic_write_json
from membench.util.sealed import read_sealed, seal

STAGE_DONE = "stage.json"


def frozen_names(model, prefixes) -> list[str]:
    """The parameter names under the frozen prefixes, in state_dict order."""
    return [n for n, _ in model.named_parameters() if any(n == p or n.startswith(p + ".") for p in prefixes)]


def digest(model, names: list[str]) -> str:
    """sha256 over the named parameters (name, dtype, shape, bytes): what "the same frozen
    parts" means when a checkpoint is loaded into a rebuilt model."""
    import torch

    params = dict(model.named_parameters())
    h = hashlib.sha256()
    for name in names:
        t = params[name].detach().cpu().contiguous()
        h.update(f"{name}|{t.dtype}|{tuple(t.shape)}|".encode())
        h.update(t.reshape(-1).view(torch.uint8).numpy().tobytes() if t.numel() else b"")
    return h.hexdigest()


class Frugal:
    """What a stage saves of its model: everything but `names` (frozen parameters), which
    `reference` describes. `names` empty: the whole state_dict."""

    def __init__(self, model, prefixes, sources: dict[str, Path] | None = None, model_name: str | None = None):
        from membench.results.identity import sha256_file

        self.model_name = model_name  # recorded, so a checkpoint given to the wrong model is named
        self.names = frozen_names(model, prefixes)
        self.reference = None
        if self.names:
            self.reference = {
                "prefixes": list(prefixes), "digest": digest(model, self.names),
                "sources": {k: {"path": str(p), "sha256": sha256_file(p)}
                            for k, p in sorted((sources or {}).items()) if p and Path(p).is_file()}}

    def state(self, model) -> dict:
        skip = set(self.names)
        return {k: v for k, v in model.state_dict().items() if k not in skip}

    def entry(self, model) -> dict:
        """The checkpoint fields that hold the model."""
        return {"model": self.state(model), **({"frozen": self.reference} if self.reference else {}),
                **({"model_name": self.model_name} if self.model_name else {})}


def load_trained(model, saved: dict, path: Path) -> None:
    """Load a checkpoint's model into `model`: whole, or its trained part after checking
    that the rebuilt frozen parameters are the ones it was trained with."""
    from membench.weights.safe_load import check_values

    reference = saved.get("frozen")
    if not isinstance(saved.get("model"), dict) or (reference and not (
            isinstance(reference, dict) and {"prefixes", "digest"} <= set(reference))):
        raise MembenchError("not a membench checkpoint (its 'model' or 'frozen' entry is missing or damaged)", path)
    check_values(saved["model"], path, like=model.state_dict())
    if not reference:
        model.load_state_dict(saved["model"])
        return
    names = frozen_names(model, reference["prefixes"])
    if digest(model, names) != reference["digest"]:
        came = "; ".join(f"{k}: {s['path']} (sha256 {s['sha256'][:12]})" for k, s in reference["sources"].items())
        raise MembenchError("this checkpoint holds only the trained part of its model, and the frozen parts "
                            "rebuilt now differ from those it was trained with"
                            + (f" (they came from {came})" if came else "")
                            + "; rebuild with the same weights and options", path)
    missing, unexpected = model.load_state_dict(saved["model"], strict=False)
    if set(missing) != set(names) or unexpected:
        raise MembenchError(f"checkpoint does not fit the model ({len(unexpected)} unexpected weights, "
                            f"{len(set(missing) - set(names))} missing)", path)


def frozen_sources(path: Path) -> dict[str, Path] | None:
    """For a frugal checkpoint (one holding only its trained part): the files its frozen
    parts came from, for a builder's BuildContext.upstream when the checkpoint is evaluated
    on its own; None for a checkpoint that holds every weight. A file that cannot be read,
    or is refused, is a one-line error naming it."""
    from membench.weights.safe_load import load

    saved = load(path)
    reference = saved.get("frozen") if isinstance(saved, dict) else None
    if not reference:
        return None
    return {k: Path(s["path"]) for k, s in (reference.get("sources") or {}).items()}


def is_frugal(path: Path) -> bool:
    """Whether the checkpoint holds only its trained part."""
    return frozen_sources(path) is not None


# -- a finished stage ---------------------------------------------------------------------

OUTCOME_KEYS = ("epochs_run", "best_epoch", "best_val_rho", "seconds")


def mark_done(stage_dir: Path, outcome: dict) -> None:
    """stage.json, sealed (membench.util.sealed): its outcome goes into the job's row."""
    atomic_write_json(stage_dir / STAGE_DONE, seal({"outcome": outcome}))


def done_outcome(stage_dir: Path) -> dict | None:
    """The outcome of a stage that finished earlier, or None. A damaged stage.json (its
    checksum or shape wrong) is an error naming it: its epochs and validation rho would go
    into the row."""
    marker = stage_dir / STAGE_DONE
    if not marker.is_file():
        return None
    fix = f"delete the folder {stage_dir} to retrain this stage only, then run the same command with --resume"
    outcome = read_sealed(marker, "finished stage's record", fix).get("outcome")
    if not isinstance(outcome, dict) or not all(k in outcome for k in OUTCOME_KEYS):
        raise MembenchError(f"the finished stage's record has no complete outcome: damaged; {fix}", marker)
    return outcome


def remove_checkpoints(job_dir: Path) -> int:
    """Delete every checkpoint of a finished job (smoke/quick presets after success);
    returns the bytes freed. result.json and the stage markers stay."""
    freed = 0
    for p in Path(job_dir).glob("*/*.pt"):
        if p.parent.is_symlink() or p.is_symlink():  # never through a link, nor a file it did not write
            continue
        try:
            freed += p.stat().st_size
            p.unlink()
        except FileNotFoundError:
            pass
    return freed


def where_now(job_dir: Path, recorded: str | None) -> Path | None:
    """The checkpoint a finished job recorded, where it is now: at its recorded path, or in
    the same place below the job directory when the work directory was moved (or is mounted
    elsewhere on this node); None when it recorded none. A removed one stays at its recorded
    path (which does not exist)."""
    if not recorded:
        return None
    here = Path(job_dir) / Path(recorded).parent.name / Path(recorded).name
    return here if not Path(recorded).is_file() and here.is_file() else Path(recorded)


def checkpoint_gone(job_dir: Path) -> bool:
    """A finished job whose recorded checkpoint was removed (smoke/quick after success)."""
    try:
        saved = json.loads((Path(job_dir) / "result.json").read_text())
    except (OSError, ValueError):
        return False
    checkpoint = where_now(job_dir, saved.get("checkpoint") if isinstance(saved, dict) else None)
    return checkpoint is not None and not checkpoint.is_file()
