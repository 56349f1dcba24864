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


# ------------------------------------------------------------------ runs clean and job directories

KEY = "m__demo__smoke__s0__0000000000"


def fake_row(split: int, **cells) -> dict:
    return {"run_id": KEY, "model": "m", "dataset": "demo", "split": split, "rho": 0.5, "mse": 0.01, "n_test": 2,
            "params_total": 10, "params_used": 10, "preset": "smoke", "train_mode": "full",
            "timestamp": "2024-01-01T00:00:00", **cells}


def finished_job(job: Path, leaderboard: Path | None = None) -> Path:
    job.mkdir(parents=True)
    saved = {"row": {"run_id": job.parent.name, "split": int(job.name[5:] or 1)}, "checkpoint": None}
    (job / "result.json").write_text(json.dumps({**saved, "leaderboard": str(leaderboard)} if leaderboard
                                                else saved))
    return job


def test_runs_clean_never_follows_a_symlinked_job_or_key_directory(tmp_path, run_cli):
    elsewhere = tmp_path / "elsewhere"
    finished_job(elsewhere / "job")
    (elsewhere / "job" / "data.bin").write_bytes(b"precious")
    finished_job(elsewhere / "key" / "split1")
    (elsewhere / "key" / "split1" / "data.bin").write_bytes(b"precious")
    before = tree(elsewhere)
    work = tmp_path / "work"
    (work / KEY).mkdir(parents=True)
    (work / KEY / "split1").symlink_to(elsewhere / "job")
    (work / "linked__demo__smoke__s0__0000000000").symlink_to(elsewhere / "key")
    finished_job(work / KEY / "split2")  # an ordinary finished job beside them is removed

    code, out, err = run_cli("runs", "--work-dir", work, "--format", "json")
    assert code == 0, err
    assert [(r["run"], r["split"], r["status"]) for r in json.loads(out)] == [(KEY, 2, "finished")]
    assert err.count("symbolic link") == 2
    code, out, err = run_cli("runs", "clean", "--work-dir", work)
    assert code == 0, err
    assert "removed 1 job(s)" in out and err.count("symbolic link") == 2
    assert tree(elsewhere) == before
    assert (work / KEY / "split1").is_symlink() and not (work / KEY / "split2").exists()
    assert (work / "linked__demo__smoke__s0__0000000000").is_symlink()


def test_runs_clean_in_a_folder_that_is_not_a_work_directory_removes_nothing_of_the_users(tmp_path, run_cli):
    """`--work-dir ~/proj` by mistake: ~/proj/data/split1 (the user's images) is no job."""
    proj = tmp_path / "proj"
    (proj / "data" / "split1").mkdir(parents=True)
    (proj / "data" / "split1" / "0001.jpg").write_bytes(b"my photo")
    finished_job(proj / KEY / "split1")  # a real job folder beside it is still cleaned
    code, out, err = run_cli("runs", "clean", "--work-dir", proj)
    assert code == 0 and "removed 1 job(s)" in out, err
    assert (proj / "data" / "split1" / "0001.jpg").read_bytes() == b"my photo" and not (proj / KEY).exists()


def smoke_run(run_cli, demo_root: Path, tmp_path: Path, *extra):
    """tiny-cnn, smoke preset, split 1: (its arguments, leaderboard, work directory, job directory)."""
    lb, work = tmp_path / "lb", tmp_path / "work"
    args = ["run", "--model", "tiny-cnn", "--data", demo_root, "--dataset", "demo", "--splits", "1",
            "--preset", "smoke", "--out", lb, "--work-dir", work, *extra]
    code, _, err = run_cli(*args)
    assert code == 0, err
    (job,) = work.glob("tiny-cnn__*/split1")
    return args, lb, work, job


def test_runs_clean_keeps_a_finished_job_whose_row_never_reached_the_leaderboard(tiny_plugin, demo_root,
                                                                                tmp_path, run_cli):
    import csv

    args, lb, work, job = smoke_run(run_cli, demo_root, tmp_path)
    results = (lb / "results.csv").read_text()
    # killed between result.json and results.csv (runner._run_job): the job finished, no row
    (lb / "results.csv").write_text(results.splitlines(keepends=True)[0])

    code, out, err = run_cli("runs", "clean", "--work-dir", work)
    assert code == 0 and "removed 0 job(s)" in out, err
    assert "row is missing" in err and str(lb.resolve()) in err and "--resume" in err and job.is_dir()
    code, out, _ = run_cli("runs", "--work-dir", work, "--format", "csv")
    assert [r["status"] for r in csv.DictReader(out.splitlines())] == ["unrecorded"]

    code, _, err = run_cli(*args, "--resume")  # the recovery the note names: the row comes back as it was
    assert code == 0 and "reusing" in err + _, err
    assert (lb / "results.csv").read_text() == results
    code, out, err = run_cli("runs", "clean", "--work-dir", work)
    assert code == 0 and "removed 1 job(s)" in out and not job.exists(), err


def test_runs_clean_keeps_a_job_whose_leaderboard_is_gone_or_unreadable(tmp_path):
    from membench.results import runs

    work = tmp_path / "work"
    finished_job(work / KEY / "split1", tmp_path / "no-such-leaderboard")
    finished_job(work / KEY / "split2")  # written before membench recorded the leaderboard: removable
    lb = tmp_path / "lb"
    lb.mkdir()
    (lb / "results.csv").write_text(f"run_id,split\n{KEY},3\n")
    finished_job(work / KEY / "split3", lb)
    assert {r.split: r.status for r in runs.scan(work)} == {1: "unrecorded", 2: "finished", 3: "finished"}
    assert sorted(r.split for r in runs.clean(work)) == [2, 3]
    assert (work / KEY / "split1" / "result.json").is_file()


def test_a_run_refuses_a_symlinked_job_directory(tiny_plugin, demo_root, tmp_path, run_cli):
    args, lb, work, job = smoke_run(run_cli, demo_root, tmp_path)
    elsewhere = tmp_path / "elsewhere"
    job.parent.rename(elsewhere)  # the job's key folder is a link to a user's directory
    (elsewhere / "split1" / "mine.txt").write_text("precious")
    job.parent.symlink_to(elsewhere)
    before = tree(elsewhere)
    code, _, err = run_cli(*args)  # without --resume a finished job is computed again: rmtree(job_dir)
    assert code == 2 and "symbolic link" in err and err.count("membench: error:") == 1, err
    assert "Traceback" not in err and tree(elsewhere) == before


def test_removing_a_finished_jobs_checkpoints_never_follows_a_link(tmp_path):
    from membench.engine.checkpoints import remove_checkpoints

    job = tmp_path / "work" / KEY / "split1"
    (job / "stage1").mkdir(parents=True)
    (job / "stage1" / "best.pt").write_bytes(b"x" * 10)
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    (elsewhere / "best.pt").write_bytes(b"a user's checkpoint")
    (job / "stage2").symlink_to(elsewhere)
    assert remove_checkpoints(job) == 10
    assert not (job / "stage1" / "best.pt").exists() and (elsewhere / "best.pt").is_file()


def test_a_users_temporary_looking_file_in_the_leaderboard_is_never_removed(tmp_path):
    from membench.results.leaderboard import add_result

    lb = tmp_path / "lb"
    lb.mkdir()
    (lb / ".notes.tmp").write_text("mine")
    (lb / ".notes.csv.old.tmp").write_text("mine too")  # ".<name>.csv.<...>.tmp", but not mkstemp's
    (lb / ".results.csv.k3j9x0ab.tmp").write_text("left by a killed write")  # atomic_write_bytes' name
    add_result(lb, fake_row(1), [("a.jpg", 0.5, 0.4), ("b.jpg", 0.6, 0.7)], {"run_id": KEY})
    assert (lb / ".notes.tmp").read_text() == "mine" and not (lb / ".results.csv.k3j9x0ab.tmp").exists()
    assert (lb / ".notes.csv.old.tmp").read_text() == "mine too"


def test_a_leaderboard_never_writes_or_cleans_up_through_a_linked_folder(tmp_path):
    from membench.errors import MembenchError
    from membench.results.leaderboard import add_result

    lb, elsewhere = tmp_path / "lb", tmp_path / "elsewhere"
    lb.mkdir()
    elsewhere.mkdir()
    (elsewhere / ".x.json.k3j9x0ab.tmp").write_text("someone else's")
    (lb / "runs").symlink_to(elsewhere)
    with pytest.raises(MembenchError, match="symbolic link"):
        add_result(lb, fake_row(1), [("a.jpg", 0.5, 0.4), ("b.jpg", 0.6, 0.7)], {"run_id": KEY})
    assert os.listdir(elsewhere) == [".x.json.k3j9x0ab.tmp"] and not (lb / "results.csv").exists()


# ------------------------------------------------------------------ leaderboard files

def test_a_results_csv_link_is_refused_before_anything_is_written(tiny_plugin, demo_root, tmp_path, run_cli):
    from membench.errors import MembenchError
    from membench.results.leaderboard import RESULT_COLUMNS, add_result

    lb = tmp_path / "lb"
    lb.mkdir()
    target = tmp_path / "shared" / "results.csv"
    target.parent.mkdir()
    header = ",".join(RESULT_COLUMNS) + "\n"
    target.write_text(header)  # a leaderboard elsewhere: never written through the link, nor the link replaced
    (lb / "results.csv").symlink_to(target)
    code, out, err = run_cli("run", "--model", "tiny-cnn", "--data", demo_root, "--dataset", "demo", "--splits", 1,
                             "--preset", "smoke", "--out", lb, "--work-dir", tmp_path / "work")
    assert code == 2 and "results.csv: is a symbolic link" in err and "Traceback" not in err, err
    assert not list((tmp_path / "work").glob("*/split*"))  # refused before any training
    with pytest.raises(MembenchError, match="symbolic link"):
        add_result(lb, fake_row(1), [("a.jpg", 0.5, 0.4)], {"run_id": KEY})
    assert (lb / "results.csv").is_symlink() and target.read_text() == header
    assert sorted(p.name for p in lb.iterdir()) == [".lock", "results.csv"]  # no predictions, no provenance


def test_a_link_where_any_leaderboard_file_goes_is_never_replaced(tmp_path):
    from membench.errors import MembenchError
    from membench.results.leaderboard import add_result

    lb = tmp_path / "lb"
    add_result(lb, fake_row(1), [("a.jpg", 0.5, 0.4)], {"run_id": KEY})
    target = tmp_path / "mine.csv"
    target.write_text("mine")
    (lb / "summary.csv").unlink()
    (lb / "summary.csv").symlink_to(target)
    before = (lb / "results.csv").read_text()
    with pytest.raises(MembenchError, match="summary.csv: is a symbolic link"):
        add_result(lb, fake_row(2), [("a.jpg", 0.5, 0.4)], {"run_id": KEY})
    assert (lb / "results.csv").read_text() == before and target.read_text() == "mine"
    assert not (lb / "predictions" / KEY / "split2.csv").exists()


def test_resume_keeps_a_users_column_and_the_cells_a_user_filled(tmp_path):
    import csv
    import io

    from membench.results.leaderboard import add_result

    lb = tmp_path / "lb"
    for k in (1, 2):
        add_result(lb, fake_row(k), [("a.jpg", 0.5, 0.4)], {"run_id": KEY})
    rows = list(csv.DictReader((lb / "results.csv").read_text().splitlines()))
    assert rows[0]["notes"] == "" and "reviewer" not in rows[0]
    for i, r in enumerate(rows):  # a user adds a column and fills a cell membench left empty
        r.update(reviewer=f"ann{i}", notes="checked by hand")
    buf = io.StringIO()
    w = csv.DictWriter(buf, fieldnames=[*rows[0]], lineterminator="\n")
    w.writeheader()
    w.writerows(rows)
    (lb / "results.csv").write_text(buf.getvalue())

    add_result(lb, fake_row(1), [("a.jpg", 0.5, 0.4)], {"run_id": KEY})  # what --resume does: the same row again
    assert list(csv.DictReader((lb / "results.csv").read_text().splitlines())) == rows
    add_result(lb, fake_row(2, timestamp="2024-02-02T00:00:00", rho=0.7), [("a.jpg", 0.5, 0.4)], {"run_id": KEY})
    new = list(csv.DictReader((lb / "results.csv").read_text().splitlines()))[1]
    # a new measurement: the user's column stays, membench's own cells are all its new ones
    assert (new["reviewer"], new["rho"], new["notes"], new["timestamp"]) == ("ann1", "0.7", "", "2024-02-02T00:00:00")


# ------------------------------------------------------------------ report --out

def test_report_never_replaces_a_file_it_did_not_write(tmp_path, run_cli):
    from membench.results.leaderboard import add_result

    lb, out = tmp_path / "lb", tmp_path / "paper"
    add_result(lb, fake_row(1), [("a.jpg", 0.5, 0.4), ("b.jpg", 0.6, 0.7)], {"run_id": KEY})
    out.mkdir()
    (out / "README.md").write_text("# my paper\n")
    code, _, err = run_cli("report", "--leaderboard", lb, "--out", out, "--n-boot", 0, "--no-figure")
    assert code == 2 and err.count("\n") == 1 and str(out / "README.md") in err and "did not write" in err, err
    assert os.listdir(out) == ["README.md"] and (out / "README.md").read_text() == "# my paper\n"

    (out / "README.md").unlink()
    (out / "table1_demo.tex").write_text("% mine\n")  # any file the report would replace
    code, _, err = run_cli("report", "--leaderboard", lb, "--out", out, "--n-boot", 0, "--no-figure")
    assert code == 2 and "table1_demo.tex" in err and os.listdir(out) == ["table1_demo.tex"]

    (out / "table1_demo.tex").unlink()
    (out / "notes.md").write_text("mine")  # a file it never writes is no obstacle
    code, _, err = run_cli("report", "--leaderboard", lb, "--out", out, "--n-boot", 0, "--no-figure")
    assert code == 0, err
    first = tree(out)
    assert first["notes.md"] == b"mine" and b"# membench leaderboard" in first["README.md"]
    code, _, err = run_cli("report", "--leaderboard", lb, "--out", out, "--n-boot", 0, "--no-figure")
    assert code == 0 and tree(out) == first, err  # its own files it replaces


def test_report_replaces_a_report_written_before_it_listed_its_files(tmp_path, run_cli):
    from membench.results.leaderboard import add_result

    lb = tmp_path / "lb"
    add_result(lb, fake_row(1), [("a.jpg", 0.5, 0.4), ("b.jpg", 0.6, 0.7)], {"run_id": KEY})
    code, _, err = run_cli("report", "--leaderboard", lb, "--n-boot", 0, "--no-figure", "--no-site")
    assert code == 0, err
    (lb / ".membench-report.json").unlink()  # as an older membench (no list, no site) left it
    (lb / "table2_demo.md").write_text("stale")
    code, _, err = run_cli("report", "--leaderboard", lb, "--n-boot", 0, "--no-figure")
    assert code == 0 and (lb / "table2_demo.md").read_text() != "stale", err
    target = tmp_path / "elsewhere.md"
    target.write_text("mine")
    (lb / "table2_demo.md").unlink()
    (lb / "table2_demo.md").symlink_to(target)
    code, _, err = run_cli("report", "--leaderboard", lb, "--n-boot", 0, "--no-figure")
    assert code == 2 and "symbolic link" in err and target.read_text() == "mine"


def test_a_report_directory_from_before_the_list_keeps_its_params_csv(tmp_path, run_cli):
    """The committed leaderboards/ has a params.csv from `--count-params`: the list made by a
    later report without that flag still counts it as the report's own (it refused it)."""
    from membench.results.leaderboard import add_result

    lb = tmp_path / "lb"
    add_result(lb, fake_row(1), [("a.jpg", 0.5, 0.4), ("b.jpg", 0.6, 0.7)], {"run_id": KEY})
    assert run_cli("report", "--leaderboard", lb, "--n-boot", 0, "--no-figure", "--count-params", "--no-site")[0] == 0
    (lb / ".membench-report.json").unlink()  # as an older membench (no list, no site) left it
    assert run_cli("report", "--leaderboard", lb, "--n-boot", 0, "--no-figure")[0] == 0
    code, _, err = run_cli("report", "--leaderboard", lb, "--n-boot", 0, "--no-figure", "--count-params")
    assert code == 0, err


def test_a_report_directory_from_before_the_list_never_owns_a_users_index_html(tmp_path, run_cli):
    """Reports wrote their list before they wrote a site: an index.html in a directory
    without the list is the user's, not an old report's."""
    from membench.results.leaderboard import add_result

    lb = tmp_path / "lb"
    add_result(lb, fake_row(1), [("a.jpg", 0.5, 0.4), ("b.jpg", 0.6, 0.7)], {"run_id": KEY})
    assert run_cli("report", "--leaderboard", lb, "--n-boot", 0, "--no-figure", "--no-site")[0] == 0
    (lb / ".membench-report.json").unlink()
    (lb / "index.html").write_text("<p>my lab page</p>")
    code, _, err = run_cli("report", "--leaderboard", lb, "--n-boot", 0, "--no-figure")
    assert code == 2 and str(lb / "index.html") in err and "did not write" in err, err
    assert (lb / "index.html").read_text() == "<p>my lab page</p>"


# ------------------------------------------------------------------ predict --html, explain --out

def test_a_contact_sheet_never_replaces_a_users_page(tiny_plugin, demo_root, tmp_path, run_cli):
    images = sorted((demo_root / "images").glob("*.jpg"))[:3]
    sheet = tmp_path / "photos"
    sheet.mkdir()
    (sheet / "index.html").write_text("<p>my album</p>")
    args = ("predict", "--model", "tiny-cnn", "--pretrained", "none", *images, "--html", sheet)
    code, out, err = run_cli(*args)
    assert code == 2 and err.count("\n") == 1 and str(sheet / "index.html") in err and "did not write" in err, err
    assert out == "" and os.listdir(sheet) == ["index.html"]  # refused before a single image was scored
    (sheet / "index.html").unlink()
    assert run_cli(*args)[0] == 0
    first = tree(sheet)
    assert run_cli(*args)[0] == 0  # its own sheet: replaced (random weights: other scores)
    assert tree(sheet).keys() == first.keys() and tree(sheet)["scores.csv"] != first["scores.csv"]
    assert json.loads((sheet / ".membench-predict.json").read_text())["files"] == sorted(
        ["index.html", "scores.csv", "site.css", "site.js", *(f"thumbs/{i:04d}.jpg" for i in range(3))])


@pytest.mark.parametrize("command", [
    ("predict", "--model", "tiny-cnn", "--pretrained", "none", "IMAGE", "--html"),
    ("explain", "--model", "tiny-cnn", "--pretrained", "none", "IMAGE", "--out"),
    ("bench", "--what", "pipeline", "--images", "2", "--image-size", "64x48", "--rounds", "1", "--out"),
])
def test_an_output_directory_that_is_a_file_is_one_line_before_any_work(tiny_plugin, demo_root, tmp_path, run_cli,
                                                                         command):
    image = sorted((demo_root / "images").glob("*.jpg"))[0]
    mine = tmp_path / "notes.txt"
    mine.write_text("mine")
    code, out, err = run_cli(*[image if a == "IMAGE" else a for a in command], mine)
    assert code == 2 and err.count("\n") == 1 and str(mine) in err and "not one" in err, err
    assert out == "" and mine.read_text() == "mine"  # nothing scored or measured first


def test_explain_never_replaces_a_users_file_or_writes_through_a_link(tiny_plugin, demo_root, tmp_path, run_cli):
    pytest.importorskip("pytorch_grad_cam", reason="the maps of a CNN are Grad-CAM (extra: explain)")
    image = sorted((demo_root / "images").glob("*.jpg"))[0]
    out, elsewhere = tmp_path / "maps", tmp_path / "elsewhere"
    out.mkdir()
    elsewhere.mkdir()
    mine = out / f"{image.stem}_tiny-cnn_grad-cam.png"
    mine.write_bytes(b"my figure")
    args = ("explain", "--model", "tiny-cnn", "--pretrained", "none", image, "--out", out)
    code, _, err = run_cli(*args)
    assert code == 2 and err.count("\n") == 1 and str(mine) in err and "did not write" in err, err
    assert mine.read_bytes() == b"my figure" and os.listdir(out) == [mine.name]
    mine.unlink()
    assert run_cli(*args)[0] == 0 and run_cli(*args)[0] == 0  # the second replaces its own maps
    assert sorted(os.listdir(out)) == sorted([".membench-explain.json", mine.name, mine.with_suffix(".npy").name])
    npy = mine.with_suffix(".npy")
    npy.unlink()
    npy.symlink_to(elsewhere / "target.npy")
    (elsewhere / "target.npy").write_bytes(b"not yours")
    code, _, err = run_cli(*args)
    assert code == 2 and err.count("\n") == 1 and str(npy) in err and "link" in err, err
    assert (elsewhere / "target.npy").read_bytes() == b"not yours" and npy.is_symlink()


# ------------------------------------------------------------------ captioner --out

def test_installing_a_captioner_never_replaces_a_users_files(tmp_path):
    from membench.errors import MembenchError
    from membench_plugins.captioner import sat

    state, wm = {}, sat.default_word_map(20)  # the files' content does not matter here
    downloads = tmp_path / "downloads"  # `captioner import CKPT --word-map ... --out .` where the user keeps files
    downloads.mkdir()
    (downloads / "info.json").write_text('{"camera": "mine"}')
    with pytest.raises(MembenchError, match="did not write this file"):
        sat.save_captioner(state, wm, downloads, {"kind": "imported"})
    assert os.listdir(downloads) == ["info.json"] and (downloads / "info.json").read_text() == '{"camera": "mine"}'

    out = tmp_path / "captioner"
    sat.save_captioner(state, wm, out, {"kind": "trained", "epoch": 1})
    sat.save_captioner(state, wm, out, {"kind": "trained", "epoch": 2})  # its own: replaced
    assert json.loads((out / "info.json").read_text())["epoch"] == 2
    target = tmp_path / "elsewhere.json"
    target.write_text("{}")
    (out / "word_map.json").unlink()
    (out / "word_map.json").symlink_to(target)
    with pytest.raises(MembenchError, match="symbolic link"):
        sat.save_captioner(state, wm, out, {"kind": "trained", "epoch": 3})
    assert target.read_text() == "{}" and json.loads((out / "info.json").read_text())["epoch"] == 2


def test_evaluate_never_writes_through_a_linked_job_directory(tiny_plugin, demo_root, tmp_path, run_cli):
    _, lb, work, job = smoke_run(run_cli, demo_root, tmp_path, "--keep-checkpoints")
    data = ["--data", demo_root, "--dataset", "demo", "--splits", "1", "--out", lb, "--work-dir", work]
    run = job.parent
    code, _, err = run_cli("evaluate", "--from-run", run, "--eval-part", "all", *data)
    assert code == 0, err
    (evaluation,) = [p for p in work.iterdir() if p != run]
    elsewhere = tmp_path / "elsewhere"
    evaluation.rename(elsewhere)
    evaluation.symlink_to(elsewhere)
    before = tree(elsewhere)
    code, _, err = run_cli("evaluate", "--from-run", run, "--eval-part", "all", *data)
    assert code == 2 and "symbolic link" in err and "Traceback" not in err, err
    assert tree(elsewhere) == before


def test_a_report_that_failed_half_way_still_owns_what_it_wrote(tmp_path, run_cli, monkeypatch):
    from membench.report import figures
    from membench.results.leaderboard import add_result

    lb = tmp_path / "lb"
    add_result(lb, fake_row(1), [("a.jpg", 0.5, 0.4), ("b.jpg", 0.6, 0.7)], {"run_id": KEY})
    with monkeypatch.context() as m:  # the figure's write fails after the tables were written
        m.setattr(figures, "save", lambda *a: (_ for _ in ()).throw(OSError(28, "No space left on device")))
        code, _, err = run_cli("report", "--leaderboard", lb, "--n-boot", 0)
    assert code != 0 and (lb / "table1_demo.md").is_file() and not (lb / "README.md").exists()
    code, _, err = run_cli("report", "--leaderboard", lb, "--n-boot", 0, "--no-figure")
    assert code == 0, err
