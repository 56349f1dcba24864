"""The persistent feature store: the same predictions as without it, reused across
processes and splits, and never a stale hit (frozen weights, pixels or code changed)."""

from __future__ import annotations

import io

import numpy as np
import pytest
import torch

from membench.data.feature_store import FeatureStore, input_key, store_backed
from membench.engine.device import Device
from membench.engine.inference import predict
from membench.errors import MembenchError
from membench.scale.bench import make_jpegs
from membench.spec import Preprocess, Sample


class PassThrough(torch.nn.Module):
    """A frozen trunk and a trainable branch that sees the input itself (as ResMem's
    AlexNet branch does): frozen_outputs returns (trunk features, the input)."""

    frozen_output_modules = ("trunk",)

    def __init__(self):
        super().__init__()
        self.trunk = torch.nn.Sequential(torch.nn.Conv2d(3, 4, 3, stride=2), torch.nn.BatchNorm2d(4), torch.nn.ReLU(),
                                         torch.nn.AdaptiveAvgPool2d(1), torch.nn.Flatten())
        self.branch = torch.nn.Conv2d(3, 2, 5, stride=4)
        self.head = torch.nn.Linear(6, 1)
        self.trunk_calls = 0

    def frozen_outputs(self, x):
        self.trunk_calls += len(x)
        return self.trunk(x), x

    def from_frozen(self, outputs):
        features, x = outputs
        return self.head(torch.cat((features, self.branch(x).mean((2, 3))), 1)).squeeze(1)

    def forward(self, x):
        return self.from_frozen(self.frozen_outputs(x))


@pytest.fixture
def images(tmp_path):
    paths = make_jpegs(tmp_path / "img", n=9, size=(48, 40))
    return tuple(Sample(p.name, p, 0.5) for p in paths)


PRE = Preprocess(size=(24, 24), train="paper")
CPU = Device("cpu", workers=0)


def model(seed=0):
    torch.manual_seed(seed)
    return PassThrough().eval()


def test_same_predictions_reused_across_instances(tmp_path, images):
    plain = predict(model(), images, PRE, CPU, batch_size=4)
    store = FeatureStore(tmp_path / "fs")
    m = model()
    first = predict(store_backed(m, store), images, PRE, CPU, batch_size=4)
    assert np.array_equal(first, plain)  # every batch a miss: exactly the plain computation
    assert (store.hits, store.misses, m.trunk_calls) == (0, 9, 9)
    # a new process (new store object, new model with the same frozen weights) computes nothing
    again_store, again = FeatureStore(tmp_path / "fs"), model()
    second = predict(store_backed(again, again_store), images, PRE, CPU, batch_size=4)
    assert np.array_equal(second, plain)
    assert (again_store.hits, again_store.misses, again.trunk_calls) == (9, 0, 0)
    # another "split": overlapping images in other batches; only the new ones are computed
    other = images[5:] + tuple(Sample(f"copy-{s.name}", s.path, 0.1) for s in images[:2])
    mixed = FeatureStore(tmp_path / "fs")
    got = predict(store_backed(model(), mixed), other, PRE, CPU, batch_size=3)
    assert mixed.misses == 0 and mixed.hits == len(other)  # the same pixels, whatever the file name
    np.testing.assert_allclose(got, predict(model(), other, PRE, CPU, batch_size=3), rtol=0, atol=1e-6)
    # the input passed through is not stored: one small file per image (features only)
    files = sorted((tmp_path / "fs").rglob("*.pt"))
    assert len(files) == 9 and max(f.stat().st_size for f in files) < 4096


def test_trainable_changes_hit_frozen_changes_miss(tmp_path, images):
    store = FeatureStore(tmp_path / "fs")
    predict(store_backed(model(), store), images, PRE, CPU, batch_size=4)
    tuned = model()
    with torch.no_grad():  # fine-tuning moves the trainable parts only: same frozen outputs
        tuned.head.weight.add_(1.0)
        tuned.branch.weight.mul_(2.0)
    s2 = FeatureStore(tmp_path / "fs")
    got = predict(store_backed(tuned, s2), images, PRE, CPU, batch_size=4)
    assert (s2.hits, s2.misses) == (9, 0)
    assert np.array_equal(got, predict(tuned, images, PRE, CPU, batch_size=4))
    # other frozen weights (a BatchNorm buffer is enough): everything is recomputed
    moved = model()
    moved.trunk[1].running_mean.add_(0.5)
    s3 = FeatureStore(tmp_path / "fs")
    got = predict(store_backed(moved, s3), images, PRE, CPU, batch_size=4)
    assert (s3.hits, s3.misses) == (0, 9)
    assert np.array_equal(got, predict(moved, images, PRE, CPU, batch_size=4))
    # the same model object, its frozen weights changed in place (training an unfrozen
    # trunk): the next predict call digests the weights again, so it misses
    same = model()
    s5 = FeatureStore(tmp_path / "fs")
    predict(store_backed(same, s5), images, PRE, CPU, batch_size=4)
    with torch.no_grad():
        same.trunk[0].weight.mul_(1.5)
    got = predict(store_backed(same, s5), images, PRE, CPU, batch_size=4)
    assert (s5.hits, s5.misses) == (9, 9)
    assert np.array_equal(got, predict(same, images, PRE, CPU, batch_size=4))
    # other pixels (another resize): other inputs, so misses
    s4 = FeatureStore(tmp_path / "fs")
    predict(store_backed(model(), s4), images, Preprocess(size=(20, 20), train="paper"), CPU, batch_size=4)
    assert (s4.hits, s4.misses) == (0, 9)


def test_damaged_file_is_recomputed_and_bad_dir_is_an_error(tmp_path, images):
    store = FeatureStore(tmp_path / "fs")
    expected = predict(store_backed(model(), store), images, PRE, CPU, batch_size=4)
    victim = sorted((tmp_path / "fs").rglob("*.pt"))[0]
    victim.write_bytes(b"not a tensor file")
    again = FeatureStore(tmp_path / "fs")
    assert np.array_equal(predict(store_backed(model(), again), images, PRE, CPU, batch_size=4), expected)
    assert (again.hits, again.misses) == (8, 1)
    blocker = tmp_path / "file"
    blocker.write_text("x")
    with pytest.raises(MembenchError, match="cannot create the feature store"):
        FeatureStore(blocker / "fs")


def _flip_a_feature_bit(path):
    """Flip a high bit of the first stored feature value (found by its bytes): the file still
    loads, with another number in it."""
    raw = bytearray(path.read_bytes())
    payload = raw[raw.index(b"\n") + 1:] if raw.startswith(b"membench-feature-store-entry") else raw
    features = torch.load(io.BytesIO(bytes(payload)), weights_only=True)[0]
    at = bytes(raw).index(features.numpy().tobytes()) + 3  # the sign and exponent byte of the first float
    raw[at] ^= 0x40
    path.write_bytes(bytes(raw))


@pytest.mark.parametrize("damage", ["a flipped bit", "cut short", "emptied"])
def test_a_damaged_entry_is_never_used_recomputed_and_counted(tmp_path, images, damage):
    """Before: a flipped bit in an entry changed the prediction silently, while provenance
    reported hits and "the same computation"."""
    from membench.data.feature_store import describe

    store = FeatureStore(tmp_path / "fs")
    plain = predict(store_backed(model(), store), images, PRE, CPU, batch_size=4)
    victim = sorted((tmp_path / "fs").rglob("*.pt"))[0]
    if damage == "a flipped bit":
        _flip_a_feature_bit(victim)
    else:
        victim.write_bytes(victim.read_bytes()[: victim.stat().st_size // 2 if damage == "cut short" else 0])
    said = []
    again = FeatureStore(tmp_path / "fs")
    again.say = said.append  # the messages, which go to stderr by default
    got = predict(store_backed(model(), again), images, PRE, CPU, batch_size=4)
    assert np.array_equal(got, plain)
    assert (again.hits, again.misses, again.damaged) == (8, 1, 1)
    assert said == [f"membench: feature store entry {victim} is damaged ("
                    f"{'checksum mismatch' if damage != 'emptied' else 'not a membench feature-store entry'}): "
                    "not used, recomputed"]
    assert describe(again)["damaged"] == 1 and "damaged" in describe(again)["meaning"]
    third = FeatureStore(tmp_path / "fs", say=said.append)  # the entry was written again, whole
    assert np.array_equal(predict(store_backed(model(), third), images, PRE, CPU, batch_size=4), plain)
    assert (third.hits, third.damaged, len(said)) == (9, 0, 1)


def test_models_without_the_protocol_are_left_alone(tmp_path):
    plain = torch.nn.Linear(2, 1)
    assert store_backed(plain, FeatureStore(tmp_path / "fs")) is plain
    assert store_backed(model(), None).__class__ is PassThrough


def test_input_key_is_content():
    a = torch.arange(12, dtype=torch.float32).reshape(3, 2, 2)
    assert input_key(a) == input_key(a.clone()) != input_key(a + 1e-6)
    assert input_key(a) != input_key(a.reshape(3, 4))  # same bytes, other shape
    assert input_key(a.to(torch.bfloat16)) != input_key(a)


def test_caches_and_predict_use_the_active_store(tmp_path, images, monkeypatch):
    from membench.data import feature_store
    from membench.engine.cache import FrozenCache, TrainViewCache

    monkeypatch.delenv(feature_store.ENV_VAR, raising=False)
    monkeypatch.setattr(feature_store, "_active", None)
    store = feature_store.activate(tmp_path / "fs")
    assert feature_store.describe()["root"] == str(tmp_path / "fs")
    m = model()
    first = FrozenCache(images, PRE, CPU, batch_size=4)
    first.build(m)
    assert (store.hits, store.misses) == (0, 9)
    again = FrozenCache(images, PRE, CPU, batch_size=4)
    again.build(model())
    assert (store.hits, store.misses) == (9, 9)
    assert np.array_equal(first.predict(m), again.predict(m))
    assert np.array_equal(predict(m, images, PRE, CPU, batch_size=4), first.predict(m))  # predict: hits too
    assert store.hits == 18
    views = TrainViewCache(images, PRE, CPU, views=2, stage="s", seed=0, batch_size=4)
    views.build(model())  # augmented views: new inputs, computed and kept
    assert store.misses == 9 + 18
    # a job process started with the variable finds the same store
    monkeypatch.setattr(feature_store, "_active", None)
    assert feature_store.active().root == (tmp_path / "fs").resolve()
    feature_store.activate(None)
    assert feature_store.active() is None


def test_cached_views_are_the_same_in_every_split_so_the_store_computes_them_once(tmp_path, images, monkeypatch):
    """An image's cached training views depend on (seed, stage, view, its name), not on its
    position in a split: a second split, holding some of the same images in another order,
    reads their views from the store and computes only its new images."""
    from membench.data import feature_store
    from membench.engine.cache import TrainViewCache

    monkeypatch.delenv(feature_store.ENV_VAR, raising=False)
    monkeypatch.setattr(feature_store, "_active", None)
    store = feature_store.activate(tmp_path / "fs")
    try:
        split1, split2 = images[:6], tuple(reversed(images[3:]))  # images[3:6] in both, in other positions
        one = TrainViewCache(split1, PRE, CPU, views=2, stage="s", seed=3, batch_size=4)
        one.build(model())
        assert (store.hits, store.misses) == (0, 12)
        two = TrainViewCache(split2, PRE, CPU, views=2, stage="s", seed=3, batch_size=4)
        two.build(model())
        assert (store.hits, store.misses) == (6, 12 + 6)
        for name in (s.name for s in images[3:6]):
            i, j = [s.name for s in split1].index(name), [s.name for s in split2].index(name)
            for a, b in zip(one.outputs, two.outputs):
                assert torch.equal(a[:, i], b[:, j])
        assert not torch.equal(one.outputs[1][0, 3], one.outputs[1][1, 3])  # two views differ
        other_seed = TrainViewCache(split1, PRE, CPU, views=1, stage="s", seed=4, batch_size=4)
        other_seed.build(model())
        assert store.misses == 18 + 6  # another run seed: other views
    finally:
        feature_store.activate(None)
