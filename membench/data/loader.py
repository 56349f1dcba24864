"""Datasets and loaders: decode in workers, uint8 batches to the device.

Reproducibility contract. The shuffle order of epoch e is a function of (seed, e); the
augmentation of image i in epoch e is a function of (seed, e, i) (each sample gets its own
torch.Generator), or with `seed_by="name"` of (seed, e, the image's name), so that an image
gets the same view in every split that holds it (cached views, membench.engine.cache). Neither
depends on the number of workers, on persistent workers, nor on what ran before, so a run
resumed at epoch e sees exactly the batches of an uninterrupted run.

Epochs: the n-th `iter(loader)` serves epoch `start + n`, where `start` is
`make_loader(..., epoch=start)` (default 0); `loader.set_epoch(e)` makes the next
iteration epoch e. Calling `set_epoch(e)` before every epoch, as with torch's
DistributedSampler, is always correct.
"""

from __future__ import annotations

import functools
import hashlib
import inspect

import torch
from torch.utils.data import DataLoader, Dataset, Sampler, default_collate

from membench.data.images import open_rgb


def sample_seed(seed: int, epoch: int, index: int | str) -> int:
    """A 63-bit seed from (seed, epoch, index); index -1 is the epoch's shuffle. An index
    may be an image's name (`seed_by="name"` passes "name:<name>", never equal to -1)."""
    digest = hashlib.blake2b(f"{seed},{epoch},{index}".encode(), digest_size=8).digest()
    return int.from_bytes(digest, "little") >> 1


class ImageDataset(Dataset):
    """Samples -> (uint8 image (3,H,W), float32 score, index).

    A key is an index (augmentation from the global torch RNG, as any torch dataset) or
    an (epoch, index) pair from `EpochSampler` (augmentation seeded by (seed, epoch, index),
    or by (seed, epoch, name) with `seed_by="name"`).
    """

    def __init__(self, samples, transform, seed: int = 0, seed_by: str = "index"):
        if seed_by not in ("index", "name"):
            raise ValueError(f"seed_by must be 'index' or 'name', not {seed_by!r}")
        self.samples = tuple(samples)
        self.transform = transform
        self.seed = seed
        self.seed_by = seed_by
        self.scores = torch.tensor([s.score for s in self.samples], dtype=torch.float32)
        self._takes_generator = _takes_generator(transform)

    def __len__(self):
        return len(self.samples)

    def __getitem__(self, key):
        epoch, index = key if isinstance(key, tuple) else (None, int(key))
        img = open_rgb(self.samples[index].path)
        if epoch is None:
            return self.transform(img), self.scores[index].clone(), index
        which = f"name:{self.samples[index].name}" if self.seed_by == "name" else index
        seed = sample_seed(self.seed, epoch, which)
        if self._takes_generator:
            x = self.transform(img, generator=torch.Generator().manual_seed(seed))
        else:  # a plain torchvision-style transform: seed the global RNG, then restore it
            with torch.random.fork_rng(devices=[]):
                torch.manual_seed(seed)
                x = self.transform(img)
        return x, self.scores[index].clone(), index


def _takes_generator(transform) -> bool:
    try:
        return "generator" in inspect.signature(transform).parameters
    except (TypeError, ValueError):
        return False


class EpochSampler(Sampler):
    """Yields (epoch, index) keys; shuffles with a generator seeded by (seed, epoch).

    With world_size > 1 each rank takes every world_size-th index of the same permutation
    (padded by wrapping so all ranks see as many samples, unless drop_last).
    """

    def __init__(self, n: int, *, shuffle: bool, seed: int, epoch: int = 0,
                 rank: int = 0, world_size: int = 1, drop_last: bool = False):
        self.n, self.shuffle, self.seed, self.epoch = n, shuffle, seed, epoch
        self.rank, self.world_size, self.drop_last = rank, world_size, drop_last

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def order(self, epoch: int) -> list[int]:
        if self.shuffle:
            gen = torch.Generator().manual_seed(sample_seed(self.seed, epoch, -1))
            idx = torch.randperm(self.n, generator=gen).tolist()
        else:
            idx = list(range(self.n))
        if self.world_size > 1:
            if self.drop_last:
                idx = idx[: len(idx) - len(idx) % self.world_size]
            elif len(idx) % self.world_size and idx:
                pad = self.world_size - len(idx) % self.world_size
                idx = idx + (idx * (pad // len(idx) + 1))[:pad]
            idx = idx[self.rank::self.world_size]
        return idx

    def __iter__(self):
        epoch = self.epoch
        self.epoch += 1
        return iter([(epoch, i) for i in self.order(epoch)])

    def __len__(self):
        if self.world_size == 1:
            return self.n
        if self.drop_last:
            return self.n // self.world_size
        return -(-self.n // self.world_size)


class Loader(DataLoader):
    """A DataLoader over an `EpochSampler`, with `set_epoch` and `epoch` (the next one)."""

    def set_epoch(self, epoch: int) -> None:
        self.sampler.set_epoch(epoch)

    @property
    def epoch(self) -> int:
        return self.sampler.epoch


def collate(batch):
    """(images, scores, indices). Images are stacked as (B, H, W, 3), a plain copy of the
    transforms' channels-last memory, and returned as the (B, 3, H, W) view of it."""
    images, scores, indices = zip(*batch)
    x = default_collate([im.permute(1, 2, 0) for im in images]).permute(0, 3, 1, 2)
    return x, default_collate(scores), default_collate(indices)


def _seed_worker(seed: int, worker_id: int) -> None:
    """Anything outside the per-sample generators (numpy, random, torch's global RNG)
    starts from a seed fixed by (seed, worker id)."""
    import random

    import numpy as np

    s = sample_seed(seed, -1, worker_id)
    random.seed(s)
    np.random.seed(s % 2**32)
    torch.manual_seed(s)


def make_loader(samples, transform, *, batch_size: int, shuffle: bool, workers: int, seed: int,
                device_type: str = "cpu", drop_last: bool = False, epoch: int = 0,
                rank: int = 0, world_size: int = 1, prefetch: int = 4, seed_by: str = "index"):
    """A `Loader` of (uint8 images (B,3,H,W) in channels-last memory, float32 scores,
    int64 indices) batches.

    Pinned memory on cuda; with workers, persistent workers and `prefetch` batches each.
    See the module docstring for what `seed` and `epoch` determine.
    """
    dataset = ImageDataset(samples, transform, seed=seed, seed_by=seed_by)
    sampler = EpochSampler(len(dataset), shuffle=shuffle, seed=seed, epoch=epoch,
                           rank=rank, world_size=world_size, drop_last=drop_last)
    extra = {}
    if workers > 0:
        extra = dict(persistent_workers=True, prefetch_factor=prefetch,
                     worker_init_fn=functools.partial(_seed_worker, seed))
    return Loader(dataset, batch_size=batch_size, sampler=sampler, num_workers=workers, collate_fn=collate,
                  drop_last=drop_last, pin_memory=device_type == "cuda",
                  generator=torch.Generator().manual_seed(seed), **extra)
