"""Messages that say what to do: one line, a did-you-mean, a hint, never a usage dump."""

from __future__ import annotations

from pathlib import Path

import pytest

from membench.cli import main


def _argparse_error(capsys, *args) -> str:
    with pytest.raises(SystemExit) as exit_:
        main([str(a) for a in args])
    assert exit_.value.code == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "usage:" not in err, err
    return err


def test_misspelt_preset_gets_a_did_you_mean_without_the_usage_dump(capsys):
    err = _argparse_error(capsys, "run", "--model", "ours", "--preset", "papr")
    assert "invalid choice 'papr'; did you mean 'paper'?" in err
    assert "(choose from paper, smoke, quick, cpu)" in err and "membench run --help" in err


def test_misspelt_command_and_choice_of_a_subcommand(capsys):
    assert "did you mean 'run'?" in _argparse_error(capsys, "rnu")
    assert "did you mean 'skip'?" in _argparse_error(capsys, "run", "--model", "ours", "--on-bad-image", "skp")
    assert "did you mean 'lamem'?" in _argparse_error(capsys, "data", "download", "lamm", "--to", "x")


def test_misspelt_option_names_the_option_it_resembles(capsys):
    err = _argparse_error(capsys, "run", "--model", "ours", "--prest", "smoke")
    assert "--prest (did you mean --preset?)" in err


def test_a_choice_nothing_resembles_lists_the_choices_only(capsys):
    err = _argparse_error(capsys, "run", "--model", "ours", "--preset", "xyzzy")
    assert "did you mean" not in err and "choose from paper, smoke, quick, cpu" in err


@pytest.mark.parametrize("args", [
    ("run", "--model", "resnet50-lamem", "--preset", "smoke", "--splits", "1", "--workers", "-1"),
    ("bench", "--what", "pipeline", "--images", "2", "--workers", "-1"),
    ("compare", "a", "b", "--seed", "-1"),
    ("compare", "a", "b", "--n-boot", "-3"),
    ("report", "--seed", "-1"),
    ("demo-data", "--seed", "-1"),
    ("demo-data", "--splits", "0"),
])
def test_negative_counts_and_seeds_are_one_line_before_any_work(capsys, tmp_path, args):
    """They reached torch's DataLoader or numpy's RNG as a traceback (after the work)."""
    flag, value = args[-2:]
    where = {"run": ("--out", tmp_path), "bench": ("--out", tmp_path), "compare": ("--leaderboard", tmp_path),
             "report": ("--leaderboard", tmp_path, "--out", tmp_path), "demo-data": (tmp_path / "demo",)}[args[0]]
    least = 1 if flag == "--splits" else 0
    assert f"argument {flag}: must be {least} or more, not {value}" in _argparse_error(capsys, *args[:-2], *where,
                                                                                      *args[-2:])
    assert not any(tmp_path.iterdir())


def test_missing_data_directory_hints_at_the_layout_and_demo(run_cli, tmp_path):
    code, _, err = run_cli("data", "check", "--data", tmp_path / "nope")
    assert code == 2 and err.count("\n") == 1
    assert "images/" in err and "splits/" in err and "--data demo" in err
    assert "membench data download lamem" in err
    (tmp_path / "empty").mkdir()
    code, _, err = run_cli("data", "check", "--data", tmp_path / "empty")
    assert code == 2 and "missing images/" in err and "--data demo" in err


def test_disk_full_names_the_file_and_keeps_the_old_version(tmp_path, monkeypatch):
    import errno
    import os

    from membench.errors import MembenchError
    from membench.util import files

    target = tmp_path / "results.csv"
    target.write_text("old\n")

    def full(fd):
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    monkeypatch.setattr(files.os, "fsync", full)
    with pytest.raises(MembenchError) as err:
        files.atomic_write_text(target, "new\n")
    assert err.value.path == str(target) and "disk full" in str(err.value) and "\n" not in str(err.value)
    assert target.read_text() == "old\n" and [p.name for p in tmp_path.iterdir()] == ["results.csv"]


def test_a_deleted_best_pt_gives_a_path_that_resumes(tiny_plugin, demo_root, tmp_path, run_cli):
    """A run killed after its last epoch (no result.json yet) whose best.pt the user then
    deleted: the message names what to delete, and following it finishes the run."""
    import shutil

    args = ("run", "--model", "tiny-cnn", "--data", demo_root, "--splits", "1", "--preset", "smoke",
            "--pretrained", "none", "--device", "cpu", "--out", tmp_path / "lb", "--work-dir", tmp_path / "work")
    code, _, err = run_cli(*args)
    assert code == 0, err
    (job,) = (tmp_path / "work").glob("tiny-cnn__*/split1")
    (job / "result.json").unlink()
    for best in job.rglob("best.pt"):
        best.unlink()
    code, _, err = run_cli(*args, "--resume")
    if code != 0:  # the stage's last.pt survived: its best epoch is gone
        line = [ln for ln in err.splitlines() if ln.startswith("membench: error:")][-1]
        assert "checkpoint is missing (deleted?)" in line and "--resume" in line
        folder = line.split("delete the folder ")[1].split(" to retrain")[0]
        assert Path(folder).parent == job
        shutil.rmtree(folder)
        code, _, err = run_cli(*args, "--resume")
    assert code == 0, err
    assert (job / "result.json").is_file()


def test_smoke_runs_end_saying_the_numbers_only_test_the_plumbing(tiny_plugin, demo_root, tmp_path, run_cli):
    code, out, err = run_cli("run", "--model", "tiny-cnn", "--data", demo_root, "--splits", "1", "--preset", "smoke",
                             "--pretrained", "none", "--device", "cpu", "--out", tmp_path / "lb",
                             "--work-dir", tmp_path / "work")
    assert code == 0, err
    last = out.strip().splitlines()[-1]
    assert "only test the plumbing" in last and "membench data download lamem" in last
    assert "membench run --model tiny-cnn --data DIR" in last


def _first_run_example(capsys) -> list[str]:
    with pytest.raises(SystemExit):
        main(["run", "--help"])
    text = capsys.readouterr().out
    first = text.split("examples:\n", 1)[1].splitlines()[0]
    return first.split("#")[0].split()


def test_the_first_example_in_run_help_needs_nothing_a_fresh_machine_lacks(capsys):
    from membench.cli import build_parser

    words = _first_run_example(capsys)
    assert words[:2] == ["membench", "run"]
    args = build_parser().parse_args(words[1:])
    # no dataset, weights or captioner to fetch, and minutes (not days) on a CPU
    assert args.data == "demo" and args.pretrained == "none" and args.preset in ("smoke", "quick")


@pytest.mark.slow
def test_the_first_example_in_run_help_runs(capsys, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)  # its default --out is ./leaderboards
    words = _first_run_example(capsys)
    assert main(words[1:]) == 0
    assert (tmp_path / "leaderboards" / "results.csv").is_file()
