"""Nothing membench loads can run code: a pickle whose __reduce__ would call os.system (to
create a marker file) is refused on every entry point that reads a weights or checkpoint
file, in one line naming the file, and the marker never appears. Damaged weights (empty,
NaN/inf, integer tensors where the model has floats) are refused the same way."""

from __future__ import annotations

import io
import os
import re
import shlex
import zipfile
from pathlib import Path

import pytest
import torch

from membench.errors import MembenchError

ROOT = Path(__file__).resolve().parents[1]


class Hostile:
    """Unpickled by a plain pickle loader, this runs `touch MARKER` through os.system."""

    def __init__(self, marker: Path):
        self.marker = str(marker)

    def __reduce__(self):
        return os.system, (f"touch {shlex.quote(self.marker)}",)


@pytest.fixture
def marker(tmp_path):
    return tmp_path / "pwned"


def hostile_file(path: Path, marker: Path, entry: str = "model", legacy: bool = False, **extra) -> Path:
    """A membench-shaped checkpoint whose `entry` is a Hostile object."""
    path.parent.mkdir(parents=True, exist_ok=True)
    torch.save({**extra, entry: {"weight": Hostile(marker)}}, path, _use_new_zipfile_serialization=not legacy)
    return path


def refused(result, path: Path, marker: Path) -> None:
    """Exit 2, the last line (a run prints its progress before) the only error, naming the
    file and the global it refused; the marker not created."""
    code, out, err = result
    assert not marker.exists(), "the pickle ran code"
    assert code == 2, err
    last = err.strip().splitlines()[-1]
    assert err.count("membench: error: ") == 1 and "Traceback" not in err, err
    assert last.startswith(f"membench: error: {path}: refused: it asks for posix.system"), err


def test_the_marker_trick_works_with_a_plain_pickle_loader(tmp_path, marker):
    """The hostile file does run code when unpickled unsafely: the tests below mean something."""
    path = hostile_file(tmp_path / "evil.pt", marker)
    torch.load(path, weights_only=False)
    assert marker.exists()


# ---- trained checkpoints -------------------------------------------------------------

@pytest.fixture
def image(demo_root):
    return sorted((demo_root / "images").iterdir())[0]


def test_predict_checkpoint(tiny_plugin, image, tmp_path, marker, run_cli):
    evil = hostile_file(tmp_path / "best.pt", marker, frozen={"prefixes": ["features"]})
    refused(run_cli("predict", "--model", "tiny-cnn", "--checkpoint", evil, image), evil, marker)


def test_run_train_none_checkpoint(tiny_plugin, demo_root, tmp_path, marker, run_cli):
    evil = hostile_file(tmp_path / "best.pt", marker)
    refused(run_cli("run", "--model", "tiny-cnn", "--train", "none", "--checkpoint", evil, "--data", demo_root,
                    "--splits", "1", "--preset", "smoke", "--pretrained", "none", "--device", "cpu",
                    "--out", tmp_path / "lb", "--work-dir", tmp_path / "work"), evil, marker)
    assert not (tmp_path / "lb" / "results.csv").exists()


def _smoke(demo_root, tmp_path, model="tiny-cnn", *extra):
    return ("run", "--model", model, "--data", demo_root, "--splits", "1", "--preset", "smoke", "--pretrained",
            "none", "--device", "cpu", "--out", tmp_path / "lb", "--work-dir", tmp_path / "work", *extra)


def test_evaluate_from_a_run_whose_checkpoint_was_replaced(tiny_plugin, demo_root, tmp_path, marker, run_cli):
    code, _, err = run_cli(*_smoke(demo_root, tmp_path, "tiny-cnn", "--keep-checkpoints"))
    assert code == 0, err
    (best,) = (tmp_path / "work").glob("tiny-cnn__*/split1/stage1/best.pt")
    hostile_file(best, marker)
    refused(run_cli("evaluate", "--from-run", best.parent.parent.parent, "--data", demo_root, "--splits", "1",
                    "--out", tmp_path / "lb", "--work-dir", tmp_path / "work"), best, marker)


def test_resume_from_a_replaced_last_pt(tiny_plugin, demo_root, tmp_path, marker, run_cli, monkeypatch):
    monkeypatch.setenv("MEMBENCH_TEST_KILL_AT", "step:stage1:1:2")  # a Ctrl-C: last.pt saved mid-epoch
    monkeypatch.setenv("MEMBENCH_TEST_KILL_SIGNAL", "INT")
    code, _, err = run_cli(*_smoke(demo_root, tmp_path))
    assert code == 130, err
    monkeypatch.delenv("MEMBENCH_TEST_KILL_AT")
    (last,) = (tmp_path / "work").glob("tiny-cnn__*/split1/stage1/last.pt")
    hostile_file(last, marker, epoch=0)
    refused(run_cli(*_smoke(demo_root, tmp_path), "--resume"), last, marker)


def test_a_chained_stage_with_a_replaced_upstream_best_pt(tiny_plugin, demo_root, tmp_path, marker, run_cli):
    code, _, err = run_cli(*_smoke(demo_root, tmp_path, "tiny-cnn", "--keep-checkpoints"))
    assert code == 0, err
    (best,) = (tmp_path / "work").glob("tiny-cnn__*/split1/stage1/best.pt")
    hostile_file(best, marker)
    refused(run_cli(*_smoke(demo_root, tmp_path, "tiny-chain")), best, marker)


# ---- weights files ---------------------------------------------------------------------

@pytest.mark.parametrize("model", ["memnet", "amnet", "timm/resnet18"])
def test_model_option_weights(model, image, tmp_path, marker, run_cli):
    evil = hostile_file(tmp_path / "w.pth", marker)
    refused(run_cli("predict", "--model", model, "--model-option", f"weights={evil}", image), evil, marker)


def test_released_weights_import_amnet(tmp_path, marker, run_cli):
    buf = io.BytesIO()
    torch.save({"model": {"w": Hostile(marker)}}, buf, _use_new_zipfile_serialization=False)  # the .pkl format
    from membench_plugins.models.amnet import RELEASE_NAME

    archive = tmp_path / f"{RELEASE_NAME}.zip"
    with zipfile.ZipFile(archive, "w") as z:
        z.writestr(f"{RELEASE_NAME}_train_1/weights_10.pkl", buf.getvalue())
    code, out, err = run_cli("weights", "import", "amnet", archive)
    assert not marker.exists()
    assert code == 2 and err.count("\n") == 1 and "weights_10.pkl" in err and "posix.system" in err, err


def test_released_weights_import_memnet_npy_mean(tmp_path, marker, run_cli):
    """Caffe's mean image as .npy: an object array (a pickle inside) is refused."""
    import numpy as np
    from test_memnet_caffe import layer, memnet_blobs, net

    layers = [layer(name, "Convolution" if i < 5 else "InnerProduct", [w, b])
              for i, (name, w, b) in enumerate(memnet_blobs())]
    (tmp_path / "memnet.caffemodel").write_bytes(net(layers))
    arr = np.empty(1, dtype=object)
    arr[0] = Hostile(marker)
    np.save(tmp_path / "mean.npy", arr, allow_pickle=True)
    code, out, err = run_cli("weights", "import", "memnet", tmp_path)
    assert not marker.exists()
    assert code == 2 and err.count("\n") == 1 and "mean.npy" in err, err


@pytest.mark.parametrize("legacy", [False, True], ids=["zip", "legacy"])
def test_captioner_import(legacy, tmp_path, marker, run_cli):
    import json

    from membench_plugins.captioner import sat

    evil = tmp_path / "BEST_checkpoint.pth.tar"
    torch.save({"encoder": Hostile(marker), "decoder": {}}, evil, _use_new_zipfile_serialization=not legacy)
    (tmp_path / "wm.json").write_text(json.dumps(sat.default_word_map(12)))
    refused(run_cli("captioner", "import", evil, "--word-map", tmp_path / "wm.json", "--out", tmp_path / "c"),
            evil, marker)
    assert not (tmp_path / "c").exists()


def test_captioner_training_state(tmp_path, marker, run_cli, monkeypatch):
    from test_captioner import _tiny_coco, _train_args

    monkeypatch.setenv("MEMBENCH_HOME", str(tmp_path / "home"))
    _tiny_coco(tmp_path / "coco")
    state = hostile_file(tmp_path / "home" / "captioner" / "training" / "state.pt", marker)
    refused(run_cli(*_train_args(tmp_path), "--epochs", "1", "--resume"), state, marker)


def test_feature_store_entry_is_recomputed_not_run(tmp_path, marker):
    import numpy as np
    from test_feature_store import CPU, PRE, make_jpegs, model, store_backed

    from membench.data.feature_store import FeatureStore
    from membench.engine.inference import predict
    from membench.spec import Sample

    images = tuple(Sample(p.name, p, 0.5) for p in make_jpegs(tmp_path / "img", n=9, size=(48, 40)))
    store = FeatureStore(tmp_path / "fs")
    expected = predict(store_backed(model(), store), images, PRE, CPU, batch_size=4)
    victim = sorted((tmp_path / "fs").rglob("*.pt"))[0]
    torch.save([Hostile(marker)], victim)
    again = FeatureStore(tmp_path / "fs")
    assert np.array_equal(predict(store_backed(model(), again), images, PRE, CPU, batch_size=4), expected)
    assert not marker.exists()
    assert (again.hits, again.misses) == (8, 1)


# ---- damaged weights -----------------------------------------------------------------

@pytest.fixture
def tiny_state(tiny_plugin):
    from membench import BuildContext
    from tiny_plugin import build_tiny

    torch.manual_seed(0)
    return build_tiny(BuildContext()).state_dict()


def test_an_empty_checkpoint_is_one_line(tiny_plugin, image, tmp_path, run_cli):
    empty = tmp_path / "empty.pt"
    empty.write_bytes(b"")
    code, out, err = run_cli("predict", "--model", "tiny-cnn", "--checkpoint", empty, image)
    assert code == 2 and out == "" and err.count("\n") == 1 and "Traceback" not in err, err
    assert str(empty) in err and "empty" in err


@pytest.mark.parametrize("bad", [float("nan"), float("inf")])
def test_non_finite_weights_are_refused(bad, tiny_state, image, tmp_path, run_cli):
    state = dict(tiny_state)
    state["head.weight"] = state["head.weight"].clone()
    state["head.weight"][0, 1] = bad
    torch.save({"model": state}, tmp_path / "w.pt")
    code, out, err = run_cli("predict", "--model", "tiny-cnn", "--checkpoint", tmp_path / "w.pt", image)
    assert code == 2 and out == "" and err.count("\n") == 1, err
    assert str(tmp_path / "w.pt") in err and "head.weight" in err and str(bad) in err


def test_integer_weights_are_refused(tiny_state, image, tmp_path, run_cli):
    state = dict(tiny_state)
    state["head.weight"] = (state["head.weight"] * 100).to(torch.int8)
    torch.save(state, tmp_path / "w.pt")
    code, out, err = run_cli("predict", "--model", "tiny-cnn", "--checkpoint", tmp_path / "w.pt", image)
    assert code == 2 and out == "" and err.count("\n") == 1, err
    assert "head.weight" in err and "int8" in err and "floating" in err


def test_predict_never_prints_nan_scores(tiny_plugin, image, tmp_path, run_cli, monkeypatch):
    """Finite weights can still give NaN (an overflow): refused, not printed."""
    from membench.engine import inference

    real = inference.predict
    monkeypatch.setattr(inference, "predict", lambda *a, **k: real(*a, **k) * float("nan"))
    code, out, err = run_cli("predict", "--model", "tiny-cnn", "--pretrained", "none", image)
    assert code == 2 and "nan" not in out and err.strip().splitlines()[-1].startswith("membench: error: "), err
    assert "not a number" in err and str(image) in err


# ---- one loader ------------------------------------------------------------------------

def test_only_the_safe_loader_unpickles():
    """Every read of a pickle-based file goes through membench/weights/safe_load.py."""
    allowed = ROOT / "membench" / "weights" / "safe_load.py"
    pattern = re.compile(r"torch\.load\(|weights_only\s*=\s*False|allow_pickle\s*=\s*True|\bimport pickle\b"
                         r"|\bpickle\.(load|Unpickler)|\bnp\.load\(|numpy\.load\(|\bdill\b|\bjoblib\b")
    offenders = [f"{p.relative_to(ROOT)}:{i}" for top in ("membench", "plugins", "scripts")
                 for p in sorted((ROOT / top).rglob("*.py")) if p != allowed
                 for i, line in enumerate(p.read_text().splitlines(), 1) if pattern.search(line)]
    assert offenders == []


@pytest.mark.parametrize("legacy", [False, True], ids=["zip", "pre-1.6"])
def test_the_allow_list_admits_legacy_classes_but_not_code(legacy, tmp_path, marker):
    """Files before PyTorch 1.6 record module classes in a way torch's weights-only
    unpickler cannot read: with an allow-list they go through a restricted unpickler."""
    from membench.weights import safe_load

    def save(obj, name):
        torch.save(obj, tmp_path / name, _use_new_zipfile_serialization=not legacy)
        return tmp_path / name

    plain = save({"ok": torch.ones(2), "n": 3, "s": "x", "f": float("-inf")}, "plain.pt")
    assert safe_load.load(plain)["n"] == 3
    module = save({"m": torch.nn.Linear(2, 1)}, "module.pt")
    with pytest.raises(MembenchError, match="refused: it asks for torch.nn.modules.linear.Linear"):
        safe_load.load(module)
    loaded = safe_load.load(module, allow=[torch.nn.Linear])["m"]
    assert isinstance(loaded, torch.nn.Linear) and loaded.weight.shape == (1, 2)
    both = save({"m": torch.nn.Linear(2, 1), "x": Hostile(marker)}, "both.pt")
    with pytest.raises(MembenchError, match="refused: it asks for posix.system"):
        safe_load.load(both, allow=[torch.nn.Linear])
    assert not marker.exists()
