"""The lnsim and csv dataset plugins: scores, human consistency, seeded splits, bad inputs."""

from __future__ import annotations

import csv
import importlib.util
from pathlib import Path

import numpy as np
import pytest
import scipy.io
from scipy.stats import spearmanr

from membench import ModelSpec, Preprocess, Stage, hookimpl, plugins, registry
from membench.errors import MembenchError

N_ROWS, N_IMAGES = 25, 40


@pytest.fixture(autouse=True)
def membench_home(tmp_path, monkeypatch):
    home = tmp_path / "home"
    monkeypatch.setenv("MEMBENCH_HOME", str(home))
    return home


def open_dataset(_dataset, root, **options):
    return registry.get_dataset(_dataset).opener()(root, options)


def write_jpeg(path: Path, seed: int, size=(48, 40)):
    from PIL import Image

    rng = np.random.RandomState(seed)
    Image.fromarray(rng.randint(0, 255, size=(size[1], size[0], 3)).astype("uint8")).save(path, quality=85)


def make_lnsim(root: Path, n_rows=N_ROWS, n_images=N_IMAGES, seed=0):
    """An LNSIM-release-shaped tree: Image_data/0001.jpg.. and Random_splits/*.mat."""
    rng = np.random.RandomState(seed)
    (root / "Image_data").mkdir(parents=True)
    (root / "Random_splits").mkdir()
    for i in range(n_images):
        write_jpeg(root / "Image_data" / f"{i + 1:04d}.jpg", seed=i)
    truth = rng.uniform(0.3, 0.9, size=n_images)
    hrs1 = np.clip(truth + rng.normal(0, 0.08, size=(n_rows, n_images)), 0, 1)
    hrs2 = np.clip(truth + rng.normal(0, 0.08, size=(n_rows, n_images)), 0, 1)
    save_mat(root, hrs1, hrs2)
    return hrs1, hrs2


def save_mat(root, hrs1, hrs2):
    scipy.io.savemat(root / "Random_splits" / "subject_hrs1.mat", {"subject_hrs1": hrs1})
    scipy.io.savemat(root / "Random_splits" / "subject_hrs2.mat", {"subject_hrs2": hrs2})


def all_scores(ds, k=1):
    split = ds.load_split(k)
    return {s.name: s.score for part in split.parts().values() for s in part}


# --- lnsim -----------------------------------------------------------------------------

def test_lnsim_scores_and_human_consistency(tmp_path):
    hrs1, hrs2 = make_lnsim(tmp_path / "lnsim")
    ds = open_dataset("lnsim", tmp_path / "lnsim")
    assert ds.name == "lnsim" and ds.problems == []
    assert ds.splits == (1, 2, 3, 4, 5)
    expected = ((hrs1 + hrs2) / 2).mean(axis=0)
    for k in ds.splits:  # every split carries the same per-image score
        scores = all_scores(ds, k)
        assert len(scores) == N_IMAGES
        for i in range(N_IMAGES):
            assert scores[f"{i + 1:04d}.jpg"] == pytest.approx(expected[i], abs=1e-12)
    reference = np.mean([spearmanr(hrs1[r], hrs2[r]).statistic for r in range(N_ROWS)])
    assert ds.human_consistency == pytest.approx(reference, abs=1e-12)
    assert 0.3 < ds.human_consistency < 1.0  # the synthetic halves share a true score


def test_lnsim_samples_point_at_the_users_images(tmp_path, membench_home):
    make_lnsim(tmp_path / "lnsim")
    before = sorted(p.name for p in (tmp_path / "lnsim").rglob("*"))
    ds = open_dataset("lnsim", tmp_path / "lnsim")
    sample = ds.load_split(1).test[0]
    assert sample.path == tmp_path / "lnsim" / "Image_data" / sample.name
    # the split files live under MEMBENCH_HOME, the user's directory is untouched
    assert ds.root.parent == membench_home / "datasets" and ds.root.name.startswith("lnsim-")
    assert (ds.root / "splits" / "test_5.txt").is_file()
    assert (ds.root / "images" / sample.name).resolve() == sample.path.resolve()
    assert sorted(p.name for p in (tmp_path / "lnsim").rglob("*")) == before


def test_lnsim_split_sizes_disjoint_and_deterministic(tmp_path, monkeypatch):
    make_lnsim(tmp_path / "lnsim")
    ds = open_dataset("lnsim", tmp_path / "lnsim")
    tests = []
    for k in ds.splits:
        split = ds.load_split(k)
        assert (len(split.train), len(split.val), len(split.test)) == (28, 4, 8)  # 70/10/20 of 40
        names = [s.name for part in split.parts().values() for s in part]
        assert len(set(names)) == N_IMAGES
        tests.append({s.name for s in split.test})
    assert len({frozenset(t) for t in tests}) == 5  # independent random splits

    files = {p.name: p.read_text() for p in (ds.root / "splits").iterdir()}
    monkeypatch.setenv("MEMBENCH_HOME", str(tmp_path / "other-home"))
    again = open_dataset("lnsim", tmp_path / "lnsim")
    assert again.root != ds.root.parent
    assert {p.name: p.read_text() for p in (again.root / "splits").iterdir()} == files
    assert again.fingerprint() == ds.fingerprint()

    reseeded = open_dataset("lnsim", tmp_path / "lnsim", seed="7")
    assert reseeded.root != again.root
    assert {s.name for s in reseeded.load_split(1).test} != tests[0]
    assert reseeded.fingerprint() != ds.fingerprint()


def test_lnsim_full_size_split_sizes(tmp_path):
    from membench_plugins.datasets.lnsim import seeded_split

    names = [f"{i:04d}.jpg" for i in range(1, 2633)]
    parts = seeded_split(names, seed=0, k=1)
    assert [len(parts[p]) for p in ("train", "val", "test")] == [1842, 263, 527]


def test_lnsim_missing_and_extra_images(tmp_path):
    from membench.data.images import check_images

    make_lnsim(tmp_path / "lnsim")
    images = tmp_path / "lnsim" / "Image_data"
    (images / "0003.jpg").unlink()
    write_jpeg(images / "0041.jpg", seed=41)
    ds = open_dataset("lnsim", tmp_path / "lnsim")
    assert ds.problems == [f"{images}: 1 image(s) without scores are ignored (e.g. 0041.jpg)"]
    split = ds.load_split(1)
    check = check_images([s for part in split.parts().values() for s in part])
    assert check.checked == N_IMAGES and check.missing == [str(images / "0003.jpg")]
    assert ds.fingerprint()  # a dangling image link does not break fingerprinting


@pytest.mark.parametrize("breakage, message", [
    ("no-mat", "subject_hrs2.mat: missing"),
    ("nan", "subject_hrs1.mat: subject_hrs1 has NaN at row 3, column 5 (image 0005.jpg)"),
    ("range", "subject_hrs2.mat: subject_hrs2 has 1.5 (outside [0, 1]) at row 1, column 2"),
    ("shape", "subject_hrs2.mat: subject_hrs2 has shape (25, 39) but subject_hrs1 (25, 40)"),
    ("transposed", "subject_hrs1.mat: subject_hrs1 is 40 x 25 but Image_data/ holds 40 images"),
    ("variable", "subject_hrs1.mat: no variable 'subject_hrs1' (variables found: scores)"),
    ("garbage", "subject_hrs1.mat: cannot read MATLAB file"),
    ("1d", "subject_hrs1.mat: subject_hrs1 must be a 2-D numeric array"),
])
def test_lnsim_bad_inputs_name_the_file(tmp_path, breakage, message):
    root = tmp_path / "lnsim"
    hrs1, hrs2 = make_lnsim(root)
    mat1 = root / "Random_splits" / "subject_hrs1.mat"
    if breakage == "no-mat":
        (root / "Random_splits" / "subject_hrs2.mat").unlink()
    elif breakage == "nan":
        hrs1[2, 4] = np.nan
        save_mat(root, hrs1, hrs2)
    elif breakage == "range":
        hrs2[0, 1] = 1.5
        save_mat(root, hrs1, hrs2)
    elif breakage == "shape":
        save_mat(root, hrs1, hrs2[:, :-1])
    elif breakage == "transposed":
        hrs1 = np.clip(np.random.RandomState(1).rand(N_IMAGES, N_ROWS), 0, 1)
        save_mat(root, hrs1, hrs1.copy())
    elif breakage == "variable":
        scipy.io.savemat(mat1, {"scores": hrs1})
    elif breakage == "garbage":
        mat1.write_bytes(b"this is not a MATLAB file at all" * 10)
    elif breakage == "1d":
        scipy.io.savemat(mat1, {"subject_hrs1": np.zeros((2, 2, 2))})
    with pytest.raises(MembenchError) as err:
        open_dataset("lnsim", root)
    assert message in str(err.value)
    assert err.value.path and err.value.path.endswith(".mat")


def test_lnsim_not_a_release_dir_and_unknown_option(tmp_path):
    (tmp_path / "empty").mkdir()
    with pytest.raises(MembenchError, match="missing Image_data/"):
        open_dataset("lnsim", tmp_path / "empty")
    make_lnsim(tmp_path / "lnsim")
    with pytest.raises(MembenchError, match="no option 'sed'; options: seed"):
        open_dataset("lnsim", tmp_path / "lnsim", sed="1")
    with pytest.raises(MembenchError, match="seed must be an integer"):
        open_dataset("lnsim", tmp_path / "lnsim", seed="x")


@pytest.mark.parametrize("dataset, data, key, message", [
    ("demo", "demo", "seed", "unknown dataset option 'seed': dataset 'demo' takes no options"),
    ("lamem", "DEMO", "name", "unknown dataset option 'name': dataset 'lamem' takes no options"),
    ("lnsim", "LNSIM", "sed", "unknown dataset option 'sed' for lnsim; did you mean seed? (known options: seed ("),
    ("csv", "CSV", "score-colum", "unknown dataset option 'score-colum' for csv; did you mean score_column?"),
])
def test_an_unknown_dataset_option_is_an_error_naming_the_known_ones(tmp_path, demo_root, run_cli, dataset, data,
                                                                     key, message):
    """lamem and demo read no options: one given used to be silently ignored."""
    if data == "LNSIM":
        make_lnsim(tmp_path / "lnsim")
    if data == "CSV":
        make_csv_dataset(tmp_path / "csv")
    data = {"DEMO": demo_root, "LNSIM": tmp_path / "lnsim", "CSV": tmp_path / "csv"}.get(data, data)
    code, out, err = run_cli("data", "check", "--data", data, "--dataset", dataset, "--dataset-option", f"{key}=1")
    assert code == 2 and message in err and len(err.strip().splitlines()) == 1, err
    code, _, err = run_cli("data", "check", "--data", data, "--dataset", dataset)
    assert code == 0, err


# --- csv -------------------------------------------------------------------------------

def make_csv_dataset(root: Path, n=30, header=("image", "score"), split=None, subdir=""):
    """n JPEGs and a scores.csv; scores i/(n+1) so every score is distinct and known."""
    (root / subdir).mkdir(parents=True, exist_ok=True)
    rows = []
    for i in range(n):
        rel = f"{subdir}/img {i}.jpg" if subdir else f"img{i:03d}.jpg"
        write_jpeg(root / rel, seed=100 + i)
        row = [rel, f"{(i + 1) / (n + 1):.6f}"]
        if split:
            row.append(split(i))
        rows.append(row)
    with open(root / "scores.csv", "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(list(header) + (["split"] if split else []))
        w.writerows(rows)
    return rows


def test_csv_seeded_splits(tmp_path):
    rows = make_csv_dataset(tmp_path / "data")
    ds = open_dataset("csv", tmp_path / "data")
    assert ds.name == "csv" and ds.splits == (1, 2, 3, 4, 5) and ds.human_consistency is None
    expected = {name: float(score) for name, score in rows}
    for k in ds.splits:
        split = ds.load_split(k)
        assert (len(split.train), len(split.val), len(split.test)) == (21, 3, 6)
        assert {s.name: s.score for part in split.parts().values() for s in part} == expected
        assert all(s.path == tmp_path / "data" / s.name for s in split.test)
    again = open_dataset("csv", tmp_path / "data")
    assert [s.name for s in again.load_split(2).test] == [s.name for s in ds.load_split(2).test]


def test_csv_split_column_custom_columns_and_subfolders(tmp_path):
    parts = lambda i: ("train", "val", "test")[i % 3] if i >= 3 else ("TRAIN", " Val", "test ")[i]
    make_csv_dataset(tmp_path / "data", n=12, header=("File", "Memorability"), split=parts,
                     subdir="pics/sub")
    ds = open_dataset("csv", tmp_path / "data", image_column="file", score_column="memorability",
                      name="memcat", human_consistency="0.78")
    assert ds.name == "csv-memcat" and ds.human_consistency == 0.78
    assert ds.splits == (1,)
    split = ds.load_split(1)
    assert [len(split.train), len(split.val), len(split.test)] == [4, 4, 4]
    first = split.train[0]
    assert first.name == "pics__sub__img_0.jpg"  # a plain name for the LaMem-style files
    assert first.path == tmp_path / "data" / "pics/sub/img 0.jpg"
    assert first.score == pytest.approx(1 / 13, abs=1e-6)


def test_csv_images_option_and_explicit_file(tmp_path):
    make_csv_dataset(tmp_path / "data" / "imgs")
    (tmp_path / "data" / "imgs" / "scores.csv").rename(tmp_path / "data" / "labels.csv")
    (tmp_path / "data" / "notes.csv").write_text("unrelated\n")
    with pytest.raises(MembenchError, match=r"2 \*\.csv files \(labels.csv, notes.csv\) in the data directory; name one"):
        open_dataset("csv", tmp_path / "data")
    ds = open_dataset("csv", tmp_path / "data", csv="labels.csv", images="imgs")
    assert ds.problems == []
    assert ds.load_split(1).test[0].path.parent == tmp_path / "data" / "imgs"


@pytest.mark.parametrize("body, line, message", [
    ("a.jpg,0.5\nb.jpg,high\n", 3, "score 'high' is not a number"),
    ("a.jpg,0.5\nb.jpg,1.2\n", 3, "score 1.2 is outside [0, 1]"),
    ("a.jpg,0.5\nb.jpg,nan\n", 3, "score nan is outside [0, 1]"),
    ("a.jpg,0.5\n\nb.jpg,0.4\na.jpg,0.3\n", 5, "image a.jpg listed twice (first on line 2)"),
    ("a.jpg,0.5\nb.jpg\n", 3, "expected 2 columns, got 1"),
    (",0.5\n", 2, "empty image name"),
])
def test_csv_bad_rows_name_file_and_line(tmp_path, body, line, message):
    (tmp_path / "d").mkdir()
    (tmp_path / "d" / "s.csv").write_text("image,score\n" + body)
    with pytest.raises(MembenchError) as err:
        open_dataset("csv", tmp_path / "d")
    assert str(err.value) == f"{tmp_path / 'd' / 's.csv'}:{line}: {message}"


def test_csv_bad_header_and_split_values(tmp_path):
    (tmp_path / "d").mkdir()
    path = tmp_path / "d" / "s.csv"
    path.write_text("file,score\na.jpg,0.5\n")
    with pytest.raises(MembenchError) as err:
        open_dataset("csv", tmp_path / "d")
    assert str(err.value) == (f"{path}:1: no column 'image' (columns: file, score); "
                              "name it with --dataset-option image_column=COLUMN")
    path.write_text("image,score,split\na.jpg,0.5,train\nb.jpg,0.5,testing\n")
    with pytest.raises(MembenchError, match=r"s.csv:3: split 'testing' must be one of train, val, test"):
        open_dataset("csv", tmp_path / "d")
    path.write_text("image,score,split\na.jpg,0.5,train\nb.jpg,0.5,train\nc.jpg,0.5,test\n")
    with pytest.raises(MembenchError, match="fewer than 2 images to val, test"):
        open_dataset("csv", tmp_path / "d")
    path.write_text("image,score\n" + "".join(f"{i}.jpg,0.5\n" for i in range(19)))
    with pytest.raises(MembenchError, match="19 scored images; seeded 70/10/20 splits need at least 20"):
        open_dataset("csv", tmp_path / "d")


@pytest.mark.parametrize("option, message", [
    ({"name": "my data"}, "dataset option name must be letters, digits"),
    ({"human_consistency": "high"}, "human_consistency must be a rank correlation in [-1, 1], got 'high'"),
    ({"human_consistency": "1.5"}, "human_consistency must be a rank correlation in [-1, 1], got '1.5'"),
    ({"images": "nowhere"}, "nowhere: images folder does not exist"),
    ({"csv": "other.csv"}, "other.csv: CSV file not found"),
    ({"score-column": "memo"}, "scores.csv:1: no column 'memo' (columns: image, score)"),
])
def test_csv_bad_options(tmp_path, option, message):
    make_csv_dataset(tmp_path / "data")
    with pytest.raises(MembenchError) as err:
        open_dataset("csv", tmp_path / "data", **option)
    assert message in str(err.value)


def test_csv_missing_image_named_by_the_image_check(tmp_path):
    from membench.data.images import check_images

    make_csv_dataset(tmp_path / "data")
    (tmp_path / "data" / "img004.jpg").unlink()
    ds = open_dataset("csv", tmp_path / "data")
    assert ds.problems == []
    split = ds.load_split(1)
    check = check_images([s for part in split.parts().values() for s in part])
    assert check.missing == [str(tmp_path / "data" / "img004.jpg")]


def test_unwritable_membench_home(tmp_path, monkeypatch):
    make_csv_dataset(tmp_path / "data")
    blocker = tmp_path / "file"
    blocker.write_text("")
    monkeypatch.setenv("MEMBENCH_HOME", str(blocker))
    with pytest.raises(MembenchError, match="set MEMBENCH_HOME to a writable directory"):
        open_dataset("csv", tmp_path / "data")


# --- the CLI on both datasets (once the lead's commands exist) ---------------------------

def _command(name):
    return importlib.util.find_spec(f"membench.commands.{name}") is not None


@pytest.mark.skipif(not _command("data"), reason="membench data not built yet")
def test_cli_data_check_lnsim(tmp_path, capsys):
    from membench.cli import main

    hrs1, hrs2 = make_lnsim(tmp_path / "lnsim")
    assert main(["data", "check", "--dataset", "lnsim", "--data", str(tmp_path / "lnsim")]) == 0
    consistency = np.mean([spearmanr(hrs1[r], hrs2[r]).statistic for r in range(N_ROWS)])
    out = capsys.readouterr().out
    assert f"{consistency:.3f}" in out and "no problems found" in out
    (tmp_path / "lnsim" / "Image_data" / "0007.jpg").write_bytes(b"\xff\xd8 truncated")
    assert main(["data", "check", "--dataset", "lnsim", "--data", str(tmp_path / "lnsim")]) == 1
    assert str(tmp_path / "lnsim" / "Image_data" / "0007.jpg") in capsys.readouterr().out


@pytest.mark.skipif(not _command("data"), reason="membench data not built yet")
def test_cli_data_check_csv_reports_bad_line(tmp_path, capsys):
    from membench.cli import main

    make_csv_dataset(tmp_path / "data")
    assert main(["data", "check", "--dataset", "csv", "--data", str(tmp_path / "data")]) == 0
    (tmp_path / "data" / "scores.csv").write_text("image,score\nimg000.jpg,2\n")
    assert main(["data", "check", "--dataset", "csv", "--data", str(tmp_path / "data")]) == 2
    assert "scores.csv:2: score 2 is outside [0, 1]" in capsys.readouterr().err


def build_tiny(ctx):
    import torch.nn as nn

    return nn.Sequential(nn.Conv2d(3, 4, 3, stride=4), nn.AdaptiveAvgPool2d(1), nn.Flatten(0),
                         nn.Unflatten(0, (-1, 4)), nn.Linear(4, 1), nn.Flatten(0))


class TinyModelPlugin:
    """A CPU-fast model, so the smoke runs test the datasets' plumbing, not ResNet50's speed."""

    @hookimpl
    def register_models(self, register):
        register(ModelSpec(name="tiny-test-cnn", build=build_tiny,
                           preprocess=Preprocess(size=(32, 32), train="none"),
                           recipe=(Stage(name="train", epochs=1, batch_size=8, lr=1e-3),)))


@pytest.fixture
def tiny_model():
    pm = plugins.load()
    plugin = TinyModelPlugin()
    pm.register(plugin, name="tiny-test-plugin")
    registry.clear_cache()
    yield "tiny-test-cnn"
    pm.unregister(plugin)
    registry.clear_cache()


def smoke_run(dataset, data, out, model):
    from membench.cli import main
    from membench.results.leaderboard import read_rows

    code = main(["run", "--model", model, "--dataset", dataset, "--data", str(data), "--splits", "1",
                 "--preset", "smoke", "--pretrained", "none", "--out", str(out)])
    assert code == 0
    rows = read_rows(out / "results.csv")
    assert [(r["model"], r["dataset"], r["split"]) for r in rows] == [(model, dataset, "1")]
    return rows[0]


@pytest.mark.skipif(not _command("run"), reason="membench run not built yet")
@pytest.mark.parametrize("dataset", ["csv", "lnsim"])
def test_cli_smoke_run(tmp_path, dataset, tiny_model):
    data = tmp_path / "data"
    make_csv_dataset(data) if dataset == "csv" else make_lnsim(data)
    row = smoke_run(dataset, data, tmp_path / "out", tiny_model)
    opened = open_dataset(dataset, data)
    assert row["data_fingerprint"] == opened.fingerprint()
    preds = (tmp_path / "out" / "predictions" / row["run_id"] / "split1.csv").read_text().splitlines()
    test = {s.name: s.score for s in opened.load_split(1).test}
    assert int(row["n_test"]) == len(preds) - 1 == min(16, len(test))  # smoke caps test at 16
    for line in preds[1:]:  # every prediction is for a test image, with that image's score
        name, score, _ = line.split(",")
        assert float(score) == pytest.approx(test[name], abs=1e-9)


@pytest.mark.slow
@pytest.mark.skipif(not _command("run"), reason="membench run not built yet")
@pytest.mark.parametrize("dataset", ["csv", "lnsim"])
def test_cli_smoke_run_resnet50(tmp_path, dataset):
    data = tmp_path / "data"
    make_csv_dataset(data) if dataset == "csv" else make_lnsim(data)
    smoke_run(dataset, data, tmp_path / "out", "resnet50-lamem")
