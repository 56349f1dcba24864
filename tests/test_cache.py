"""Exact caching of frozen outputs: cached validation == recomputed validation."""

from __future__ import annotations

import numpy as np
import torch

from membench.bench import make_jpegs
from membench.cache import FrozenCache, supports
from membench.spec import Preprocess, Sample
from membench.train import Device, predict


class Toy(torch.nn.Module):
    """A frozen trunk (with BatchNorm) and a trainable head, split as the cache expects."""

    def __init__(self):
        super().__init__()
        self.trunk = torch.nn.Sequential(torch.nn.Conv2d(3, 4, 3, stride=2), torch.nn.BatchNorm2d(4), torch.nn.ReLU())
        self.head = torch.nn.Linear(4, 1)

    def frozen_outputs(self, x):
        with torch.no_grad():
            f = self.trunk(x)
        return f.mean((2, 3)), f.amax((2, 3))

    def from_frozen(self, outs):
        mean, peak = outs
        return self.head(mean + 0.1 * peak).squeeze(1)

    def forward(self, x):
        return self.from_frozen(self.frozen_outputs(x))


def test_cached_predictions_equal_recomputed(tmp_path):
    torch.manual_seed(0)
    paths = make_jpegs(tmp_path, n=7, size=(48, 40))
    samples = tuple(Sample(p.name, p, 0.5) for p in paths)
    pre = Preprocess(size=(24, 24), train="paper")
    device = Device("cpu", workers=0)
    model = Toy()
    for p in model.trunk.parameters():
        p.requires_grad_(False)
    assert supports(model) and not supports(torch.nn.Linear(1, 1))
    cache = FrozenCache(samples, pre, device, batch_size=3)
    first = cache.predict(model)
    assert np.array_equal(first, predict(model, samples, pre, device, batch_size=3))
    assert [t.shape for t in cache.outputs] == [(7, 4), (7, 4)] and cache.nbytes == 2 * 7 * 4 * 4
    with torch.no_grad():  # the head trains; the frozen trunk does not
        model.head.weight.add_(0.5)
    model.train()
    again = cache.predict(model)
    assert model.training  # the caller's mode is restored
    assert not np.array_equal(again, first)
    assert np.array_equal(again, predict(model, samples, pre, device, batch_size=3))


def test_too_large_cache_falls_back_to_recomputing(tmp_path):
    paths = make_jpegs(tmp_path, n=3, size=(32, 32))
    samples = tuple(Sample(p.name, p, 0.5) for p in paths)
    pre = Preprocess(size=(16, 16), train="paper")
    device = Device("cpu", workers=0)
    model = Toy()
    cache = FrozenCache(samples, pre, device, batch_size=2, max_bytes=10)
    assert np.array_equal(cache.predict(model), predict(model, samples, pre, device, batch_size=2))
    assert cache.disabled and cache.outputs is None
