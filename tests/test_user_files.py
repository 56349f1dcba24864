"""membench never deletes or overwrites a file it did not write, and never follows a symlink
out of its own directories (issue 21): demo-data, `runs clean`, the runner's job directories,
leaderboard and report files, the captioner install folder."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

MARKER = ".membench-demo.json"  # membench.data.demo.MARKER


def tree(root: Path) -> dict[str, bytes]:
    return {str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


# ------------------------------------------------------------------ demo-data

def test_demo_data_refuses_a_directory_it_did_not_write(tmp_path, run_cli):
    user = tmp_path / "thesis"
    (user / "images").mkdir(parents=True)
    (user / "notes.txt").write_text("precious")
    (user / "images" / "00000001.jpg").write_bytes(b"my photo")
    before = tree(user)
    code, out, err = run_cli("demo-data", user, "--images", 20, "--splits", 1)
    assert code == 2 and err.count("\n") == 1 and "not a demo dataset membench wrote" in err and str(user) in err
    assert tree(user) == before and sorted(os.listdir(user)) == ["images", "notes.txt"]


def test_demo_data_in_a_non_empty_current_directory_is_one_line(tmp_path, monkeypatch, run_cli):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "a.txt").write_text("mine")
    code, out, err = run_cli("demo-data", ".", "--images", 20, "--splits", 1)
    assert code == 2 and err.startswith("membench: error: .:") and err.count("\n") == 1
    assert os.listdir(tmp_path) == ["a.txt"]


def test_demo_data_writes_into_the_empty_current_directory_and_regenerates_only_its_own(tmp_path, monkeypatch,
                                                                                         run_cli):
    monkeypatch.chdir(tmp_path)
    code, out, err = run_cli("demo-data", ".", "--images", 20, "--splits", 1)
    assert code == 0, err
    first = tree(tmp_path / "images")
    assert len(first) == 20 and json.loads((tmp_path / MARKER).read_text())["images"] == 20
    (tmp_path / "my-notes.md").write_text("kept")  # a user's file beside the dataset
    code, out, err = run_cli("demo-data", ".", "--images", 24, "--splits", 2, "--seed", 1)
    assert code == 0, err
    assert len(list((tmp_path / "images").iterdir())) == 24 and (tmp_path / "splits" / "test_2.txt").is_file()
    assert (tmp_path / "my-notes.md").read_text() == "kept"
    assert not [p for p in os.listdir(tmp_path) if p.startswith(".demo-")]  # no scratch folder left

    # a file membench did not write inside images/ (or a link there) stops it, nothing changed
    (tmp_path / "images" / "mine.png").write_bytes(b"x")
    before = tree(tmp_path)
    code, out, err = run_cli("demo-data", ".", "--images", 20, "--splits", 1)
    assert code == 2 and "mine.png" in err and "did not write" in err and tree(tmp_path) == before
    (tmp_path / "images" / "mine.png").unlink()
    outside = tmp_path.parent / f"{tmp_path.name}-outside"
    outside.mkdir()
    (outside / "keep.txt").write_text("outside")
    (tmp_path / "images" / "00000099.jpg").symlink_to(outside / "keep.txt")
    code, out, err = run_cli("demo-data", ".", "--images", 20, "--splits", 1)
    assert code == 2 and "00000099.jpg" in err and (outside / "keep.txt").read_text() == "outside"


def test_demo_data_refuses_a_forged_marker_and_a_file(tmp_path, run_cli):
    d = tmp_path / "d"
    d.mkdir()
    (d / MARKER).write_text("{}")
    (d / "data.csv").write_text("mine")
    code, out, err = run_cli("demo-data", d, "--images", 20, "--splits", 1)
    assert code == 2 and MARKER in err and (d / "data.csv").read_text() == "mine"
    f = tmp_path / "file"
    f.write_text("mine")
    code, out, err = run_cli("demo-data", f, "--images", 20, "--splits", 1)
    assert code == 2 and "not a directory" in err and f.read_text() == "mine"


def test_a_killed_demo_generation_is_finished_by_the_next(tmp_path):
    from membench.data.demo import generate

    d = tmp_path / "d"
    generate(d, n_images=20, n_splits=1)
    (d / ".demo-new.999999" / "images").mkdir(parents=True)  # left by a process killed mid-write
    generate(d, n_images=20, n_splits=1)
    assert not (d / ".demo-new.999999").exists() and len(list((d / "images").iterdir())) == 20
