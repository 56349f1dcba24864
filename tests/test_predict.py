"""`membench predict` as a user meets it: a checkpoint needs no ImageNet weights, another
model's checkpoint is named, directories and bad images get predict's own advice."""

from __future__ import annotations

import csv
import io
import shutil

import pytest


@pytest.fixture
def tiny_weights(tiny_plugin, tmp_path):
    import torch

    from membench import BuildContext
    from tiny_plugin import build_tiny

    torch.manual_seed(0)
    return build_tiny(BuildContext()).state_dict()


@pytest.fixture
def photos(demo_root, tmp_path):
    d = tmp_path / "photos"
    (d / "sub").mkdir(parents=True)
    names = sorted(p.name for p in (demo_root / "images").iterdir())[:3]
    shutil.copy(demo_root / "images" / names[0], d / names[0])
    shutil.copy(demo_root / "images" / names[1], d / "sub" / names[1])
    shutil.copy(demo_root / "images" / names[2], d / ".hidden.jpg")
    (d / "notes.txt").write_text("not an image")
    return d


def _scores(out):
    return {r["image"]: float(r["score"]) for r in csv.DictReader(io.StringIO(out))}


def test_checkpoint_needs_no_imagenet_weights(demo_root, tmp_path, run_cli, monkeypatch):
    import torch

    from membench import registry
    from membench.spec import BuildContext

    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "empty-torch-home"))  # no weights on this machine
    torch.manual_seed(0)
    model = registry.get_model("resnet50-lamem").builder()(BuildContext(pretrained=False))
    torch.save({"model": model.state_dict()}, tmp_path / "best.pt")
    image = sorted((demo_root / "images").iterdir())[0]
    code, out, err = run_cli("predict", "--model", "resnet50-lamem", "--checkpoint", tmp_path / "best.pt", image)
    assert code == 0, err
    assert list(_scores(out)) == [str(image)]


def test_without_weights_predict_points_to_trained_weights_never_to_random_ones(demo_root, tmp_path, run_cli,
                                                                               monkeypatch):
    """Random weights (`--pretrained none`) are no way to score photos: a model whose weights
    are not here is one line saying which trained weights would do."""
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "empty-torch-home"))  # no weights on this machine
    image = sorted((demo_root / "images").iterdir())[0]
    for model, way in (("resnet50-lamem", "--checkpoint FILE"), ("amnet", "membench weights fetch amnet"),
                       ("squalli", "--model-option weights=FILE")):
        code, out, err = run_cli("predict", "--model", model, image)
        assert code == 2 and not out and len(err.strip().splitlines()) == 1, err
        assert "--pretrained none" not in err and "--checkpoint FILE" in err and way in err, err


def test_a_checkpoint_in_another_models_job_names_that_model(tiny_weights, demo_root, tmp_path, run_cli):
    import torch

    stage = tmp_path / "runs" / "tiny-cnn__demo__smoke__s0__0123456789" / "split1" / "stage1"
    stage.mkdir(parents=True)
    torch.save({"model": tiny_weights}, stage / "best.pt")
    image = sorted((demo_root / "images").iterdir())[0]
    code, out, err = run_cli("predict", "--model", "resnet50-lamem", "--pretrained", "none",
                             "--checkpoint", stage / "best.pt", image)
    assert code == 2 and out == "" and err.count("\n") == 1, err
    assert "belongs to model 'tiny-cnn', not 'resnet50-lamem': use --model tiny-cnn" in err


def test_a_checkpoint_recording_its_model_names_it(tiny_weights, demo_root, tmp_path, run_cli):
    import torch

    torch.save({"model": tiny_weights, "model_name": "tiny-chain"}, tmp_path / "w.pt")
    image = sorted((demo_root / "images").iterdir())[0]
    code, _, err = run_cli("predict", "--model", "resnet50-lamem", "--checkpoint", tmp_path / "w.pt", image)
    assert code == 2 and "belongs to model 'tiny-chain'" in err and "Traceback" not in err


def test_a_bare_state_dict_is_matched_against_the_registered_models(tiny_weights, demo_root, tmp_path, run_cli):
    import torch

    torch.save(tiny_weights, tmp_path / "w.pt")
    image = sorted((demo_root / "images").iterdir())[0]
    code, _, err = run_cli("predict", "--model", "tiny-cnn", "--model-option", "width=16",
                           "--checkpoint", tmp_path / "w.pt", image)
    assert code == 2 and "fits model 'tiny-cnn' with its default options, not with the --model-option" in err
    assert err.count("\n") == 1
    torch.save({"w": torch.zeros(3)}, tmp_path / "other.pt")
    code, _, err = run_cli("predict", "--model", "tiny-cnn", "--checkpoint", tmp_path / "other.pt", image)
    assert code == 2 and "does not fit model 'tiny-cnn' (" in err and "missing" in err


def test_a_directory_is_refused_without_recursive_and_scored_with_it(tiny_weights, photos, tmp_path, run_cli):
    import torch

    torch.save(tiny_weights, tmp_path / "w.pt")
    code, _, err = run_cli("predict", "--model", "tiny-cnn", "--checkpoint", tmp_path / "w.pt", photos)
    assert code == 2 and "is a directory" in err and "--recursive" in err and "split files" not in err
    code, out, err = run_cli("predict", "--model", "tiny-cnn", "--checkpoint", tmp_path / "w.pt", "-r", photos)
    assert code == 0, err
    assert sorted(_scores(out)) == sorted(str(p) for p in photos.rglob("*.jpg") if not p.name.startswith("."))


def test_bad_images_get_predicts_own_advice_and_skip_works(tiny_weights, photos, tmp_path, run_cli):
    import torch

    torch.save(tiny_weights, tmp_path / "w.pt")
    good = next(photos.glob("*.jpg"))
    broken = photos / "broken.jpg"
    broken.write_bytes(good.read_bytes()[:200])
    missing = photos / "missing.jpg"
    args = ("predict", "--model", "tiny-cnn", "--checkpoint", tmp_path / "w.pt")
    code, _, err = run_cli(*args, good, missing)
    assert code == 2 and "image not found" in err and "split files" not in err
    assert "use --on-bad-image skip to score the other images" in err
    code, out, err = run_cli(*args, "--on-bad-image", "skip", good, broken, missing)
    assert code == 0, err
    assert list(_scores(out)) == [str(good)]
    assert "skipping 2 missing or unreadable image(s)" in err
    code, _, err = run_cli(*args, "--on-bad-image", "skip", missing)
    assert code == 2 and "no image left to score" in err


def test_run_train_none_with_another_models_checkpoint_names_it(tiny_weights, demo_root, tmp_path, run_cli):
    import torch

    torch.save({"model": tiny_weights, "model_name": "tiny-cnn"}, tmp_path / "w.pt")
    code, _, err = run_cli("run", "--model", "resnet50-lamem", "--train", "none", "--checkpoint", tmp_path / "w.pt",
                           "--data", demo_root, "--splits", "1", "--preset", "smoke", "--pretrained", "none",
                           "--device", "cpu", "--out", tmp_path / "lb", "--work-dir", tmp_path / "work")
    assert code == 2 and "belongs to model 'tiny-cnn', not 'resnet50-lamem'" in err and "Traceback" not in err
    assert not (tmp_path / "lb" / "results.csv").exists()


def test_predict_with_a_frugal_checkpoint_matches_the_runs_own_predictions(tiny_plugin, demo_root, tmp_path, run_cli):
    """A chained model's stage-2 best.pt holds only its trained part; predict rebuilds the
    frozen part from the stage-1 checkpoint it names and scores as the run did."""
    code, _, err = run_cli("run", "--model", "tiny-chain", "--data", demo_root, "--splits", "1", "--pretrained", "none",
                           "--device", "cpu", "--out", tmp_path / "lb", "--work-dir", tmp_path / "work")
    assert code == 0, err
    (best,) = (tmp_path / "work").glob("tiny-chain__*/split1/stage2/best.pt")
    import torch

    assert torch.load(best, weights_only=False).get("frozen"), "expected a frugal checkpoint"
    (preds,) = (tmp_path / "lb" / "predictions").glob("tiny-chain*/split1.csv")
    rows = list(csv.DictReader(open(preds)))[:3]
    images = [demo_root / "images" / r["image"] for r in rows]
    code, out, err = run_cli("predict", "--model", "tiny-chain", "--checkpoint", best, "--device", "cpu", *images)
    assert code == 0, err
    got = _scores(out)
    for r, image in zip(rows, images):
        assert got[str(image)] == pytest.approx(float(r["pred"]), abs=1e-5)
    code, _, err = run_cli("predict", "--model", "tiny-cnn", "--checkpoint", best, images[0])
    assert code == 2 and "belongs to model 'tiny-chain', not 'tiny-cnn'" in err
    # copied out of its job folder, the checkpoint still says whose it is
    assert torch.load(best, weights_only=False)["model_name"] == "tiny-chain"
    shutil.copy(best, tmp_path / "copied.pt")
    code, _, err = run_cli("predict", "--model", "tiny-cnn", "--checkpoint", tmp_path / "copied.pt", images[0])
    assert code == 2 and "belongs to model 'tiny-chain', not 'tiny-cnn'" in err
