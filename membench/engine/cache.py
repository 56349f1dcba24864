"""Exact caching of frozen outputs for evaluation images (stage 2 of `ours`).

In a stage whose large submodules are frozen (both ResNet50s and the captioner in stage 2),
an evaluation image always goes through the same frozen computation: the evaluation
transform has no randomness and frozen weights do not change. So the frozen outputs of
the validation images are computed once per stage and every epoch's validation runs only
the trainable part. The result is the same computation, in the same dtype and batches, as
recomputing it: exact, not an approximation. Training images are augmented randomly, so
their frozen outputs cannot be cached exactly; `TrainViewCache` (opt-in, `--frozen-train-cache
K`) caches K augmented views instead, an approximation that the results record.

A model opts in with the frozen-output protocol of membench.contract.FrozenOutputs:
`forward(x) == from_frozen(frozen_outputs(x))`. Both caches fill themselves through the
engine's one inference loop (membench.engine.inference.infer).
"""

from __future__ import annotations

from membench.contract import has_frozen_outputs as supports
from membench.data.feature_store import frozen_forward
from membench.engine.device import unwrap
from membench.engine.inference import eval_mode, infer, predict
from membench.engine.seeds import epoch_seed
from membench.errors import MembenchError


class FrozenCache:
    """Frozen outputs of `samples` (evaluation transform), kept on `store` ("cpu" or the
    model's device); `predict(model)` then runs only the trainable part."""

    def __init__(self, samples, pre, device, batch_size: int, store: str | None = None, seed: int = 0,
                 max_bytes: int = 16 * 2**30):
        self.samples, self.pre, self.device, self.batch_size, self.seed = tuple(samples), pre, device, batch_size, seed
        self.store = store or ("cuda" if device.type == "cuda" else "cpu")
        self.max_bytes = max_bytes  # larger caches are not built: every call recomputes instead
        self.outputs = None  # tuple of (N, ...) tensors
        self.nbytes = 0
        self.disabled = False

    def build(self, model, progress=None) -> None:
        import torch

        from membench.data.transforms import eval_transform

        plain = unwrap(model)
        store = []

        def keep(_epoch, idx, outs):
            if not store:
                need = sum(o[0].numel() * o.element_size() for o in outs) * len(self.samples)
                if need > self.max_bytes:
                    return True  # too large to keep: every call recomputes instead
                store.extend(torch.empty((len(self.samples), *o.shape[1:]), dtype=o.dtype, device=self.store)
                             for o in outs)
            for s, o in zip(store, outs):
                s[idx.to(s.device)] = o.to(self.store)

        self.disabled = not infer(frozen_forward(plain), self.samples, eval_transform(self.pre), self.pre,
                                  self.device, batch_size=self.batch_size, on_batch=keep, module=plain,
                                  seed=self.seed, progress=progress)
        if self.disabled:
            return
        self.outputs = tuple(store)
        self.nbytes = sum(t.numel() * t.element_size() for t in self.outputs)

    def predict(self, model, progress=None):
        """Predictions for the cached samples, in order (builds the cache on first use)."""
        import numpy as np
        import torch

        if self.outputs is None and not self.disabled:
            self.build(model)
        if self.disabled:
            return predict(model, self.samples, self.pre, self.device, self.batch_size, progress, self.seed)
        plain = unwrap(model)
        out = np.empty(len(self.samples), dtype=np.float64)
        with torch.inference_mode(), self.device.autocast(), eval_mode(plain):
            for start in range(0, len(self.samples), self.batch_size):
                part = tuple(t[start:start + self.batch_size].to(self.device.torch, non_blocking=True)
                             for t in self.outputs)
                pred = plain.from_frozen(part).float().reshape(-1)
                out[start:start + len(pred)] = pred.cpu().numpy()
                if progress:
                    progress(len(pred))
        return out


def train_views(model, stage, k: int) -> tuple[int, str | None]:
    """The K a stage's training actually uses, and why the request is ignored (or None)."""
    if k <= 0:
        return 0, None
    if stage.fit == "frozen-outputs":
        return 0, (f"--frozen-train-cache ignored for stage {stage.name}: it fits on the frozen outputs of the "
                   "unaugmented training images, computed once (exact)")
    if not stage.frozen:
        return 0, f"--frozen-train-cache ignored for stage {stage.name}: it freezes nothing (exact training)"
    if stage.frozen_bn_train:
        return 0, (f"--frozen-train-cache ignored for stage {stage.name}: its frozen BatchNorm layers train, "
                   "so their outputs change every step (exact training)")
    if not supports(model):
        return 0, (f"--frozen-train-cache ignored for stage {stage.name}: the model has no "
                   "frozen_outputs/from_frozen (exact training)")
    return k, None


def _memory_cap() -> int:
    """Half the memory available now: the cache must leave room for the loader and the rest."""
    import os

    try:
        return os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE") // 2
    except (ValueError, OSError, AttributeError):
        return 16 * 2**30


def _gib(n: int) -> str:
    return f"{n / 2**30:.2f} GiB"


class TrainViewCache:
    """K augmented views of every training image through the frozen parts, computed once
    per stage; epoch e trains the trainable part on view (e mod K) of each image.

    This is an APPROXIMATION of the protocol (which draws a fresh augmentation of every
    image in every epoch), opted into with `--frozen-train-cache K` and recorded as such.
    View v of an image uses the stage's train transform seeded by (seed, stage, v, the
    image's name), so the cache is the same whenever it is rebuilt (after a resume, too),
    and an image has the same views in every split that trains on it: with a feature store
    (`--feature-store`), the frozen outputs of K views of a dataset are computed once for
    all its splits. The epoch's order is the normal loader's shuffle of epoch e.
    """

    def __init__(self, samples, pre, device, views: int, stage: str, seed: int, batch_size: int = 64,
                 max_bytes: int | None = None):
        if views < 1:
            raise MembenchError(f"--frozen-train-cache must be at least 1 to cache views, not {views}")
        self.samples, self.pre, self.device, self.views = tuple(samples), pre, device, views
        self.stage, self.seed, self.batch_size = stage, seed, batch_size
        self.max_bytes = _memory_cap() if max_bytes is None else max_bytes
        self.outputs = None  # tuple of (K, N, ...) CPU tensors
        self.nbytes = 0

    def view_seed(self) -> int:
        return epoch_seed(self.seed, f"{self.stage}:frozen-train-views", 0)

    def build(self, model, progress=None) -> None:
        import torch

        from membench.data.transforms import train_transform

        plain = unwrap(model)
        n = len(self.samples)
        store = []

        def keep(view, idx, outs):
            if not store:
                self._check_size(sum(o[0].numel() * o.element_size() for o in outs))
                store.extend(torch.empty((self.views, n, *o.shape[1:]), dtype=o.dtype) for o in outs)
            for s, o in zip(store, outs):
                s[view][idx] = o.cpu()

        # view v of an image is the loader's "epoch" v: its augmentation is seeded by (view seed, v, name)
        infer(frozen_forward(plain), self.samples, train_transform(self.pre), self.pre, self.device,
              batch_size=self.batch_size, on_batch=keep, module=plain, epochs=range(self.views),
              seed=self.view_seed(), seed_by="name", progress=progress)
        self.outputs = tuple(store)
        self.nbytes = sum(t.numel() * t.element_size() for t in self.outputs)

    def _check_size(self, per_image: int) -> None:
        need = per_image * len(self.samples) * self.views
        if need > self.max_bytes:
            raise MembenchError(
                f"--frozen-train-cache {self.views} would keep {_gib(need)} in CPU memory ({self.views} views x "
                f"{len(self.samples)} images x {per_image / 2**20:.2f} MiB), over the cap of "
                f"{_gib(self.max_bytes)} (half the available memory); use a smaller K, or 0 for exact "
                "on-the-fly training")

    def batches(self, epoch: int, batch_size: int, shuffle_seed: int):
        """(cached outputs of view epoch mod K, scores, indices) batches in the order the
        normal training loader (seed `shuffle_seed`) would serve epoch `epoch`."""
        import torch

        from membench.data.loader import EpochSampler

        order = torch.tensor(EpochSampler(len(self.samples), shuffle=True, seed=shuffle_seed).order(epoch))
        scores = torch.tensor([s.score for s in self.samples], dtype=torch.float32)
        view = epoch % self.views
        for start in range(0, len(order), batch_size):
            idx = order[start:start + batch_size]
            yield tuple(t[view][idx] for t in self.outputs), scores[idx], idx

    def forward(self, model, outs):
        """Predictions of the trainable part (call inside the device's autocast)."""
        return unwrap(model).from_frozen(tuple(o.to(self.device.torch, non_blocking=True) for o in outs))
