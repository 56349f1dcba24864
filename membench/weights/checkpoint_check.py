"""Loading a trained checkpoint into the model it was written for, or saying whose it is.

A state_dict that does not fit is a one-line error: when the checkpoint belongs to another
model (the name it records, the job it sits in, or the one registered model whose
weights it fits exactly), the error names that model; otherwise it says what does not fit.
"""

from __future__ import annotations

import json
from pathlib import Path

from membench.errors import MembenchError

# runner job directories: WORK/<model>__<dataset>__<preset>__s<seed>__<digest>/split<k>/<stage>/best.pt
_JOB_PARTS = 5


def recorded_model(path: Path, checkpoint: dict | None = None) -> str | None:
    """The model a checkpoint says it belongs to: the `model_name` it stores, else the
    finished job it sits in (its result.json), else that job directory's name."""
    if isinstance(checkpoint, dict) and isinstance(checkpoint.get("model_name"), str):
        return checkpoint["model_name"]
    path = Path(path).resolve()
    for job in (path.parent.parent, path.parent):  # <job>/split<k>/<stage>/best.pt or <job>/split<k>/x.pt
        result = job / "result.json"
        if result.is_file():
            try:
                row = json.loads(result.read_text()).get("row") or {}
            except (OSError, ValueError, AttributeError):
                row = {}
            if isinstance(row, dict) and row.get("model"):
                return str(row["model"])
        if job.name.startswith("split") and job.name[5:].isdigit():
            parts = job.parent.name.split("__")
            if len(parts) == _JOB_PARTS and parts[3].startswith("s"):
                from membench import registry

                name = parts[0]
                candidates = [n for n in registry.models() if n.replace("/", "_") == name]
                return candidates[0] if candidates else name
    return None


def mismatch(model, state: dict) -> tuple[list[str], list[str], list[str]]:
    """(missing keys, unexpected keys, keys whose shapes differ) of `state` for `model`."""
    want = model.state_dict()
    missing = [k for k in want if k not in state]
    unexpected = [k for k in state if k not in want]
    shapes = [k for k in want if k in state and hasattr(state[k], "shape")
              and tuple(state[k].shape) != tuple(want[k].shape)]
    return missing, unexpected, shapes


def fitting_models(state: dict) -> list[str]:
    """Registered models whose freshly built (meta, weightless) state_dict has exactly the
    keys and shapes of `state`."""
    from membench import registry
    from membench.spec import BuildContext

    found = []
    for name, spec in registry.models().items():
        try:
            model = spec.builder()(BuildContext(pretrained=False, device="meta", options=spec.check_options({})
                                                if hasattr(spec, "check_options") else {}))
        except Exception:  # a model that cannot be built without more options: not a candidate
            continue
        if model is not None and not any(mismatch(model, state)):
            found.append(name)
    return found


def load_into(model, spec_name: str, path: Path) -> None:
    """Load the checkpoint at `path` into `model` (built for `spec_name`), strictly."""
    from membench.weights.resolve import load_state_dict
    from membench.weights.safe_load import check_values, load

    path = Path(path)
    raw = load(path)
    if isinstance(raw, dict) and raw.get("frozen"):  # frugal: the trained part, frozen parts rebuilt
        owner = recorded_model(path, raw)
        if owner and owner != spec_name:
            raise MembenchError(f"this checkpoint belongs to model {owner!r}, not {spec_name!r}: "
                                f"use --model {owner}", path)
        from membench.engine.checkpoints import load_trained

        load_trained(model, raw, path)
        return
    state = load_state_dict(path)
    missing, unexpected, shapes = mismatch(model, state)
    if not (missing or unexpected or shapes):
        check_values(state, path, like=model.state_dict())  # int8 where the model has floats
        model.load_state_dict(state)
        return
    owner = recorded_model(path, raw)
    if owner and owner != spec_name:
        raise MembenchError(f"this checkpoint belongs to model {owner!r}, not {spec_name!r}: "
                            f"use --model {owner}", path)
    fits = fitting_models(state) if owner is None else []
    if spec_name in fits:  # the model itself, built with its default options
        raise MembenchError(f"checkpoint fits model {spec_name!r} with its default options, not with the "
                            "--model-option values given", path)
    if fits:
        which = repr(fits[0]) if len(fits) == 1 else "one of " + ", ".join(map(repr, fits))
        raise MembenchError(f"this checkpoint fits model {which}, not {spec_name!r}: use --model "
                            f"{fits[0] if len(fits) == 1 else 'NAME'}", path)
    first = (missing or unexpected or shapes)[0]
    raise MembenchError(f"checkpoint does not fit model {spec_name!r} ({len(missing)} missing, {len(unexpected)} "
                        f"unexpected, {len(shapes)} differently shaped weights, e.g. {first!r}); was it written "
                        "for another model or with other --model-option values?", path)
