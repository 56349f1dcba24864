"""AMNet against its official code (github.com/ok1zjf/AMNet): the released weights'
layout imports exactly and evaluates to the same predictions as the same tensors loaded
by hand; the training recipe and the forward follow amnet.py / amnet_model.py / config.py.

The official model's modules are written out here from amnet_model.py (AMemNetModel with
the ResNet50FC front end, a_res=14, a_vec_size=1024, lstm_hidden_size=1024), so the key
names and shapes come from the official code, not from membench's model.
"""

from __future__ import annotations

import io
import json
import zipfile
from collections import OrderedDict

import pytest
import torch
import torch.nn as nn

from membench import registry
from membench.errors import MembenchError
from membench.weights import released

RELEASE = "lamem_ResNet50FC_lstm3"


class OfficialResNet50FC(nn.Module):
    def __init__(self):
        super().__init__()
        from torchvision.models import resnet50

        self.core_cnn = resnet50(weights=None)
        self.D = 1024


class OfficialAMemNetModel(nn.Module):
    """The parameterised modules of amnet_model.AMemNetModel.__init__, in its order."""

    def __init__(self, core_cnn, a_res=14, a_vec_size=1024):
        super().__init__()
        L, D, H = a_res * a_res, a_vec_size, 1024
        self.core_cnn = core_cnn
        self.inconv = nn.Conv2d(core_cnn.D, D, kernel_size=(1, 1), stride=1, padding=0, bias=True)
        self.bn1 = nn.BatchNorm2d(D)
        self.hs1 = nn.Linear(D, H)
        self.hc1 = nn.Linear(D, H)
        self.e1 = nn.Linear(D, D, bias=False)
        self.eh1 = nn.Linear(H, L)
        self.eh3 = nn.Linear(D, 1, bias=False)
        self.rnn = nn.LSTM(input_size=D, hidden_size=H, num_layers=1, bidirectional=False)
        self.regnet1 = nn.Linear(H, 512)
        self.regnet4 = nn.Linear(512, 1)


def official_state(seed: int, head_only: bool = False) -> OrderedDict:
    """A state_dict as PyTorch 0.2 saved it: random values (BatchNorm statistics included),
    no `num_batches_tracked` (that buffer came with PyTorch 0.4.1)."""
    gen = torch.Generator().manual_seed(seed)
    with torch.device("meta"):
        shapes = {k: v.shape for k, v in OfficialAMemNetModel(OfficialResNet50FC()).state_dict().items()}
    state = OrderedDict()
    for key, shape in shapes.items():
        if key.endswith("num_batches_tracked") or (head_only and key.startswith("core_cnn.")):
            continue
        if key.endswith("running_var"):
            state[key] = torch.rand(shape, generator=gen) + 0.5
        elif key.endswith("running_mean"):
            state[key] = torch.randn(shape, generator=gen) * 0.1
        else:  # scaled so that activations stay finite through 23 residual blocks
            fan_in = max(1, int(torch.tensor(shape[1:]).prod())) if len(shape) > 1 else 1
            state[key] = torch.randn(shape, generator=gen) / fan_in ** 0.5
    return state


def legacy_bytes(state) -> bytes:
    """torch.save({"model": state}) as PyTorch 0.2 wrote it: the legacy (non-zip) format, and
    tensors rebuilt by torch._utils._rebuild_tensor (v1), which PyTorch 0.4 replaced by v2."""
    import torch._utils

    def v1(tensor, protocol):
        storage = torch.storage.TypedStorage(wrap_storage=tensor.untyped_storage(), dtype=tensor.dtype,
                                             _internal=True)
        return torch._utils._rebuild_tensor, (storage, tensor.storage_offset(), tuple(tensor.size()),
                                              tensor.stride())

    buf = io.BytesIO()
    original = torch.Tensor.__reduce_ex__
    torch.Tensor.__reduce_ex__ = v1
    try:
        torch.save({"model": state}, buf, _use_new_zipfile_serialization=False)
    finally:
        torch.Tensor.__reduce_ex__ = original
    data = buf.getvalue()
    assert b"_rebuild_tensor_v2" not in data
    return data


def write_archive(path, splits: dict[int, dict[int, OrderedDict]], logs: dict[int, str] | None = None):
    """The official archive: RELEASE_train_<k>/weights_<epoch>.pkl (+ train_log_0.csv)."""
    with zipfile.ZipFile(path, "w", compression=zipfile.ZIP_STORED) as z:
        for k, epochs in splits.items():
            for epoch, state in epochs.items():
                z.writestr(f"{RELEASE}_train_{k}/weights_{epoch}.pkl", legacy_bytes(state))
            if logs and k in logs:
                z.writestr(f"{RELEASE}_train_{k}/train_log_0.csv", logs[k])
    return path


@pytest.fixture(scope="module")
def small_demo(tmp_path_factory):
    """Demo data in the LaMem layout with few test images (AMNet runs a ResNet50 at 224)."""
    from membench.data.demo import generate

    return generate(tmp_path_factory.mktemp("demo") / "demo", n_images=24, n_splits=5, seed=1)


@pytest.fixture(scope="module")
def states():
    """Split 2 shares split 1's ResNet50 (cheaper to build) and has its own head."""
    first, head = official_state(1), official_state(2, head_only=True)
    second = OrderedDict((k, v if k.startswith("core_cnn.") else head[k]) for k, v in first.items())
    return {1: first, 2: second}


def test_official_keys_map_exactly_onto_membench_amnet():
    """Every official key has a membench tensor of the same shape and nothing is left over
    (the only additions are num_batches_tracked counters, which PyTorch 0.2 lacked)."""
    from membench_plugins.models.amnet import _official_keys

    with torch.device("meta"):
        official = OfficialAMemNetModel(OfficialResNet50FC()).state_dict()
    official = {k: v for k, v in official.items() if not k.endswith("num_batches_tracked")}
    mapped = _official_keys(official)
    expected = released.expected_state(registry.get_model("amnet"))
    released.check_exact(expected, mapped, "official", "amnet")  # raises on any difference
    assert len(expected) == len(official) + sum(k.endswith("num_batches_tracked") for k in expected)


def test_first_mismatch_is_named(tmp_path):
    from membench_plugins.models.amnet import _official_keys

    with torch.device("meta"):
        official = dict(OfficialAMemNetModel(OfficialResNet50FC()).state_dict())
    expected = released.expected_state(registry.get_model("amnet"))
    wrong = dict(official, **{"regnet1.weight": torch.empty(256, 1024, device="meta")})
    with pytest.raises(MembenchError, match=r"regnet1.weight has shape \[256, 1024\], amnet needs \[512, 1024\]"):
        released.check_exact(expected, _official_keys(wrong), "a.zip:x.pkl", "amnet")
    missing = {k: v for k, v in official.items() if k != "eh3.weight"}
    with pytest.raises(MembenchError, match=r"eh3.weight \[1, 1024\] of amnet is missing"):
        released.check_exact(expected, _official_keys(missing), "a.zip:x.pkl", "amnet")
    extra = dict(official, **{"eh12.weight": torch.empty(1024, 1024, device="meta")})
    with pytest.raises(MembenchError, match=r"unexpected tensor eh12.weight"):
        released.check_exact(expected, _official_keys(extra), "a.zip:x.pkl", "amnet")


def test_checkpoint_choice_follows_the_official_evaluation(tmp_path):
    """One .pkl: that one; several: the best validation rho of train_log_0.csv; no log: the latest."""
    from membench_plugins.models.amnet import _choose

    assert _choose({35: "a/weights_35.pkl"}, None) == "a/weights_35.pkl"
    log = ("train,1,100,0.5,0.3,[0.0001],None\nval,1,None,0.4,0.60,None,0.01\n"
           "val,2,None,0.4,0.66,None,0.01\nval,3,None,0.4,0.65,None,0.01\n")
    epochs = {1: "w1", 2: "w2", 3: "w3"}
    assert _choose(epochs, log) == "w2"
    assert _choose(epochs, None) == "w3"


def test_import_then_run_gives_the_predictions_of_the_tensors_loaded_by_hand(
        tmp_path, states, small_demo, run_cli):
    """Round trip on two splits: import the official-layout archive, evaluate it with
    `membench run --train none`, and compare every prediction with membench's amnet built by
    hand with the same official tensors (keys renamed as documented), evaluated on the same
    images with the official test transform."""
    from membench_plugins.models.amnet import _official_keys

    log = "val,7,None,0.4,0.61,None,0.01\nval,9,None,0.4,0.59,None,0.01\n"
    # split 2 holds two epochs: the log's best (7) must be the one installed
    archive = write_archive(tmp_path / f"{RELEASE}.zip", {1: {35: states[1]}, 2: {7: states[2], 9: states[1]}},
                            logs={2: log})
    code, out, err = run_cli("weights", "import", "amnet", archive)
    assert code == 0, err
    manifest = json.loads((released.weights_root() / "amnet" / RELEASE / "manifest.json").read_text())
    assert manifest["checkpoints"]["1"]["member"] == f"{RELEASE}_train_1/weights_35.pkl"
    assert manifest["checkpoints"]["2"]["member"] == f"{RELEASE}_train_2/weights_7.pkl"
    assert len(manifest["archive"]["sha256"]) == 64

    lb = tmp_path / "lb"
    code, out, err = run_cli("run", "--model", "amnet", "--train", "none", "--data", small_demo,
                             "--splits", "1,2", "--out", lb, "--work-dir", tmp_path / "work", "--device", "cpu")
    assert code == 0, err
    import csv

    rows = list(csv.DictReader(open(lb / "results.csv")))
    assert [r["split"] for r in rows] == ["1", "2"]
    assert all("authors' weights" in (r.get("configuration") or r["notes"]) for r in rows)

    from membench.engine.device import resolve_device
    from membench.engine.inference import predict
    from membench.spec import BuildContext

    spec = registry.get_model("amnet")
    dataset = registry.get_dataset("lamem").opener()(small_demo, {})
    for k in (1, 2):
        model = spec.builder()(BuildContext(pretrained=False))
        model.load_state_dict(_official_keys(states[k]))  # strict: every key, every shape
        test = dataset.load_split(k).test
        by_hand = predict(model, test, spec.preprocess, resolve_device("cpu"), batch_size=8)
        measured = {}
        with open(lb / "predictions" / rows[0]["run_id"] / f"split{k}.csv") as f:
            for r in csv.DictReader(f):
                measured[r["image"]] = float(r["pred"])
        assert [measured[s.name] for s in test] == pytest.approx(list(by_hand), abs=1e-6)
        assert len(set(by_hand.round(6))) > 1  # a real, input-dependent prediction


def test_run_without_installed_weights_says_how_to_get_them(tmp_path, small_demo, run_cli):
    code, out, err = run_cli("run", "--model", "amnet", "--train", "none", "--data", small_demo,
                             "--splits", "1", "--out", tmp_path / "lb", "--work-dir", tmp_path / "w",
                             "--device", "cpu")
    assert code == 2
    assert "membench weights fetch amnet" in err and "weights import amnet" in err
    assert "Traceback" not in err


def test_a_split_without_a_checkpoint_is_refused_before_any_job(tmp_path, states, small_demo, run_cli):
    write_archive(tmp_path / "a.zip", {1: {3: states[1]}})
    assert run_cli("weights", "import", "amnet", tmp_path / "a.zip")[0] == 0
    code, out, err = run_cli("run", "--model", "amnet", "--train", "none", "--data", small_demo,
                             "--splits", "1,3", "--out", tmp_path / "lb", "--work-dir", tmp_path / "w",
                             "--device", "cpu")
    assert code == 2 and "no checkpoint for split 3" in err
    assert not (tmp_path / "lb" / "results.csv").exists()  # split 1 did not run either


def test_an_archive_without_this_variant_is_refused(tmp_path, run_cli):
    with zipfile.ZipFile(tmp_path / "noatt.zip", "w") as z:
        z.writestr("lamem_ResNet50FC_lstm3_noatt_train_1/weights_3.pkl", b"x")
    code, out, err = run_cli("weights", "import", "amnet", tmp_path / "noatt.zip")
    assert code == 2 and "no checkpoint of lamem_ResNet50FC_lstm3 found" in err


# ---------------------------------------------------------------------- training like the official code

def test_recipe_is_the_official_one():
    stage, = registry.get_model("amnet").recipe
    assert (stage.optimizer, stage.lr, stage.weight_decay, stage.schedule) == ("adam", 1e-4, 1e-6, "constant")
    assert (stage.batch_size, stage.drop_last) == (222, True)
    assert stage.epochs == 54 and stage.patience == 54  # range(1, 55): every epoch, best val kept
    assert stage.frozen == ("backbone",) and stage.frozen_bn_train


def test_dropped_hidden_state_feeds_the_next_attention_step():
    """In train mode the h that the next step's attention (eh1) sees is the dropped-out one,
    the very tensor the regressor saw (one mask), as in AMemNetModel.forward."""
    from membench.spec import BuildContext

    torch.manual_seed(0)
    model = registry.get_model("amnet").builder()(BuildContext(pretrained=False))
    model.train()
    seen = {"eh1": [], "regnet1": []}
    model.eh1.register_forward_hook(lambda m, args, out: seen["eh1"].append(args[0].detach().clone()))
    model.regnet1.register_forward_hook(lambda m, args, out: seen["regnet1"].append(args[0].detach().clone()))
    model(torch.randn(2, 3, 224, 224))
    # steps 2 and 3 attend with the h that the regressor of steps 1 and 2 received
    for step in (1, 2):
        assert torch.equal(seen["eh1"][step], seen["regnet1"][step - 1])
    assert (seen["regnet1"][0] == 0).float().mean() > 0.3  # it is dropped out (p = 0.5)


@pytest.mark.slow
def test_all_five_splits_from_the_official_archive(tmp_path, states, small_demo, run_cli):
    """The issue's end-to-end check: a five-split archive in the official layout, then
    `membench run --model amnet --train none --splits all`; every split uses its own
    checkpoint and the report labels the rows as the authors' weights next to 0.677."""
    from membench_plugins.models.amnet import _official_keys  # noqa: F401

    heads = {k: official_state(10 + k, head_only=True) for k in range(1, 6)}
    splits = {k: {30 + k: OrderedDict((key, v if key.startswith("core_cnn.") else heads[k][key])
                                      for key, v in states[1].items())} for k in range(1, 6)}
    archive = write_archive(tmp_path / f"{RELEASE}.zip", splits)
    assert run_cli("weights", "import", "amnet", archive)[0] == 0
    lb = tmp_path / "lb"
    code, out, err = run_cli("run", "--model", "amnet", "--train", "none", "--data", small_demo, "--splits", "all",
                             "--out", lb, "--work-dir", tmp_path / "w", "--device", "cpu")
    assert code == 0, err
    import csv

    rows = list(csv.DictReader(open(lb / "results.csv")))
    assert sorted(int(r["split"]) for r in rows) == [1, 2, 3, 4, 5]
    run = json.loads(next((lb / "runs").glob("*.json")).read_text())
    assert run["released_weights"]["archive_member"].startswith(f"{RELEASE}_train_")
    code, out, err = run_cli("report", "--leaderboard", lb, "--out", tmp_path / "report")
    assert code == 0, err
    table = next((tmp_path / "report").rglob("table2*.md")).read_text()
    line, = [ln for ln in table.splitlines() if ln.startswith("| amnet")]
    assert "authors' weights" in table and "0.677" in line


def _NoProgress():
    """A progress display that shows nothing (rich's own, disabled)."""
    from rich.progress import Progress

    return Progress(disable=True)


@pytest.mark.parametrize("bn_train", [True, False])
def test_frozen_batchnorm_trains_only_when_the_stage_says_so(tmp_path, bn_train):
    """Stage(frozen_bn_train=True), as AMNet's official model.train(): the frozen part's
    weights stay fixed but its BatchNorm normalises with batch statistics and its running
    statistics move; without it they stay exactly as loaded. drop_last: 10 training images
    in batches of 4 make 2 steps per epoch, not 3."""
    import torch.nn as nn

    from membench.engine.device import Device
    from membench.engine.stage import train_stage
    from membench.scale.bench import make_jpegs
    from membench.spec import Preprocess, Sample, Stage

    paths = make_jpegs(tmp_path / "img", n=13, size=(40, 36))
    samples = tuple(Sample(p.name, p, i / 13) for i, p in enumerate(paths))
    torch.manual_seed(0)
    model = nn.Module()
    model.features = nn.Sequential(nn.Conv2d(3, 4, 3), nn.BatchNorm2d(4), nn.AdaptiveAvgPool2d(1), nn.Flatten())
    model.head = nn.Linear(4, 1)
    model.forward = lambda x: model.head(model.features(x)).squeeze(1)
    before = {k: v.clone() for k, v in model.features.state_dict().items()}
    steps = []
    model.head.register_forward_hook(lambda m, a, o: steps.append(len(o)) if m.training else None)
    stage = Stage("train", epochs=1, batch_size=4, lr=1e-2, frozen=("features",), frozen_bn_train=bn_train,
                  drop_last=True)
    train_stage(model, stage, samples[:10], samples[10:], Preprocess(size=(24, 24), train="none"), Device("cpu"),
                tmp_path / "stage", seed=1, patience=99, resume=False, progress=_NoProgress())
    after = model.features.state_dict()
    assert steps == [4, 4]  # drop_last: the incomplete batch of 2 is dropped
    assert torch.equal(after["0.weight"], before["0.weight"]) and torch.equal(after["1.weight"], before["1.weight"])
    moved = not torch.equal(after["1.running_mean"], before["1.running_mean"])
    assert moved == bn_train


def test_predict_scores_with_an_official_weights_file_or_the_installed_release(tmp_path, states, small_demo,
                                                                               run_cli):
    """An official weights_<epoch>.pkl given as --model-option weights= is a trained AMNet: no
    warning about untrained weights. Once the release is installed, predict uses it without
    --checkpoint (split 1's checkpoint) and says so."""
    import csv

    from membench.engine.device import resolve_device
    from membench.engine.inference import predict
    from membench.spec import BuildContext, Sample
    from membench_plugins.models.amnet import _official_keys

    images = sorted((small_demo / "images").iterdir())[:3]
    pkl = tmp_path / "weights_35.pkl"
    pkl.write_bytes(legacy_bytes(states[1]))
    code, out, err = run_cli("predict", "--model", "amnet", "--model-option", f"weights={pkl}", *images)
    assert code == 0, err
    assert "warning" not in err and "untrained" not in err, err
    scores = {r["image"]: float(r["score"]) for r in csv.DictReader(out.splitlines())}
    spec = registry.get_model("amnet")
    model = spec.builder()(BuildContext(pretrained=False))
    model.load_state_dict(_official_keys(states[1]))
    by_hand = predict(model, [Sample(str(p), p, 0.0) for p in images], spec.preprocess, resolve_device("cpu"),
                      batch_size=8)
    assert [scores[str(p)] for p in images] == pytest.approx(list(by_hand), abs=1e-5)

    assert run_cli("weights", "import", "amnet", write_archive(tmp_path / f"{RELEASE}.zip",
                                                               {1: {35: states[1]}, 2: {7: states[2]}}))[0] == 0
    code, out, err = run_cli("predict", "--model", "amnet", *images)
    assert code == 0, err
    assert f"scoring with authors' weights ({RELEASE}), the checkpoint of split 1" in err
    assert "untrained" not in err
    again = {r["image"]: float(r["score"]) for r in csv.DictReader(out.splitlines())}
    assert again == pytest.approx(scores, abs=1e-5)
