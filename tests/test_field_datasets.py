"""The memcat, things, figrim and sun plugins on generated replicas of each release's
files (tests/replicas.py): scores and splits as published, human consistency, notes, and
a malformed file as one line naming the file and the line (or entry); `membench datasets`."""

from __future__ import annotations

import csv
import shutil

import numpy as np
import pytest
import scipy.io
from PIL import Image
from scipy.stats import spearmanr

import replicas
from membench import registry
from membench.errors import MembenchError


def open_dataset(name, root, **options):
    return registry.get_dataset(name).opener()(root, options)


def scores_of(ds, k=1):
    return {s.name: s.score for part in ds.load_split(k).parts().values() for s in part}


def assert_seeded_splits(ds, n):
    assert ds.splits == (1, 2, 3, 4, 5)
    for k in ds.splits:
        split = ds.load_split(k)
        parts = [{s.name for s in p} for p in (split.train, split.val, split.test)]
        assert [len(p) for p in parts] == [round(0.7 * n), round(0.1 * n), n - round(0.7 * n) - round(0.1 * n)]
        assert not (parts[0] & parts[1] or parts[0] & parts[2] or parts[1] & parts[2])


# --- memcat ---------------------------------------------------------------------------------

def test_memcat_reads_the_release_in_its_archive_folder(tmp_path):
    truth = replicas.make_memcat(tmp_path / "memcat", n=30, wrap="MemCat")
    ds = open_dataset("memcat", tmp_path / "memcat")
    assert ds.name == "memcat" and ds.problems == [] and ds.notes == [] and ds.human_consistency is None
    assert_seeded_splits(ds, 30)
    for k in ds.splits:
        assert scores_of(ds, k) == pytest.approx(truth, abs=0)
    sample = ds.load_split(1).train[0]
    category, sub, image = sample.name.split("__")
    assert sample.path == tmp_path / "memcat" / "MemCat" / "MemCat_images" / "MemCat" / category / sub / image
    again = open_dataset("memcat", tmp_path / "memcat")
    assert [s.name for s in again.load_split(2).test] == [s.name for s in ds.load_split(2).test]
    other = open_dataset("memcat", tmp_path / "memcat", seed="3")
    assert {s.name for s in other.load_split(2).test} != {s.name for s in ds.load_split(2).test}


def test_memcat_options_and_negative_corrected_scores(tmp_path):
    root = tmp_path / "memcat"
    replicas.make_memcat(root, n=25)
    path = root / "MemCat_data" / "memcat_image_data.csv"
    rows = list(csv.reader(path.open()))
    rows[3][-1] = "-0.05"  # more false alarms than hits
    with path.open("w", newline="") as f:
        csv.writer(f).writerows(rows)
    ds = open_dataset("memcat", root, human_consistency="0.7")
    assert ds.human_consistency == 0.7
    name = f"{rows[3][2]}__{rows[3][3]}__{rows[3][1]}"
    assert scores_of(ds)[name] == 0.0 and "1 image(s) have a negative memorability_w_fa_correction" in ds.notes[0]
    wo = open_dataset("memcat", root, score="memorability_wo_fa_correction")
    assert scores_of(wo)[name] == pytest.approx(float(rows[3][7]))
    with pytest.raises(MembenchError, match="score must be one of"):
        open_dataset("memcat", root, score="H")
    with pytest.raises(MembenchError, match="has no option 'colour'"):
        open_dataset("memcat", root, colour="red")
    with pytest.raises(MembenchError, match="human_consistency must be a correlation"):
        open_dataset("memcat", root, human_consistency="high")


# --- things ---------------------------------------------------------------------------------

def test_things_reads_file_path_and_cr_and_counts_rows_without_a_score(tmp_path):
    truth = replicas.make_things(tmp_path / "things", n=30, missing_scores=3)
    ds = open_dataset("things", tmp_path / "things")
    assert_seeded_splits(ds, 30)
    assert scores_of(ds) == truth
    assert ds.notes == ["3 row(s) without a cr value are left out"]
    sample = ds.load_split(1).test[0]
    concept, image = sample.name.split("__")
    assert sample.path == tmp_path / "things" / "object_images" / concept / image


# --- figrim ---------------------------------------------------------------------------------

def test_figrim_hit_rates_of_each_experiment(tmp_path):
    root = tmp_path / "figrim"
    truth = replicas.make_figrim(root, n=32)
    ds = open_dataset("figrim", root)
    assert_seeded_splits(ds, 32)
    assert scores_of(ds) == pytest.approx(truth, abs=1e-15)
    amt2 = open_dataset("figrim", root, experiment="amt2")  # every 4th target was not in AMT 2
    assert amt2.notes == ["8 target(s) without amt2 repeats are left out"]
    assert len(scores_of(amt2)) == 24
    with pytest.raises(MembenchError, match="experiment must be amt1 or amt2"):
        open_dataset("figrim", root, experiment="amt3")


def test_figrim_images_in_one_folder(tmp_path):
    root = tmp_path / "figrim"
    truth = replicas.make_figrim(root, n=20)
    flat = tmp_path / "flat"
    flat.mkdir()
    for p in (root / "targets").rglob("*.jpg"):
        shutil.move(p, flat / p.name)
    shutil.rmtree(root / "targets")
    shutil.move(flat, root / "Targets")
    ds = open_dataset("figrim", root)
    assert sorted(scores_of(ds).values()) == pytest.approx(sorted(truth.values()))
    assert all(s.path.parent == root / "Targets" for s in ds.load_split(1).train)


# --- sun ------------------------------------------------------------------------------------

def test_sun_uses_the_published_splits_and_participant_halves(tmp_path):
    train, test, hrs1, hrs2, img = replicas.make_sun(tmp_path / "sun", n_images=40, n_splits=25)
    ds = open_dataset("sun", tmp_path / "sun")
    assert ds.splits == tuple(range(1, 26))
    for k in (1, 17, 25):
        split = ds.load_split(k)
        index = {s.name: int(s.name[:4]) for part in split.parts().values() for s in part}
        assert sorted(index[s.name] for s in split.train + split.val) == sorted(train[k - 1].astype(int))
        assert len(split.val) == 2 and len(split.train) == 18
        assert [index[s.name] for s in split.test] == [int(i) for i in test[k - 1]]
        for s in split.train + split.val:  # training scores from the first half, test from the other
            assert s.score == hrs1[k - 1, index[s.name] - 1]
        for s in split.test:
            assert s.score == hrs2[k - 1, index[s.name] - 1]
    expected = np.mean([spearmanr(hrs1[r], hrs2[r])[0] for r in range(25)])
    assert ds.human_consistency == pytest.approx(expected, abs=1e-12)
    one = ds.load_split(3).test[0]  # the PNG holds exactly the .mat's pixels
    assert np.array_equal(np.asarray(Image.open(one.path)), img[:, :, :, int(one.name[:4]) - 1])
    assert len(list(one.path.parent.iterdir())) == 40  # the texture images beyond the scored ones are not written


# --- malformed files: one line naming the file and the line or entry ------------------------

def _rewrite_csv(path, line, column, value):
    rows = list(csv.reader(path.open()))
    rows[line - 1][column] = value
    with path.open("w", newline="") as f:
        csv.writer(f).writerows(rows)


def break_memcat(root):
    replicas.make_memcat(root)
    path = root / "MemCat_data" / "memcat_image_data.csv"
    _rewrite_csv(path, 5, -1, "high")
    return path, ":5: memorability_w_fa_correction 'high' is not a number"


def break_memcat_header(root):
    replicas.make_memcat(root)
    path = root / "MemCat_data" / "memcat_image_data.csv"
    _rewrite_csv(path, 1, 2, "cat")
    return path, ":1: no column 'category'"


def break_things(root):
    replicas.make_things(root)
    path = root / "THINGS_Memorability_Scores.csv"
    _rewrite_csv(path, 7, 2, "1.5")
    return path, ":7: cr 1.5 is outside [-1, 1]"


def break_things_path(root):
    replicas.make_things(root)
    path = root / "THINGS_Memorability_Scores.csv"
    _rewrite_csv(path, 3, 1, "aardvark.jpg")
    return path, ":3: file_path 'aardvark.jpg' is not <folder>/<concept>/<image>"


def break_figrim(root):
    replicas.make_figrim(root, n=6)
    entries = [replicas.figrim_entry(f"sun_{i}.jpg", "castle", (3, 2, 0, 9), (1, 1, 1, 1)) for i in range(6)]
    entries[2] = replicas.figrim_entry("sun_2.jpg", "castle", (3.5, 2, 0, 9), None)
    replicas.save_figrim(root / "image_data_targets.mat", entries)
    return root / "image_data_targets.mat", ": image_data_targets(3) (sun_2.jpg): amt1.hits must be a count"


def break_sun(root):
    replicas.make_sun(root, n_images=40, n_splits=3)
    path = root / "Data" / "Random splits" / "image_test_indices.mat"
    test = scipy.io.loadmat(path)["image_test_indices"]
    test[1, 4] = 41
    scipy.io.savemat(path, {"image_test_indices": test})
    return path, ": row 2, column 5: 41 is not an image index (1 to 40)"


def break_sun_scores(root):
    train, test, hrs1, hrs2, _ = replicas.make_sun(root, n_images=40, n_splits=3)
    hrs2[0, int(test[0, 0]) - 1] = np.nan
    path = root / "Data" / "Random splits" / "subject_hrs2.mat"
    scipy.io.savemat(path, {"subject_hrs2": hrs2})
    return path, f": row 1, column {int(test[0, 0])} (image {int(test[0, 0]):04d}.png): hit rate nan is not in [0, 1]"


@pytest.mark.parametrize("dataset, breakage", [
    ("memcat", break_memcat), ("memcat", break_memcat_header), ("things", break_things),
    ("things", break_things_path), ("figrim", break_figrim), ("sun", break_sun), ("sun", break_sun_scores)])
def test_a_malformed_file_is_one_line_naming_it(tmp_path, run_cli, dataset, breakage):
    path, message = breakage(tmp_path / dataset)
    code, out, err = run_cli("data", "check", "--dataset", dataset, "--data", tmp_path / dataset)
    assert code == 2 and "Traceback" not in err
    assert err.strip().splitlines() == [err.strip()] and f"{path}{message}" in err


def test_no_release_here_names_the_missing_file(tmp_path, run_cli):
    (tmp_path / "empty").mkdir()
    for dataset, missing in (("memcat", "memcat_image_data.csv"), ("things", "THINGS_Memorability_Scores.csv"),
                             ("figrim", "image_data_targets.mat"), ("sun", "image_train_indices.mat")):
        code, _, err = run_cli("data", "check", "--dataset", dataset, "--data", tmp_path / "empty")
        assert code == 2 and missing in err and str(tmp_path / "empty") in err
        # no directory at all: the dataset's own hint, not LaMem's layout
        code, _, err = run_cli("data", "check", "--dataset", dataset, "--data", tmp_path / "nowhere")
        assert code == 2 and err.count("\n") == 1 and str(tmp_path / "nowhere") in err
        assert f"`membench datasets` says how to get {dataset}" in err and "LaMem layout" not in err


def test_images_elsewhere_is_one_line_saying_where_they_were_expected(tmp_path):
    replicas.make_things(tmp_path / "things")
    shutil.rmtree(tmp_path / "things" / "object_images")
    with pytest.raises(MembenchError, match=r"none of the first listed images found .*<concept>/<image>.jpg"):
        open_dataset("things", tmp_path / "things")


# --- data check and membench datasets on the replicas ----------------------------------------

def test_data_check_prints_counts_and_consistency_for_every_replica(tmp_path, run_cli):
    replicas.make_memcat(tmp_path / "memcat", n=30)
    replicas.make_things(tmp_path / "things", n=30, missing_scores=1)
    replicas.make_figrim(tmp_path / "figrim", n=30)
    *_, hrs1, hrs2, _ = replicas.make_sun(tmp_path / "sun", n_images=40, n_splits=4)
    expected = {"memcat": "human consistency: published in the paper, not computable",
                "things": "note: 1 row(s) without a cr value are left out",
                "figrim": "human consistency: published in the paper, not computable",
                "sun": f"human consistency (split-half rank correlation): "
                       f"{np.mean([spearmanr(hrs1[r], hrs2[r])[0] for r in range(4)]):.3f}"}
    for dataset, line in expected.items():
        code, out, err = run_cli("data", "check", "--dataset", dataset, "--data", tmp_path / dataset)
        assert code == 0, err
        assert line in out and "no problems found" in out
        counts = "│ 1     │ 21    │ 3   │ 6    │ ok" if dataset != "sun" else "│ 4     │ 18    │ 2   │ 20   │ ok"
        assert counts in out, out


def test_a_missing_image_is_a_problem_of_data_check(tmp_path, run_cli):
    replicas.make_figrim(tmp_path / "figrim", n=30)
    victim = sorted((tmp_path / "figrim" / "targets").rglob("*.jpg"))[-1]
    victim.unlink()
    code, out, _ = run_cli("data", "check", "--dataset", "figrim", "--data", tmp_path / "figrim")
    assert code == 1 and str(victim) in out


def test_membench_datasets_lists_the_field(run_cli, tmp_path, monkeypatch):
    code, out, err = run_cli("datasets", "--format", "csv")
    assert code == 0, err
    rows = {r["dataset"]: r for r in csv.DictReader(out.splitlines())}
    assert {"lamem", "lnsim", "memcat", "things", "figrim", "sun", "demo", "csv"} <= set(rows)
    assert rows["sun"]["get"] == "membench data download sun" and rows["sun"]["installed"] == "no"
    assert rows["memcat"]["get"].startswith("by hand: download the release from https://gestaltrevision.be")
    assert "membench data import memcat" in rows["memcat"]["get"]
    assert rows["things"]["score"].startswith("corrected recognition") and rows["figrim"]["score"].startswith("hit rate")
    assert rows["lamem"]["human_consistency"].startswith("0.68") and rows["demo"]["installed"] == "built in"
    for name in ("memcat", "things", "figrim", "sun", "lamem", "lnsim"):
        assert rows[name]["license"] and rows[name]["citation"] and rows[name]["size"] and rows[name]["splits"]
    # installed: a dataset under $MEMBENCH_DATA/NAME
    monkeypatch.setenv("MEMBENCH_DATA", str(tmp_path / "data"))
    replicas.make_sun(tmp_path / "data" / "sun", n_images=40, n_splits=2)
    code, out, _ = run_cli("datasets")
    assert code == 0 and f"installed          {tmp_path / 'data' / 'sun'}" in out
    code, out, err = run_cli("data", "check", "--dataset", "sun")  # no --data: the installed copy
    assert code == 0 and "no problems found" in out, err
    code, _, err = run_cli("data", "check", "--dataset", "memcat")
    assert code == 2 and f"nothing installed at {tmp_path / 'data' / 'memcat'}" in err
