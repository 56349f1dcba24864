"""Where a stage's training batches come from, and how it validates.

A batch source serves each epoch's batches and runs the model's forward on one of them:
  LoaderBatches       images through the seeded training loader (the protocol), or
  CachedViewBatches   K cached augmented views of the frozen parts' outputs
                      (`--frozen-train-cache K`, an approximation recorded as such).
A validator gives the validation predictions after each epoch:
  PredictValidator    the evaluation transform through the whole model, or
  membench.engine.cache.FrozenCache   frozen outputs computed once, then only the trainable part
                      (exact: the same computation).
"""

from __future__ import annotations

import time
from typing import Iterable, Protocol

from membench.engine.cache import FrozenCache, TrainViewCache, supports
from membench.engine.device import Device
from membench.engine.inference import predict
from membench.engine.seeds import epoch_seed
from membench.errors import MembenchError
from membench.spec import Preprocess, Sample, Stage


class BatchSource(Protocol):
    def epoch(self, epoch: int) -> Iterable:
        """(inputs, scores, indices) batches of `epoch`, in its shuffled order."""

    def forward(self, inputs):
        """Predictions for one batch's inputs (called inside the device's autocast)."""


class Validator(Protocol):
    def predict(self, model, progress=None):
        """Predictions for the validation images, in order."""


class LoaderBatches:
    """One loader for the whole stage, so persistent workers survive from epoch to epoch."""

    def __init__(self, net, samples, pre: Preprocess, device: Device, *, batch: int, seed: int, start: int, dist,
                 drop_last: bool = False):
        from membench.data.loader import make_loader
        from membench.data.transforms import train_transform

        self.net, self.device, self.normalizer = net, device, device.normalizer(pre)
        self.loader = make_loader(samples, train_transform(pre), batch_size=dist.local_batch(batch), shuffle=True,
                                  workers=device.workers, seed=seed, epoch=start, device_type=device.type,
                                  rank=dist.rank, world_size=dist.world_size, drop_last=drop_last)

    def epoch(self, epoch: int):
        self.loader.set_epoch(epoch)  # shuffle and augmentation of this epoch, as in an unbroken run
        return self.loader

    def forward(self, x):
        return self.net(self.device.batch(x, self.normalizer))


class CachedViewBatches:
    """View (epoch mod K) of each image, in the epoch's shuffled order (see TrainViewCache)."""

    def __init__(self, model, views: TrainViewCache, *, batch: int, seed: int):
        self.model, self.views, self.batch, self.seed = model, views, batch, seed

    def epoch(self, epoch: int):
        return self.views.batches(epoch, self.batch, shuffle_seed=self.seed)

    def forward(self, outs):
        return self.views.forward(self.model, outs)


class PredictValidator:
    def __init__(self, samples, pre: Preprocess, device: Device, batch_size: int):
        self.samples, self.pre, self.device, self.batch_size = samples, pre, device, batch_size

    def predict(self, model, progress=None):
        return predict(model, self.samples, self.pre, self.device, batch_size=self.batch_size, progress=progress)


def validator(model, stage: Stage, val: tuple[Sample, ...], pre: Preprocess, device: Device,
              batch: int) -> Validator:
    """Frozen submodules see the same validation inputs every epoch: computed once (exact)."""
    # not when frozen BatchNorm trains: the frozen outputs then change every step
    if stage.frozen and supports(model) and not stage.frozen_bn_train:
        return FrozenCache(val, pre, device, batch_size=max(batch, 32))
    return PredictValidator(val, pre, device, batch_size=max(batch, 32))


def training_batches(model, net, stage: Stage, train: tuple[Sample, ...], pre: Preprocess, device: Device, *,
                     batch: int, seed: int, start: int, dist, views: int, view_seed: int,
                     progress) -> tuple[BatchSource, float]:
    """The stage's batch source and the seconds spent building it. `views` = K > 0: K cached
    views per image drawn from `view_seed` and each image's name, built again after a resume
    (they are seeded, so identical)."""
    shuffle_seed = epoch_seed(seed, stage.name, 0)
    if not views:
        return LoaderBatches(net, train, pre, device, batch=batch, seed=shuffle_seed, start=start, dist=dist,
                             drop_last=stage.drop_last), 0.0
    if dist.world_size > 1:
        raise MembenchError("--frozen-train-cache is not supported under torchrun (DDP); use it in one process")
    t0 = time.perf_counter()
    cache = TrainViewCache(train, pre, device, views, stage.name, view_seed, batch_size=max(batch, 64))
    task = progress.add_task(f"{stage.name}: {views} cached training views", total=len(train) * views)
    cache.build(model, progress=lambda n: progress.advance(task, n))
    progress.remove_task(task)
    return CachedViewBatches(model, cache, batch=batch, seed=shuffle_seed), time.perf_counter() - t0
