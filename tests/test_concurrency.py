"""Several runs sharing a leaderboard lose no rows and tear no files; every shared file is
replaced atomically; one job directory is never trained by two processes at once."""

from __future__ import annotations

import csv
import json
import multiprocessing
import os
import time
from pathlib import Path

import pytest

from membench.errors import MembenchError
from membench.results import leaderboard
from membench.util import files

WRITERS = 6
ROWS_EACH = 8


def fake_row(run_id: str, split: int) -> dict:
    return {"run_id": run_id, "model": run_id.split("__")[0], "dataset": "demo", "split": split,
            "rho": 0.5 + split / 100, "mse": 0.01 * split, "n_test": 3, "params_total": 10, "params_used": 10,
            "preset": "smoke", "train_mode": "full", "notes": "a, \"quoted\" note"}


def writer(out: str, w: int, barrier) -> None:
    """One process recording ROWS_EACH results (two runs of four splits) at full speed."""
    barrier.wait()
    for i in range(ROWS_EACH):
        run_id = f"model{w}__run{i // 4}"
        split = i % 4 + 1
        preds = [(f"{j:08d}.jpg", 0.5, 0.25 + j / 10) for j in range(3)]
        leaderboard.add_result(Path(out), fake_row(run_id, split), preds,
                               {"run_id": run_id, "writer": w, "padding": "x" * 20000})


def reader(out: str, stop, report) -> None:
    """Reads the shared files without any lock while writers run: every read must be a
    whole file (atomic replace), and rows never disappear."""
    reads, torn, seen = 0, [], 0
    results = Path(out) / "results.csv"
    while not stop.is_set():
        try:
            with open(results, newline="") as f:
                text = f.read()
        except FileNotFoundError:
            continue
        reads += 1
        rows = list(csv.DictReader(text.splitlines()))
        if not text.endswith("\n") or any(None in r or None in r.values() for r in rows):
            torn.append(text[-200:])
        if len(rows) < seen:
            torn.append(f"rows went from {seen} to {len(rows)}")
        seen = max(seen, len(rows))
        for p in (Path(out) / "runs").glob("*.json"):
            try:
                json.loads(p.read_text())
            except FileNotFoundError:
                pass
            except ValueError:
                torn.append(f"torn {p.name}")
    report.put((reads, torn))


def test_concurrent_writers_lose_nothing_and_tear_nothing(tmp_path):
    ctx = multiprocessing.get_context("spawn")  # no fork of a process that has imported torch
    out = tmp_path / "lb"
    barrier = ctx.Barrier(WRITERS)
    stop, report = ctx.Event(), ctx.Queue()
    watcher = ctx.Process(target=reader, args=(str(out), stop, report))
    watcher.start()
    procs = [ctx.Process(target=writer, args=(str(out), w, barrier)) for w in range(WRITERS)]
    for p in procs:
        p.start()
    for p in procs:
        p.join(120)
        assert p.exitcode == 0
    stop.set()
    reads, torn = report.get(timeout=60)
    watcher.join(60)
    assert not torn, torn[:3]
    assert reads > 0

    rows = leaderboard.read_rows(out / "results.csv")
    keys = [(r["run_id"], r["split"]) for r in rows]
    expected = {(f"model{w}__run{i // 4}", str(i % 4 + 1)) for w in range(WRITERS) for i in range(ROWS_EACH)}
    assert len(keys) == len(set(keys)) == WRITERS * ROWS_EACH
    assert set(keys) == expected
    assert all(r["notes"] == 'a, "quoted" note' for r in rows)
    summary = leaderboard.read_rows(out / "summary.csv")
    # one row per model and configuration: its two runs share seed and configuration, so the
    # later run id counts (no timestamps here), as in the report
    last = (ROWS_EACH - 1) // 4
    assert sorted((s["model"], s["run_ids"], s["n_splits"]) for s in summary) == sorted(
        (f"model{w}", f"model{w}__run{last}", "4") for w in range(WRITERS))
    for run_id, split in expected:
        assert json.loads((out / "runs" / f"{run_id}.json").read_text())["run_id"] == run_id
        assert len(leaderboard.read_rows(out / "predictions" / run_id / f"split{split}.csv")) == 3
    assert not [p for p in out.rglob("*") if p.name.endswith(".tmp")]


def test_shared_files_are_only_ever_replaced_atomically(tmp_path, monkeypatch):
    """results.csv, summary.csv, runs/<id>.json and predictions are never opened for
    writing in place: each is written to a temporary file in its directory, then renamed."""
    import builtins

    out = tmp_path / "lb"
    leaderboard.add_result(out, fake_row("m__r", 1), [("a.jpg", 0.5, 0.4)], {"run_id": "m__r"})
    replaced, opened = [], []
    real_replace, real_open = os.replace, builtins.open

    def spy_replace(src, dst):
        replaced.append((Path(src), Path(dst)))
        return real_replace(src, dst)

    def spy_open(file, mode="r", *a, **k):
        if any(c in mode for c in "wax+"):
            opened.append(Path(file))
        return real_open(file, mode, *a, **k)

    monkeypatch.setattr(files.os, "replace", spy_replace)
    monkeypatch.setattr(builtins, "open", spy_open)
    leaderboard.add_result(out, fake_row("m__r", 2), [("a.jpg", 0.5, 0.4)], {"run_id": "m__r"})
    monkeypatch.undo()

    finals = {out / "results.csv", out / "summary.csv", out / "runs" / "m__r.json",
              out / "predictions" / "m__r" / "split2.csv"}
    assert finals <= {dst for _src, dst in replaced}
    for src, dst in replaced:
        assert src.parent == dst.parent and src.name.startswith(f".{dst.name}.") and src.name.endswith(".tmp")
    assert not finals & set(opened), "a shared file was opened for writing in place"
    assert opened == [out / ".lock"]  # the lock file, opened for append


def test_a_failed_write_leaves_the_old_file_and_no_temporary(tmp_path, monkeypatch):
    out = tmp_path / "lb"
    leaderboard.add_result(out, fake_row("m__r", 1), [("a.jpg", 0.5, 0.4)], {"run_id": "m__r"})
    before = (out / "results.csv").read_text()

    def disk_full(src, dst):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(files.os, "replace", disk_full)
    with pytest.raises(MembenchError, match="disk full while writing this file"):  # and names it
        leaderboard.add_result(out, fake_row("m__r", 2), [("a.jpg", 0.5, 0.4)], {"run_id": "m__r"})
    monkeypatch.undo()
    assert (out / "results.csv").read_text() == before
    assert not [p for p in out.rglob("*") if p.name.endswith(".tmp")]


def test_stale_temporary_files_of_a_killed_writer_are_cleaned_up(tmp_path):
    out = tmp_path / "lb"
    leaderboard.add_result(out, fake_row("m__r", 1), [("a.jpg", 0.5, 0.4)], {"run_id": "m__r"})
    # named as atomic_write_bytes names them (mkstemp: 8 random characters)
    stale = [out / ".results.csv.abc123de.tmp", out / "runs" / ".m__r.json.x1y2z3w4.tmp",
             out / "predictions" / "m__r" / ".split2.csv.y_9k2m0p.tmp"]
    for p in stale:
        p.write_text("half a fi")
    leaderboard.add_result(out, fake_row("m__r", 2), [("a.jpg", 0.5, 0.4)], {"run_id": "m__r"})
    assert not any(p.exists() for p in stale)
    assert len(leaderboard.read_rows(out / "results.csv")) == 2


def test_checkpoints_and_job_results_are_written_atomically(tmp_path, monkeypatch):
    import torch

    from membench.engine import stage as train

    replaced = []
    real_replace = os.replace
    monkeypatch.setattr(files.os, "replace", lambda s, d: (replaced.append(Path(d)), real_replace(s, d)))
    train.save_checkpoint(tmp_path / "stage" / "last.pt", {"model": {"w": torch.zeros(2)}, "epoch": 1})
    leaderboard.atomic_write_json(tmp_path / "result.json", {"row": {}})
    assert replaced == [tmp_path / "stage" / "last.pt", tmp_path / "result.json"]
    assert train.load_checkpoint(tmp_path / "stage" / "last.pt")["epoch"] == 1


def hold_lock(job_dir: str, held, release) -> None:
    from membench.engine.runner import job_lock

    with job_lock(Path(job_dir), wait=False):
        held.set()
        release.wait(60)


def test_one_process_per_job_directory(tmp_path):
    from membench.engine.runner import job_lock

    ctx = multiprocessing.get_context("spawn")
    job_dir = tmp_path / "work" / "job" / "split1"
    held, release = ctx.Event(), ctx.Event()
    other = ctx.Process(target=hold_lock, args=(str(job_dir), held, release))
    other.start()
    try:
        assert held.wait(60)
        with pytest.raises(MembenchError, match="another membench process is running this job"):
            with job_lock(job_dir, wait=False):
                pass
        waited = []
        release.set()
        t0 = time.monotonic()
        with job_lock(job_dir, wait=True, say=waited.append):  # an upstream job: wait for it
            pass
        assert time.monotonic() - t0 < 60
    finally:
        release.set()
        other.join(60)
    assert other.exitcode == 0


def test_a_killed_holder_leaves_no_stale_lock(tmp_path):
    import signal

    from membench.engine.runner import job_lock

    ctx = multiprocessing.get_context("spawn")
    job_dir = tmp_path / "job" / "split1"
    held, release = ctx.Event(), ctx.Event()
    other = ctx.Process(target=hold_lock, args=(str(job_dir), held, release))
    other.start()
    assert held.wait(60)
    os.kill(other.pid, signal.SIGKILL)
    other.join(60)
    with job_lock(job_dir, wait=False):
        pass


def test_cli_refuses_a_job_another_process_is_running(tmp_path, run_cli):
    from membench import registry
    from membench.data.demo import generate
    from membench.engine.runner import RunConfig, job_key, job_lock
    from membench_plugins.datasets.lamem import open_lamem

    data = generate(tmp_path / "data", n_images=20, n_splits=1)
    cfg = RunConfig(out=tmp_path / "lb", work_dir=tmp_path / "work", preset="smoke", pretrained=False)
    key = job_key(registry.get_model("resnet50-lamem"), open_lamem(data), cfg)
    with job_lock(cfg.work_dir / key / "split1", wait=False):
        code, _out, err = run_cli("run", "--model", "resnet50-lamem", "--data", data, "--splits", "1",
                                  "--preset", "smoke", "--pretrained", "none", "--out", cfg.out,
                                  "--work-dir", cfg.work_dir, "--device", "cpu")
    assert code == 2
    assert "another membench process is running this job" in err
    assert not (cfg.out / "results.csv").exists()
