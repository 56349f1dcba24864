"""Exact caching of frozen outputs: cached validation == recomputed validation."""

from __future__ import annotations

import numpy as np
import torch

from membench.engine.cache import FrozenCache, supports
from membench.engine.device import Device
from membench.engine.inference import predict
from membench.scale.bench import make_jpegs
from membench.spec import Preprocess, Sample


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


# ---------------------------------------------------------------------- K-view training cache

import csv  # noqa: E402
import json  # noqa: E402
import math  # noqa: E402

import pytest  # noqa: E402

from membench import BuildContext, ModelSpec, Stage, hookimpl  # noqa: E402
from membench import Preprocess as Pre
from membench.data.loader import make_loader  # noqa: E402
from membench.engine.cache import TrainViewCache  # noqa: E402
from membench.engine.seeds import epoch_seed  # noqa: E402
from membench.engine.stage import train_stage
from membench.errors import MembenchError  # noqa: E402


class TinyFrozen(torch.nn.Module):
    """tiny_plugin's Tiny with the frozen/trainable split exposed; counts and records calls."""

    def __init__(self):
        super().__init__()
        self.features = torch.nn.Sequential(torch.nn.Conv2d(3, 8, 3, stride=2, padding=1), torch.nn.BatchNorm2d(8),
                                            torch.nn.ReLU(), torch.nn.AdaptiveAvgPool2d(1), torch.nn.Flatten())
        self.head = torch.nn.Linear(8, 1)
        self.frozen_rows = 0  # images that went through the frozen part
        self.trained_on = []  # inputs of from_frozen while training

    def frozen_outputs(self, x):
        self.frozen_rows += len(x)
        with torch.no_grad():
            return (self.features(x),)

    def from_frozen(self, outs):
        if self.training:
            self.trained_on.append(outs[0].detach().float().clone())
        return self.head(outs[0]).squeeze(1)

    def forward(self, x):
        return self.from_frozen(self.frozen_outputs(x))


def NoProgress():
    """A progress display that shows nothing (rich's own, disabled)."""
    from rich.progress import Progress

    return Progress(disable=True)


def _samples(tmp_path, n):
    paths = make_jpegs(tmp_path, n=n, size=(40, 36))
    return tuple(Sample(p.name, p, i / n) for i, p in enumerate(paths))


def test_views_computed_once_and_epoch_e_trains_on_view_e_mod_k(tmp_path):
    samples = _samples(tmp_path, 10)
    train, val = samples[:7], samples[7:]
    pre = Pre(size=(24, 24), train="paper")
    device = Device("cpu", workers=0)
    stage = Stage("stage2", epochs=4, batch_size=3, lr=1e-2, frozen=("features",))
    torch.manual_seed(0)
    model = TinyFrozen()
    train_stage(model, stage, train, val, pre, device, tmp_path / "s2", seed=5, patience=99, resume=False,
                progress=NoProgress(), frozen_train_cache=2)
    # 2 views of the 7 training images, once, plus the 3 validation images once (exact cache);
    # the exact protocol would put 4 epochs x 7 training images through the frozen part
    assert model.frozen_rows == 2 * 7 + 3
    # the same views, rebuilt independently (seeded by seed, stage, view, index)
    views = TrainViewCache(train, pre, device, 2, "stage2", seed=5)
    views.build(model)
    assert views.outputs[0].shape == (2, 7, 8)
    assert not torch.equal(views.outputs[0][0], views.outputs[0][1])  # two different augmentations
    normal = make_loader(train, None, batch_size=3, shuffle=True, workers=0, seed=epoch_seed(5, "stage2", 0))
    per_epoch = math.ceil(7 / 3)
    assert len(model.trained_on) == 4 * per_epoch
    for e in range(4):
        seen = torch.cat(model.trained_on[e * per_epoch:(e + 1) * per_epoch])
        order = normal.sampler.order(e)  # shuffled as the normal training loader would be
        assert torch.equal(seen, views.outputs[0][e % 2][order]), e
    first, second = (torch.cat(model.trained_on[i * per_epoch:(i + 1) * per_epoch]) for i in (0, 1))
    assert not torch.equal(first, second)


def test_exact_training_runs_frozen_part_every_epoch(tmp_path):
    samples = _samples(tmp_path, 10)
    model = TinyFrozen()
    stage = Stage("stage2", epochs=2, batch_size=3, lr=1e-2, frozen=("features",))
    train_stage(model, stage, samples[:7], samples[7:], Pre(size=(24, 24), train="paper"), Device("cpu"),
                tmp_path / "s2", seed=5, patience=99, resume=False, progress=NoProgress())
    assert model.frozen_rows == 2 * 7 + 3


def test_view_cache_over_the_memory_cap_is_refused_with_its_size(tmp_path):
    samples = _samples(tmp_path, 4)
    cache = TrainViewCache(samples, Pre(size=(24, 24), train="paper"), Device("cpu"), 3, "stage2", seed=0,
                           max_bytes=100)
    with pytest.raises(MembenchError, match=r"--frozen-train-cache 3 would keep 0\.00 GiB .*3 views x 4 images"):
        cache.build(TinyFrozen())


def build_tiny_frozen(ctx: BuildContext):
    from membench.weights.resolve import load_state_dict

    with torch.device("meta") if ctx.meta else torch.device("cpu"):
        model = TinyFrozen()
    if "stage1" in ctx.upstream:
        model.load_state_dict(load_state_dict(ctx.upstream["stage1"]), strict=False)
    return model


class FrozenChainPlugin:
    @hookimpl
    def register_models(self, register):
        register(ModelSpec(
            name="tiny-frozen-chain", build=build_tiny_frozen, summary="tiny-chain with frozen_outputs",
            preprocess=Pre(size=(32, 32), train="paper"),
            recipe=(Stage("stage1", model="tiny-cnn"),
                    Stage("stage2", epochs=3, batch_size=8, lr=1e-2, frozen=("features",))),
            tags=("test",)))


@pytest.fixture
def frozen_chain(tiny_plugin):
    from membench import plugins, registry

    plugin = FrozenChainPlugin()
    pm = plugins.load()
    pm.register(plugin, name="tests.frozen_chain")
    registry.clear_cache()
    yield
    pm.unregister(plugin)
    registry.clear_cache()


def _rows(out):
    with open(out / "results.csv", newline="") as f:
        return {r["model"]: r for r in csv.DictReader(f)}


def test_run_records_the_approximation_and_never_shares_the_exact_job(frozen_chain, demo_root, tmp_path, run_cli):
    work = tmp_path / "work"
    common = ("--data", demo_root, "--dataset", "demo", "--splits", "1", "--work-dir", work)
    code, _, err = run_cli("run", "--model", "tiny-frozen-chain", "--out", tmp_path / "exact", *common)
    assert code == 0, err
    code, _, err = run_cli("run", "--model", "tiny-frozen-chain", "--out", tmp_path / "k2", *common,
                           "--frozen-train-cache", "2")
    assert code == 0, err
    exact, cached = _rows(tmp_path / "exact"), _rows(tmp_path / "k2")
    assert exact["tiny-frozen-chain"]["notes"] == ""
    assert cached["tiny-frozen-chain"]["notes"] == "frozen_train_cache=2 (approximation)"
    assert cached["tiny-frozen-chain"]["run_id"] != exact["tiny-frozen-chain"]["run_id"]
    # stage 1 has nothing frozen: the same (exact) job, reused, not retrained
    assert cached["tiny-cnn"]["run_id"] == exact["tiny-cnn"]["run_id"] and cached["tiny-cnn"]["notes"] == ""
    assert "reusing" in err
    prov = json.loads((tmp_path / "k2" / "runs" / f"{cached['tiny-frozen-chain']['run_id']}.json").read_text())
    assert prov["config"]["frozen_train_cache"] == 2 and prov["stages"]["stage2"]["frozen_train_cache"] == 2
    exact_prov = json.loads((tmp_path / "exact" / "runs" / f"{exact['tiny-frozen-chain']['run_id']}.json").read_text())
    assert exact_prov["config"]["frozen_train_cache"] == 0 and exact_prov["stages"]["stage2"]["frozen_train_cache"] == 0


def test_option_is_ignored_with_a_warning_without_frozen_parts(tiny_plugin, demo_root, tmp_path, run_cli):
    common = ("--model", "tiny-cnn", "--data", demo_root, "--dataset", "demo", "--splits", "1")
    assert run_cli("run", *common, "--out", tmp_path / "exact", "--work-dir", tmp_path / "w0")[0] == 0
    code, _, err = run_cli("run", *common, "--out", tmp_path / "k2", "--work-dir", tmp_path / "w1",
                           "--frozen-train-cache", "2")
    assert code == 0, err
    assert "--frozen-train-cache ignored for stage stage1: it freezes nothing" in " ".join(err.split())
    row = _rows(tmp_path / "k2")["tiny-cnn"]
    exact = _rows(tmp_path / "exact")["tiny-cnn"]
    assert row["notes"] == "" and row["run_id"] == exact["run_id"] and row["rho"] == exact["rho"]


def test_negative_k_is_refused(tiny_plugin, demo_root, tmp_path, run_cli):
    code, _, err = run_cli("run", "--model", "tiny-cnn", "--data", demo_root, "--dataset", "demo", "--splits", "1",
                           "--out", tmp_path / "lb", "--frozen-train-cache", "-1")
    assert code == 2 and "--frozen-train-cache must be 0" in err
