"""Exact caching of frozen outputs for evaluation images (stage 2 of `ours`).

In a stage whose large submodules are frozen (both ResNet50s and the captioner in stage 2),
an evaluation image always goes through the same frozen computation: the evaluation
transform has no randomness and frozen weights do not change. So the frozen outputs of
the validation images are computed once per stage and every epoch's validation runs only
the trainable part. The result is the same computation, in the same dtype and batches, as
recomputing it: exact, not an approximation. Training images are augmented randomly, so
their frozen outputs are never cached here.

A model opts in with two methods, `forward(x) == from_frozen(frozen_outputs(x))`:
    frozen_outputs(x) -> tuple of tensors (per-sample first dimension)
    from_frozen(outputs) -> (B,) predictions
"""

from __future__ import annotations


def supports(model) -> bool:
    plain = getattr(model, "module", getattr(model, "_orig_mod", model))
    return callable(getattr(plain, "frozen_outputs", None)) and callable(getattr(plain, "from_frozen", None))


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

    def _plain(self, model):
        return getattr(model, "module", getattr(model, "_orig_mod", model))

    def build(self, model, progress=None) -> None:
        import torch

        from membench.loader import make_loader
        from membench.transforms import Normalizer, eval_transform

        plain = self._plain(model)
        loader = make_loader(self.samples, eval_transform(self.pre), batch_size=self.batch_size, shuffle=False,
                             workers=self.device.workers, seed=self.seed, device_type=self.device.type)
        normalizer = Normalizer(self.pre, channels_last=self.device.type == "cuda")
        was_training = plain.training
        plain.eval()
        store = None
        with torch.inference_mode(), self.device.autocast():
            for x, _y, idx in loader:
                outs = plain.frozen_outputs(self.device.batch(x, normalizer))
                if store is None:
                    need = sum(o[0].numel() * o.element_size() for o in outs) * len(self.samples)
                    if need > self.max_bytes:
                        self.disabled = True
                        break
                    store = [torch.empty((len(self.samples), *o.shape[1:]), dtype=o.dtype, device=self.store)
                             for o in outs]
                for s, o in zip(store, outs):
                    s[idx.to(s.device)] = o.to(self.store)
                if progress:
                    progress(len(idx))
        plain.train(was_training)
        if self.disabled:
            return
        self.outputs = tuple(store or ())
        self.nbytes = sum(t.numel() * t.element_size() for t in self.outputs)

    def predict(self, model, progress=None):
        """Predictions for the cached samples, in order (builds the cache on first use)."""
        import numpy as np
        import torch

        if self.outputs is None and not self.disabled:
            self.build(model)
        if self.disabled:
            from membench.train import predict

            return predict(model, self.samples, self.pre, self.device, self.batch_size, progress, self.seed)
        plain = self._plain(model)
        was_training = plain.training
        plain.eval()
        out = np.empty(len(self.samples), dtype=np.float64)
        with torch.inference_mode(), self.device.autocast():
            for start in range(0, len(self.samples), self.batch_size):
                part = tuple(t[start:start + self.batch_size].to(self.device.torch, non_blocking=True)
                             for t in self.outputs)
                pred = plain.from_frozen(part).float().reshape(-1)
                out[start:start + len(pred)] = pred.cpu().numpy()
                if progress:
                    progress(len(pred))
        plain.train(was_training)
        return out
