"""The one batch loop over images without gradients: `predict` and the frozen-output
caches all run through `infer`, so loading, normalising, autocast and eval mode are
decided in one place."""

from __future__ import annotations

import contextlib

from membench.engine.device import Device
from membench.spec import Preprocess, Sample


@contextlib.contextmanager
def eval_mode(module):
    """`module.eval()` for the block, then its previous mode back."""
    was_training = module.training
    module.eval()
    try:
        yield module
    finally:
        module.train(was_training)


def infer(forward, samples: tuple[Sample, ...], transform, pre: Preprocess, device: Device, *,
          batch_size: int, on_batch, module=None, epochs=(0,), seed: int = 0, seed_by: str = "index",
          progress=None) -> bool:
    """For each epoch in `epochs` (the loader's augmentation epoch; 0 for the evaluation
    transform), every batch of `samples` in order: `on_batch(epoch, idx, forward(x))` with x
    normalised on the device, under inference mode, autocast and `module` in eval mode.
    `on_batch` returning True stops early; returns False when it did, else True. `seed_by`:
    see membench.data.loader (what an augmentation is seeded by besides `seed` and the epoch)."""
    import torch

    from membench.data.loader import make_loader

    loader = make_loader(samples, transform, batch_size=batch_size, shuffle=False, workers=device.workers,
                         seed=seed, device_type=device.type, seed_by=seed_by)
    normalizer = device.normalizer(pre)
    mode = eval_mode(module) if module is not None else contextlib.nullcontext()
    with torch.inference_mode(), device.autocast(), mode:
        for epoch in epochs:
            loader.set_epoch(epoch)
            for x, _y, idx in loader:
                if on_batch(epoch, idx, forward(device.batch(x, normalizer))):
                    return False
                if progress:
                    progress(len(idx))
    return True


def predict(model, samples: tuple[Sample, ...], pre: Preprocess, device: Device,
            batch_size: int, progress=None, seed: int = 0):
    """Scores for `samples` in order (evaluation transform, no augmentation)."""
    import numpy as np

    from membench.data.transforms import eval_transform

    out = np.empty(len(samples), dtype=np.float64)

    def keep(_epoch, idx, pred):
        out[idx.numpy()] = pred.float().reshape(-1).cpu().numpy()

    from membench.data.feature_store import active, store_backed

    # with a feature store (--feature-store), the frozen part's outputs come from it
    infer(store_backed(model, active()), samples, eval_transform(pre), pre, device, batch_size=batch_size,
          on_batch=keep, module=model, seed=seed, progress=progress)
    return out
