"""Reading weights and checkpoints without running code from them.

Every pickle-based file membench reads (checkpoints, state_dicts, the captioner's files,
the feature store, the authors' archives) goes through `load`: torch's weights-only
unpickler rebuilds tensors, numbers, strings and containers and stops at anything else,
so a pickle that names a function (os.system) is refused before any of it runs. A legacy
format that holds other objects (the shared captioner checkpoint pickles whole modules)
passes `allow`: the few classes it needs, nothing more (see MODULE_RECORDS for files older
than PyTorch 1.6). NumPy files never unpickle (`load_npy`), safetensors cannot hold code.

`check_values` refuses what loads but cannot be real weights: NaN or infinite values,
and integer tensors where the model has floating point ones (load_state_dict would
convert them silently).
"""

from __future__ import annotations

import io
import re
from pathlib import Path

from membench.errors import MembenchError

# The weights-only unpickler's word for a global it refused ("GLOBAL posix.system", or a
# reduce of a function); torch's own message then tells the user to turn the check off.
_REFUSED = re.compile(r"GLOBAL ([\w.]+)|unrecognized function (<[^>]*>|\S+)")
PLAIN = "membench reads only tensors, numbers, strings and containers from weights and checkpoint files"


def load(source, allow=(), where: str | Path | None = None):
    """torch.load(source, weights_only=True) onto the CPU. `source`: a path, or bytes that
    `where` names (an archive member). `allow`: extra globals a legacy format needs
    (classes, or (object, "module.Name") pairs), for this call only. Any failure is a
    one-line MembenchError naming the file."""
    import warnings

    import torch

    where = str(where if where is not None else source)
    if isinstance(source, (bytes, bytearray)):
        data = io.BytesIO(source)
        size = len(source)
    else:
        path = Path(source)
        try:
            size = path.stat().st_size
        except OSError as exc:
            raise MembenchError(f"cannot read ({exc.strerror or type(exc).__name__})", path) from None
        if path.suffix == ".safetensors":
            return _safetensors(path)
        data = path
    if size == 0:
        raise MembenchError("empty file (0 bytes): not a weights or checkpoint file", where)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # e.g. "pickle protocol 4": the outcome is what counts
        try:
            with torch.serialization.safe_globals(list(allow)):
                return torch.load(data, map_location="cpu", weights_only=True)
        except Exception as exc:  # noqa: BLE001 -- whatever a damaged or hostile file raises
            if not (allow and MODULE_RECORDS in str(exc)):
                raise MembenchError(_reason(exc), where) from None
        if isinstance(data, io.BytesIO):
            data.seek(0)
        try:
            return torch.load(data, map_location="cpu", weights_only=False, pickle_module=_restricted(allow))
        except Exception as exc:  # noqa: BLE001
            raise MembenchError(_reason(exc), where) from None


# Files saved before PyTorch 1.6 that pickle whole modules record each module's class as a
# "persistent id", which torch's weights-only unpickler refuses outright. For those (and
# only with an allow-list) the same rule is enforced by the unpickler's find_class, the
# one place a pickle gets any function or class from (Python's documented restriction).
MODULE_RECORDS = "Only persistent_load of storage is allowed"


def _restricted(allow):
    """A pickle module for torch.load whose Unpickler finds only the globals torch's
    weights-only unpickler allows (tensors, storages, OrderedDict, ...) and `allow`."""
    import _compat_pickle
    import pickle
    import types

    from torch import _weights_only_unpickler

    allowed = dict(_weights_only_unpickler._get_allowed_globals())
    for item in allow:
        obj, name = item if isinstance(item, tuple) else (item, f"{item.__module__}.{item.__qualname__}")
        allowed[name] = obj

    class Unpickler(pickle.Unpickler):
        def find_class(self, module, name):
            # protocol-2 pickles written by Python 3 name builtins as __builtin__
            module, name = _compat_pickle.NAME_MAPPING.get((module, name), (module, name))
            module = _compat_pickle.IMPORT_MAPPING.get(module, module)
            if f"{module}.{name}" not in allowed:
                raise pickle.UnpicklingError(f"Unsupported global: GLOBAL {module}.{name}")
            return allowed[f"{module}.{name}"]

    restricted = types.ModuleType("membench_restricted_pickle")
    restricted.Unpickler = Unpickler
    restricted.load = lambda f, **kw: Unpickler(f, **kw).load()
    return restricted


def _reason(exc: Exception) -> str:
    text = str(exc)
    refused = _REFUSED.search(text)
    if refused:
        name = refused.group(1) or refused.group(2)
        return (f"refused: it asks for {name}, and {PLAIN} (a pickle that names a function or class can "
                "run code; none of it ran); save a state_dict instead")
    if "Unsupported operand" in text:
        return "cannot read: not a file written by torch.save (an HTML page or another format?)"
    if isinstance(exc, EOFError) or "central directory" in text:
        return "cannot read: the file is truncated or damaged"
    first = text.strip().splitlines()[0] if text.strip() else ""
    return f"cannot read ({type(exc).__name__}{': ' + first if first else ''})"


def _safetensors(path: Path) -> dict:
    try:
        from safetensors.torch import load_file

        return load_file(str(path), device="cpu")
    except Exception as exc:  # noqa: BLE001
        raise MembenchError(_reason(exc), path) from None


def load_npy(data: bytes, where: str):
    """A NumPy array from .npy bytes, never unpickling an object array."""
    import numpy as np

    if not data.startswith((b"\x93NUMPY", b"PK\x03\x04")):  # numpy would call anything else a pickle
        raise MembenchError("cannot read the array: not a .npy file", where)
    try:
        return np.load(io.BytesIO(data), allow_pickle=False)
    except ValueError as exc:
        if "allow_pickle" in str(exc):
            raise MembenchError(f"refused: an array of Python objects (a pickle); {PLAIN}", where) from None
        raise MembenchError(f"cannot read the array ({str(exc).splitlines()[0]})", where) from None
    except Exception as exc:  # noqa: BLE001 -- a truncated or foreign file
        raise MembenchError(f"cannot read the array ({type(exc).__name__})", where) from None


def check_values(state: dict, where, like: dict | None = None) -> None:
    """Refuse NaN/inf in floating tensors, and integer or boolean tensors where `like` (the
    model's state_dict, meta tensors do) has floating ones; without `like`, where the key
    names a weight or a bias, which are floating point in every model."""
    import torch

    for key, value in state.items():
        if not isinstance(value, torch.Tensor):
            continue
        want = like.get(key) if like is not None else None
        expects_float = (want.is_floating_point() if isinstance(want, torch.Tensor)
                         else like is None and str(key).rsplit(".", 1)[-1] in ("weight", "bias"))
        if expects_float and not value.is_floating_point():
            raise MembenchError(f"{key} holds {str(value.dtype).removeprefix('torch.')} values where the model has "
                                "floating point ones: not the weights it needs (quantized or damaged?)", where)
        if value.is_floating_point() and value.numel() and not value.is_meta and not bool(torch.isfinite(value).all()):
            bad = value[~torch.isfinite(value)]
            raise MembenchError(f"{key} holds {bad.numel()} value(s) that are not finite (e.g. {float(bad[0])}): "
                                "damaged or diverged weights would only give nan scores", where)
