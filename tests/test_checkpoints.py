"""Frugal checkpoints and `membench runs`: a stage's checkpoints hold what it trains (frozen
parts referenced by the file they came from and its sha256), last.pt does not outlive a
finished stage, smoke/quick runs keep nothing after success (yet a chained stage 1 stays
while stage 2 needs it), and `membench runs` lists and cleans job directories."""

from __future__ import annotations

import csv
import hashlib
import json
from pathlib import Path

import pytest
import torch

from membench.engine.checkpoints import Frugal, digest, frozen_names, load_trained
from membench.errors import MembenchError


def rows(out: Path) -> list[dict]:
    with open(out / "results.csv", newline="") as f:
        return list(csv.DictReader(f))


def chain_args(demo_root, tmp_path, *extra):
    return ["run", "--model", "tiny-chain", "--data", demo_root, "--dataset", "demo", "--splits", "1",
            "--out", tmp_path / "lb", "--work-dir", tmp_path / "work", *extra]


def job_dirs(work: Path, model: str) -> list[Path]:
    return sorted(work.glob(f"{model}__*/split1"))


def test_checkpoints_hold_the_trained_part_and_reference_the_frozen_source(tiny_plugin, demo_root, tmp_path,
                                                                             run_cli):
    code, _, err = run_cli(*chain_args(demo_root, tmp_path, "--keep-last"))
    assert code == 0, err
    (stage1,) = job_dirs(tmp_path / "work", "tiny-cnn")
    (chain,) = job_dirs(tmp_path / "work", "tiny-chain")
    source = stage1 / "stage1" / "best.pt"
    best = torch.load(chain / "stage2" / "best.pt", weights_only=False)
    last = torch.load(chain / "stage2" / "last.pt", weights_only=False)
    for saved in (best, last):
        assert not any(k.startswith("features.") and not k.split(".")[-1].startswith("running")
                       and k.split(".")[-1] != "num_batches_tracked" for k in saved["model"]), \
            "frozen parameters were saved again"
        assert {"head.weight", "head.bias"} <= set(saved["model"])
        ref = saved["frozen"]
        assert ref["prefixes"] == ["features"]
        assert ref["sources"]["stage1"]["path"] == str(source)
        assert ref["sources"]["stage1"]["sha256"] == hashlib.sha256(source.read_bytes()).hexdigest()
        # the digest is that of stage 1's trained features (what stage 2 froze)
        whole = torch.load(source, weights_only=False)["model"]
        h = hashlib.sha256()
        for name in [k for k in whole if k.startswith("features.") and "running" not in k
                     and "num_batches" not in k]:  # in the model's own order
            t = whole[name].contiguous()
            h.update(f"{name}|{t.dtype}|{tuple(t.shape)}|".encode())
            h.update(t.reshape(-1).view(torch.uint8).numpy().tobytes())
        assert ref["digest"] == h.hexdigest()
    assert set(last["optimizer"]["state"]) == {0, 1}  # Adam moments of head.weight and head.bias only
    # a stage-1 job that another model builds on keeps its whole best.pt
    assert "frozen" not in torch.load(source, weights_only=False)
    # --keep-last kept it; the default removes a finished stage's last.pt
    code, _, err = run_cli(*chain_args(demo_root, tmp_path / "b"))
    assert code == 0, err
    (chain_b,) = job_dirs(tmp_path / "b" / "work", "tiny-chain")
    assert (chain_b / "stage2" / "best.pt").is_file() and not (chain_b / "stage2" / "last.pt").exists()
    assert json.loads((chain_b / "stage2" / "stage.json").read_text())["outcome"]["epochs_run"] == 2


def test_load_trained_refuses_other_frozen_parts():
    def model(seed):
        torch.manual_seed(seed)
        return torch.nn.Sequential(torch.nn.Linear(3, 4), torch.nn.Linear(4, 1))

    trained = model(0)
    frugal = Frugal(trained, ("0",))
    assert frozen_names(trained, ("0",)) == ["0.weight", "0.bias"]
    saved = frugal.entry(trained)
    assert set(saved["model"]) == {"1.weight", "1.bias"}
    same = model(0)
    torch.nn.init.zeros_(same[1].weight)
    load_trained(same, saved, Path("x.pt"))
    assert torch.equal(same[1].weight, trained[1].weight)
    assert digest(same, ["0.weight", "0.bias"]) == saved["frozen"]["digest"]
    with pytest.raises(MembenchError, match="frozen parts rebuilt now differ"):
        load_trained(model(1), saved, Path("x.pt"))


def test_killed_in_the_frugal_stage_then_resumed_gives_identical_metrics(tiny_plugin, demo_root, tmp_path,
                                                                          run_cli, monkeypatch):
    from membench.util import testhooks

    code, _, err = run_cli(*chain_args(demo_root, tmp_path / "ref"))
    assert code == 0, err
    reference = {r["model"]: (r["rho"], r["mse"], r["best_val_rho"]) for r in rows(tmp_path / "ref" / "lb")}

    # stop at the first step of stage 2's second epoch (its frugal last.pt written), as a kill would
    def stop(label):
        if label == "step:stage2:2:1":
            raise KeyboardInterrupt
    monkeypatch.setattr(testhooks, "kill_point", stop)
    monkeypatch.setattr("membench.engine.stage.kill_point", stop)
    code, _, err = run_cli(*chain_args(demo_root, tmp_path / "run"))
    assert code == 130, err
    (chain,) = job_dirs(tmp_path / "run" / "work", "tiny-chain")
    assert "frozen" in torch.load(chain / "stage2" / "last.pt", weights_only=False)
    monkeypatch.undo()
    code, _, err = run_cli(*chain_args(demo_root, tmp_path / "run", "--resume"))
    assert code == 0, err
    resumed = {r["model"]: (r["rho"], r["mse"], r["best_val_rho"]) for r in rows(tmp_path / "run" / "lb")}
    assert resumed == reference


def test_smoke_keeps_no_checkpoints_after_success_but_keeps_stage1_while_needed(tiny_plugin, demo_root, tmp_path,
                                                                               run_cli, monkeypatch):
    import membench.engine.runner as runner_module

    seen = {}
    real = runner_module.Runner._chain

    def spy(self, stage, k, ctx, cfg):
        out = real(self, stage, k, ctx, cfg)
        seen[k] = Path(ctx.upstream[stage.name]).is_file()  # stage 1's best.pt exists when stage 2 starts
        return out
    monkeypatch.setattr(runner_module.Runner, "_chain", spy)
    args = ["run", "--model", "tiny-chain", "--data", demo_root, "--dataset", "demo", "--splits", "1,2",
            "--preset", "smoke", "--out", tmp_path / "lb", "--work-dir", tmp_path / "work"]
    code, _, err = run_cli(*args)
    assert code == 0, err
    assert seen == {1: True, 2: True}
    assert not list((tmp_path / "work").rglob("*.pt")), "smoke run kept checkpoints"
    assert len(list((tmp_path / "work").glob("*/split*/result.json"))) == 4
    first = {(r["model"], r["split"]): (r["rho"], r["mse"]) for r in rows(tmp_path / "lb")}

    # stage 1 run on its own first (checkpoints removed), then the chained model with --resume:
    # the finished stage-1 job cannot serve without its best.pt, so it runs again, same numbers
    base = tmp_path / "c"
    one = [a if a != "tiny-chain" else "tiny-cnn" for a in args[:-4]] + ["--out", base / "lb", "--work-dir",
                                                                          base / "work"]
    code, _, err = run_cli(*one)
    assert code == 0, err
    assert not list((base / "work").rglob("*.pt"))
    code, _, err = run_cli(*args[:-4], "--out", base / "lb", "--work-dir", base / "work", "--resume")
    assert code == 0, err
    assert "checkpoints were removed" in err
    again = {(r["model"], r["split"]): (r["rho"], r["mse"]) for r in rows(base / "lb")}
    assert again == first

    # --keep-checkpoints keeps them (best.pt of every stage; last.pt of finished stages is gone)
    code, _, err = run_cli(*args[:-4], "--out", tmp_path / "k" / "lb", "--work-dir", tmp_path / "k" / "work",
                           "--keep-checkpoints")
    assert code == 0, err
    kept = sorted(p.relative_to(tmp_path / "k" / "work").parts[-2:] for p in (tmp_path / "k" / "work").rglob("*.pt"))
    assert kept == [("stage1", "best.pt")] * 2 + [("stage2", "best.pt")] * 2


def test_a_moved_work_directory_keeps_its_finished_jobs_and_their_checkpoints(tiny_plugin, demo_root, tmp_path,
                                                                              run_cli):
    """result.json records absolute paths: moved (or mounted elsewhere), a kept checkpoint is
    found below the job and serves the chained model; `runs` and the runner agree on it."""
    import shutil

    common = ["--data", demo_root, "--dataset", "demo", "--splits", "1", "--preset", "smoke", "--out", tmp_path / "lb"]
    code, _, err = run_cli("run", "--model", "tiny-cnn", *common, "--work-dir", tmp_path / "work",
                           "--keep-checkpoints")
    assert code == 0, err
    shutil.move(tmp_path / "work", tmp_path / "moved")
    code, out, err = run_cli("runs", "--work-dir", tmp_path / "moved", "--format", "json")
    assert code == 0 and [r["checkpoints"] for r in json.loads(out)] == ["kept"], err
    code, _, err = run_cli("run", "--model", "tiny-chain", *common, "--work-dir", tmp_path / "moved", "--resume",
                           "--keep-checkpoints")
    assert code == 0, err
    said = " ".join(err.split())
    assert "checkpoints were removed" not in said and "tiny-cnn split 1: finished earlier, reusing" in said


def test_runs_lists_status_and_size_and_cleans_finished_and_orphaned(tiny_plugin, demo_root, tmp_path, run_cli):
    work = tmp_path / "work"
    code, _, err = run_cli("run", "--model", "tiny-cnn", "--data", demo_root, "--dataset", "demo", "--splits", "1",
                           "--out", tmp_path / "lb", "--work-dir", work, "--keep-checkpoints", "--preset", "smoke")
    assert code == 0, err
    (finished,) = job_dirs(work, "tiny-cnn")
    interrupted = work / "tiny-cnn__demo__paper__s0__0123456789" / "split2"
    (interrupted / "stage1").mkdir(parents=True)
    (interrupted / "stage1" / "last.pt").write_bytes(b"x" * 1000)
    orphaned = work / "tiny-cnn__demo__paper__s0__0123456789" / "split3"
    orphaned.mkdir()
    (orphaned / "stage1").mkdir()

    code, out, err = run_cli("runs", "--work-dir", work, "--format", "json")
    assert code == 0, err
    listed = {(r["run"], r["split"]): r for r in json.loads(out)}
    assert {k: r["status"] for k, r in listed.items()} == {
        (finished.parent.name, 1): "finished",
        (interrupted.parent.name, 2): "interrupted", (orphaned.parent.name, 3): "orphaned"}
    assert listed[(finished.parent.name, 1)]["bytes"] == sum(p.stat().st_size for p in finished.rglob("*")
                                                             if p.is_file())
    assert listed[(interrupted.parent.name, 2)]["bytes"] == 1000

    code, out, err = run_cli("runs", "clean", "--dry-run", "--work-dir", work)
    assert code == 0 and "would remove 2 job(s)" in out
    assert finished.is_dir() and orphaned.is_dir()
    code, out, err = run_cli("runs", "clean", "--work-dir", work)
    assert code == 0 and "removed 2 job(s)" in out
    assert not finished.exists() and not orphaned.exists() and not finished.parent.exists()
    assert (interrupted / "stage1" / "last.pt").is_file()  # resumable work is never removed
    code, out, _ = run_cli("runs", "--work-dir", work, "--format", "csv")
    assert [r["status"] for r in csv.DictReader(out.splitlines())] == ["interrupted"]
    assert rows(tmp_path / "lb")  # the leaderboard rows stay


def test_runs_skips_a_running_job(tmp_path):
    from membench.engine.job import job_lock
    from membench.results import runs

    job = tmp_path / "work" / "m__demo__smoke__s0__0000000000" / "split1"
    job.mkdir(parents=True)
    (job / "result.json").write_text("{}")
    with job_lock(job, wait=False):
        assert [r.status for r in runs.scan(tmp_path / "work")] == ["running"]
        assert runs.clean(tmp_path / "work") == [] and job.is_dir()
    assert [r.status for r in runs.clean(tmp_path / "work")] == ["finished"] and not job.exists()


def test_runs_on_a_fresh_machine_lists_nothing_but_a_missing_explicit_dir_is_an_error(tmp_path, monkeypatch,
                                                                                     run_cli):
    monkeypatch.setenv("MEMBENCH_HOME", str(tmp_path / "home"))
    code, out, err = run_cli("runs")
    assert code == 0 and "no runs yet" in out, err
    code, out, err = run_cli("runs", "clean", "--work-dir", tmp_path / "typo")
    assert code == 2 and "work directory does not exist" in err and "typo" in err
