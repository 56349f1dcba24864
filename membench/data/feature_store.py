"""A persistent store of frozen outputs, shared by splits, runs and commands.

Where a model implements the frozen-output protocol (membench.contract: `forward(x) ==
from_frozen(frozen_outputs(x))`) the frozen part of an image's computation depends only on
two things: the exact input tensor the frozen part receives, and the weights of the
modules it uses. The store keys each image's frozen outputs by exactly those:

    ROOT/<space>/<key[:2]>/<key>.pt
    space = digest of (store format, model class, frozen_outputs' source, the state_dict
            entries under the model's `frozen_output_modules` (all of it if undeclared),
            torch/torchvision versions, device type, autocast dtype)
    key   = digest of the input tensor's bytes, dtype and shape (one image, after the
            transform and normalisation)

Keying by the input's content rather than by (image file, preprocessing, view seed) makes
a stale hit impossible by construction: a change of resize code, crop, augmentation seed
or file contents changes the bytes, so it misses. Decoding and transforming an image to
hash it costs ~10 ms; a ResNet-152 forward on a CPU ~300 ms.

So the store is exact: a hit returns what the same frozen computation produced for the
same input. The only difference from a run without it is float rounding that depends on
batch composition (a stored image may have been computed in another batch; ~1e-6 on CPU,
the same as changing the batch size), which is why a run records the store in its
provenance but not in its job key.

Each file is checksummed: a header line `membench-feature-store-entry sha256=<hex>` over
the torch.save bytes that follow. A file whose checksum, header or contents are wrong (a
flipped bit, a truncated copy) is never used: it counts as damaged, is recomputed and
replaced, a message names it, and the run's provenance counts it (`damaged`).

An output that *is* the input tensor (a model passing its input on to a trainable branch,
as ResMem does) is not stored: the caller's input is put back in its place.

Use: `FeatureStore(ROOT).frozen_fn(model)` is a drop-in for `model.frozen_outputs`;
`StoreBacked(model, store)` is a module whose forward is `from_frozen(stored
frozen_outputs(x))` (for evaluation); `activate(ROOT)` makes a store the process default
(`--feature-store DIR`), read with `active()`.
"""

from __future__ import annotations

import hashlib
import os
import sys
import tempfile
from pathlib import Path

from membench.errors import MembenchError

FORMAT = 2  # bump when the layout or the meaning of a key changes (2: checksummed entries)
MAGIC = b"membench-feature-store-entry sha256="
MAX_MESSAGES = 10  # damaged entries named one by one; further ones are only counted
ENV_VAR = "MEMBENCH_FEATURE_STORE"
_INPUT = "__input__"  # marker stored in place of an output that is the input itself
_active: FeatureStore | None = None


def _unwrap(model):
    from membench.engine.device import unwrap

    return unwrap(model)


def tensor_bytes(t) -> bytes:
    """The raw bytes of a tensor (any dtype, bfloat16 included), on the CPU."""
    import torch

    return t.detach().cpu().contiguous().reshape(-1).view(dtype=torch.uint8).numpy().tobytes()


def input_key(x) -> str:
    """Digest of one input tensor: its bytes, dtype and shape."""
    h = hashlib.sha256(f"{x.dtype}|{tuple(x.shape)}|".encode())
    h.update(tensor_bytes(x))
    return h.hexdigest()[:32]


class FeatureStore:
    """Frozen outputs on disk under `root`, one file per (space, input). Counts hits and
    misses (`stats()`); safe for concurrent processes (each file is written atomically,
    and two processes writing the same key write the same values)."""

    def __init__(self, root, say=None):
        self.root = Path(root).expanduser()
        try:
            self.root.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise MembenchError(f"cannot create the feature store ({exc.strerror})", self.root) from None
        if not os.access(self.root, os.W_OK | os.X_OK):
            raise MembenchError("the feature store directory is not writable", self.root)
        self.hits = 0
        self.misses = 0  # damaged entries included: they are recomputed too
        self.damaged = 0
        self.say = say or (lambda text: print(text, file=sys.stderr))

    # -- identity of the frozen computation ------------------------------------------
    def space(self, model, device_type: str, autocast_dtype=None) -> str:
        """Digest of everything besides the input that the frozen outputs depend on."""
        import inspect
        from importlib.metadata import PackageNotFoundError, version

        plain = _unwrap(model)
        cls = type(plain)
        try:
            code = inspect.getsource(cls.frozen_outputs)
        except (OSError, TypeError):  # no source (frozen app): the class name must do
            code = cls.__qualname__
        prefixes = getattr(plain, "frozen_output_modules", None)
        h = hashlib.sha256()
        versions = []
        for pkg in ("torch", "torchvision"):
            try:
                versions.append(f"{pkg}={version(pkg)}")
            except PackageNotFoundError:
                versions.append(f"{pkg}=none")
        h.update(f"membench-feature-store-v{FORMAT}|{cls.__module__}.{cls.__qualname__}|{code}|"
                 f"{','.join(versions)}|{device_type}|{autocast_dtype}|{prefixes}".encode())
        for name, value in sorted(plain.state_dict().items()):
            if prefixes is None or any(name == p or name.startswith(p + ".") for p in prefixes):
                h.update(f"|{name}|{value.dtype}|{tuple(value.shape)}|".encode())
                h.update(tensor_bytes(value))
        return h.hexdigest()[:24]

    def _space_for(self, plain, x, memo: dict) -> str:
        import torch

        kind = x.device.type
        amp = torch.get_autocast_dtype(kind) if torch.is_autocast_enabled(kind) else None
        if (kind, str(amp)) not in memo:
            memo[(kind, str(amp))] = self.space(plain, kind, amp)
        return memo[(kind, str(amp))]

    # -- files ---------------------------------------------------------------------------
    def path(self, space: str, key: str) -> Path:
        return self.root / space / key[:2] / f"{key}.pt"

    def get(self, space: str, key: str):
        """The stored outputs (a list of tensors or `_INPUT` markers) or None (absent, or
        damaged: then counted, named in a message, and recomputed by the caller)."""
        import torch

        from membench.weights.safe_load import load

        path = self.path(space, key)
        try:
            raw = path.read_bytes()
        except FileNotFoundError:
            return None
        except OSError as exc:
            return self._damaged(path, f"unreadable: {exc.strerror}")
        header, newline, payload = raw.partition(b"\n")
        if not header.startswith(MAGIC) or not newline:
            return self._damaged(path, "not a membench feature-store entry")
        if hashlib.sha256(payload).hexdigest().encode() != header[len(MAGIC):]:
            return self._damaged(path, "checksum mismatch")
        try:  # weights-only: a planted pickle cannot run code
            outputs = load(payload, where=path)
        except MembenchError as exc:  # the checksum held, but not what membench writes
            return self._damaged(path, f"unreadable: {exc.message}")
        if not isinstance(outputs, list) or not all(isinstance(o, torch.Tensor) or _is_marker(o) for o in outputs):
            return self._damaged(path, "not a list of tensors")
        return outputs

    def _damaged(self, path: Path, why: str) -> None:
        self.damaged += 1
        if self.damaged <= MAX_MESSAGES:
            more = "" if self.damaged < MAX_MESSAGES else "; further damaged entries are recomputed without a message"
            self.say(f"membench: feature store entry {path} is damaged ({why}): not used, recomputed{more}")
        return None

    def put(self, space: str, key: str, outputs: list) -> None:
        import io

        import torch

        path = self.path(space, key)
        path.parent.mkdir(parents=True, exist_ok=True)
        buf = io.BytesIO()
        torch.save(outputs, buf)
        payload = buf.getvalue()
        fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
        try:
            with os.fdopen(fd, "wb") as f:
                f.write(MAGIC + hashlib.sha256(payload).hexdigest().encode() + b"\n" + payload)
            os.replace(tmp, path)  # a cache: atomic, but not fsynced (a lost file is recomputed)
        except BaseException:
            try:
                os.unlink(tmp)
            except FileNotFoundError:
                pass
            raise

    def stats(self) -> dict:
        return {"root": str(self.root), "hits": self.hits, "misses": self.misses, "damaged": self.damaged}

    # -- the drop-in --------------------------------------------------------------------
    def frozen_fn(self, model):
        """A function equal to `model.frozen_outputs` that reads every image's outputs from
        the store and computes only the missing ones (as one sub-batch, in order). Call it
        while the weights stay as they are (inference, or a cache built before training)."""
        import torch

        plain = _unwrap(model)
        # The digest of the weights is taken once per function: make a new one after the
        # weights change (each predict call and each cache build does).
        memo: dict = {}

        def frozen_outputs(x):
            space = self._space_for(plain, x, memo)
            keys = [input_key(x[i]) for i in range(len(x))]
            found = [self.get(space, k) for k in keys]
            missing = [i for i, f in enumerate(found) if f is None]
            self.hits += len(keys) - len(missing)
            self.misses += len(missing)
            if missing:
                sub = x if len(missing) == len(x) else x[missing]
                outs = plain.frozen_outputs(sub)
                for j, i in enumerate(missing):
                    row = [_INPUT if o is sub else o[j].detach().cpu().clone() for o in outs]
                    self.put(space, keys[i], row)
                    found[i] = row
                if len(missing) == len(x):  # nothing stored was used: return exactly what was computed
                    return tuple(x if o is sub else o for o in outs)
            return tuple(x if _is_marker(found[0][t]) else torch.stack([f[t] for f in found]).to(x.device)
                         for t in range(len(found[0])))

        return frozen_outputs


def _is_marker(value) -> bool:
    return isinstance(value, str) and value == _INPUT


def store_backed(model, store: FeatureStore | None):
    """A module computing `model`'s predictions from stored frozen outputs, or `model`
    itself when there is no store or the model does not implement the protocol."""
    if store is None or not supports(model):
        return model
    import torch.nn as nn

    class StoreBacked(nn.Module):
        def __init__(self):
            super().__init__()
            self.model = model  # a submodule: eval()/train() reach it
            self._frozen = store.frozen_fn(model)

        def forward(self, x):
            return _unwrap(self.model).from_frozen(self._frozen(x))

    return StoreBacked()


def supports(model) -> bool:
    plain = _unwrap(model)
    return callable(getattr(plain, "frozen_outputs", None)) and callable(getattr(plain, "from_frozen", None))


# -- the process default (`--feature-store DIR`) -------------------------------------------

def activate(root) -> FeatureStore | None:
    """Make the store at `root` the default for this process and the processes it starts
    (through MEMBENCH_FEATURE_STORE); None turns it off."""
    global _active
    _active = FeatureStore(root) if root else None
    if root:
        os.environ[ENV_VAR] = str(Path(root).expanduser().resolve())
    else:
        os.environ.pop(ENV_VAR, None)
    return _active


def active() -> FeatureStore | None:
    """The process's store: activated, or named by MEMBENCH_FEATURE_STORE (a job process
    started by `--jobs-per-gpu` or a launcher), else None."""
    global _active
    root = os.environ.get(ENV_VAR)
    if _active is None and root:
        _active = FeatureStore(root)
    return _active


def frozen_forward(model):
    """What the frozen-output caches call: the active store's drop-in, else the model's own
    `frozen_outputs`."""
    store = active()
    return store.frozen_fn(model) if store is not None else _unwrap(model).frozen_outputs


def describe(store: FeatureStore | None = None) -> dict | None:
    """What provenance records about `store` (default: the active one; None when off)."""
    store = store or active()
    if store is None:
        return None
    return {**store.stats(),
            "meaning": "frozen outputs read from a persistent store keyed by the frozen weights and the "
                       "exact input tensor: the same computation per image; predictions can differ from a "
                       "run without it by float rounding of batch composition (~1e-6); damaged: entries whose "
                       "checksum failed, not used but recomputed (counted among the misses)"}
