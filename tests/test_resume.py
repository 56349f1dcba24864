"""Interrupted runs lose nothing: a `membench run` killed (SIGKILL) at any point, or
stopped with Ctrl-C, finishes with `--resume` with exactly the test metrics and per-image
predictions of an uninterrupted run with the same seed; a NaN loss stops the run naming
stage, epoch and step and keeps the last good checkpoint.

The killed runs are real `python -m membench` processes; they stop themselves at exact
places through the MEMBENCH_TEST_KILL_AT hook (membench/util/testhooks.py). A tiny model
(registered by a plugin written here, found through its entry point) keeps it fast.
"""

from __future__ import annotations

import csv
import os
import signal
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from membench import plugins

PLUGIN = textwrap.dedent('''
    """Test models: a 309-parameter CNN; `tiny-chain` chains `tiny-one` and has two more
    stages of its own. `--model-option nan_at=N` makes the N-th training loss NaN."""
    from membench import ModelSpec, Option, Preprocess, Stage, hookimpl


    def build(ctx):
        import contextlib

        import torch
        import torch.nn as nn
        import torch.nn.functional as F

        from membench.weights.resolve import load_state_dict

        class Tiny(nn.Module):
            def __init__(self):
                super().__init__()
                self.trunk = nn.Sequential(nn.Conv2d(3, 4, 5, stride=4), nn.ReLU(),
                                           nn.AdaptiveAvgPool2d(1), nn.Flatten())
                self.head = nn.Linear(4, 1)
                self.nan_at = int(ctx.options.get("nan_at", 0))
                self.steps = 0

            def forward(self, x):
                return self.head(self.trunk(x)).squeeze(1)

            def loss(self, pred, target):
                self.steps += 1
                loss = F.mse_loss(pred, target)
                return loss * float("nan") if self.steps == self.nan_at else loss

        with torch.device("meta") if ctx.meta else contextlib.nullcontext():
            model = Tiny()
        if ctx.upstream and not ctx.meta:
            model.load_state_dict(load_state_dict(list(ctx.upstream.values())[-1]))
        return model


    PRE = Preprocess(size=(32, 32), train="paper")


    @hookimpl
    def register_models(register):
        register(ModelSpec(name="tiny-one", build=build, preprocess=PRE, summary="test model",
                           recipe=(Stage(name="fit", epochs=2, batch_size=4, lr=1e-2),),
                           options=(Option("nan_at", "int", default=0, help="training step whose loss is NaN"),)))
        register(ModelSpec(name="tiny-chain", build=build, preprocess=PRE, summary="test model",
                           recipe=(Stage(name="base", model="tiny-one"),
                                   Stage(name="tune", epochs=2, batch_size=4, lr=5e-3, frozen=("trunk",)),
                                   Stage(name="polish", epochs=1, batch_size=4, lr=1e-3))))
''')


def write_plugin(root: Path) -> Path:
    """The plugin module plus a dist-info whose entry point (group "membench") names it."""
    root.mkdir(parents=True, exist_ok=True)
    (root / "membench_robust_tiny.py").write_text(PLUGIN)
    info = root / "membench_robust_tiny-0.1.dist-info"
    info.mkdir(exist_ok=True)
    (info / "METADATA").write_text("Metadata-Version: 2.1\nName: membench-robust-tiny\nVersion: 0.1\n")
    (info / "entry_points.txt").write_text("[membench]\nrobust_tiny = membench_robust_tiny\n")
    return root


def write_dataset(root: Path, n: int = 32, splits: int = 2) -> Path:
    """LaMem layout, 64x64 JPEGs whose red disc grows with the score; 16/6/10 per split."""
    import numpy as np
    from PIL import Image, ImageDraw

    rng = np.random.RandomState(0)
    (root / "images").mkdir(parents=True)
    (root / "splits").mkdir()
    scores = rng.uniform(0.3, 0.95, n)
    for i in range(n):
        im = Image.new("RGB", (64, 64), tuple(int(c) for c in rng.randint(30, 200, 3)))
        r = 4 + 24 * scores[i]
        ImageDraw.Draw(im).ellipse([32 - r, 32 - r, 32 + r, 32 + r], fill=(230, 30, 30))
        im.save(root / "images" / f"{i + 1:08d}.jpg")
    for k in range(1, splits + 1):
        order = rng.permutation(n)
        for part, idx in (("train", order[:16]), ("val", order[16:22]), ("test", order[22:])):
            lines = "".join(f"{i + 1:08d}.jpg {scores[i]:.6f}\n" for i in idx)
            (root / "splits" / f"{part}_{k}.txt").write_text(lines)
    return root


@pytest.fixture(scope="module")
def plugin_dir(tmp_path_factory):
    return write_plugin(tmp_path_factory.mktemp("plugin"))


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    return write_dataset(tmp_path_factory.mktemp("lamem") / "lamem")


@pytest.fixture(scope="module")
def tiny_models(plugin_dir):
    """The tiny plugin visible to in-process CLI calls (through its entry point)."""
    with pytest.MonkeyPatch.context() as mp:
        mp.syspath_prepend(str(plugin_dir))
        plugins._reset_for_tests()
        yield
    plugins._reset_for_tests()


def run_args(data: Path, base: Path, model: str = "tiny-chain", splits: str = "1,2", *extra) -> list[str]:
    return ["run", "--model", model, "--data", str(data), "--splits", splits, "--out", str(base / "lb"),
            "--work-dir", str(base / "work"), "--pretrained", "none", "--device", "cpu", *extra]


def cli(args: list[str], capsys) -> tuple[int, str, str]:
    from membench.cli import main

    code = main(args)
    out, err = capsys.readouterr()
    return code, out, err


def spawn(args: list[str], plugin_dir: Path, home: Path, **env) -> subprocess.CompletedProcess:
    """`python -m membench ARGS` in a fresh process that finds the tiny plugin."""
    full_env = {**os.environ, "MEMBENCH_HOME": str(home), **env,
                "PYTHONPATH": os.pathsep.join([str(plugin_dir), os.environ.get("PYTHONPATH", "")])}
    return subprocess.run([sys.executable, "-m", "membench", *args], env=full_env, capture_output=True,
                          text=True, timeout=300, start_new_session=True)


def outcome(lb: Path) -> dict:
    """Everything an interruption must not change: the metrics of each (model, split),
    the training trajectory that produced them, and every per-image prediction."""
    with open(lb / "results.csv", newline="") as f:
        rows = list(csv.DictReader(f))
    keys = ("rho", "mse", "n_test", "epochs_run", "best_epoch", "best_val_rho", "params_total")
    out = {(r["model"], r["split"]): {k: r[k] for k in keys} for r in rows}
    assert len(out) == len(rows), "a (model, split) row is duplicated"
    for r in rows:
        out[(r["model"], r["split"])]["predictions"] = (
            lb / "predictions" / r["run_id"] / f"split{r['split']}.csv").read_text()
    return out


@pytest.fixture(scope="module")
def reference(tiny_models, data, tmp_path_factory):
    """An uninterrupted run, in this process."""
    from membench.cli import main

    base = tmp_path_factory.mktemp("reference")
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("MEMBENCH_HOME", str(base / "home"))
        assert main(run_args(data, base)) == 0
    result = outcome(base / "lb")
    assert set(result) == {("tiny-one", "1"), ("tiny-one", "2"), ("tiny-chain", "1"), ("tiny-chain", "2")}
    return result


def assert_clean(lb: Path) -> None:
    leftovers = [p for p in lb.rglob("*") if p.name.endswith(".tmp")]
    assert not leftovers, f"temporary files left behind: {leftovers}"


# Kill points in the order a run reaches them, each a different kind of moment.
CHAIN = (
    "step:fit:2:3",                      # mid-epoch (tiny-one, split 1)
    "stage-done:tiny-chain:tune:1",      # between two stages of tiny-chain
    "write:results.csv",                 # while writing results (temp file written, not renamed)
    "job-done:tiny-chain:1",             # between splits
)


def test_sigkill_at_successive_points_then_resume_matches_uninterrupted(
        reference, data, plugin_dir, tmp_path, capsys):
    args = run_args(data, tmp_path, "tiny-chain", "1,2", "--resume")
    for label in CHAIN:
        proc = spawn(args, plugin_dir, tmp_path / "home", MEMBENCH_TEST_KILL_AT=label)
        assert proc.returncode == -signal.SIGKILL, f"{label} was never reached:\n{proc.stderr[-2000:]}"
    fit = tmp_path / "work"
    assert list(fit.glob("tiny-one__*/split1/result.json")), "split 1 of tiny-one should have finished"
    assert not list(fit.glob("tiny-chain__*/split2/result.json"))
    code, _out, err = cli(args, capsys)
    assert code == 0, err
    assert outcome(tmp_path / "lb") == reference
    assert_clean(tmp_path / "lb")


def test_ctrl_c_saves_a_checkpoint_mid_epoch_and_resume_matches(reference, data, plugin_dir, tmp_path, capsys):
    """Ctrl-C as a terminal sends it: to the whole process group, data loader workers
    included. The resumed run uses no workers: the numbers must not depend on that."""
    from membench.engine.stage import load_checkpoint

    args = run_args(data, tmp_path)
    proc = spawn([*args, "--workers", "2"], plugin_dir, tmp_path / "home", MEMBENCH_TEST_KILL_AT="step:fit:2:3",
                 MEMBENCH_TEST_KILL_SIGNAL="INT", MEMBENCH_TEST_KILL_GROUP="1")
    assert proc.returncode == 130, proc.stderr
    lines = [ln for ln in proc.stderr.splitlines() if ln.strip()]
    # the "fit (2 epochs ...)" line, the stage's time estimate after epoch 1, then the message
    assert lines[0].startswith("tiny-one split 1: fit (2 epochs"), proc.stderr
    estimate = " ".join(" ".join(lines[1:-1]).split())
    assert estimate.startswith("fit: epoch 1/2 took ") and estimate.endswith("in 10 epochs)"), proc.stderr
    assert "interrupted in fit, epoch 2, step 3" in lines[-1] and "--resume" in lines[-1]
    assert "Traceback" not in proc.stderr
    (last,) = (tmp_path / "work").glob("tiny-one__*/split1/fit/last.pt")
    state = load_checkpoint(last)
    assert (state["epoch"], state["step"], len(state["losses"])) == (1, 2, 2)

    # Running again without --resume must not throw that checkpoint away.
    code, _out, err = cli(args, capsys)
    assert code == 2 and "--resume" in err and "interrupted run" in err
    assert last.is_file()

    code, _out, err = cli([*args, "--resume"], capsys)
    assert code == 0, err
    assert outcome(tmp_path / "lb") == reference


def test_nan_loss_stops_naming_stage_epoch_step_and_keeps_last_checkpoint(tiny_models, data, tmp_path, capsys):
    from membench.engine.stage import load_checkpoint

    # 16 training images in batches of 4: the 6th loss is epoch 2, step 2.
    code, out, err = cli(run_args(data, tmp_path, "tiny-one", "1", "--model-option", "nan_at=6"), capsys)
    assert code == 2
    message = err.strip().splitlines()[-1]
    assert message.startswith("membench: error: ")
    assert "loss became nan at stage fit, epoch 2, step 2" in message
    assert "last good checkpoint is kept" in message and "1 epoch(s) finished" in message
    assert "Traceback" not in err
    (last,) = (tmp_path / "work").glob("tiny-one__*/split1/fit/last.pt")
    state = load_checkpoint(last)
    assert state["epoch"] == 1 and state.get("step", 0) == 0
    assert all(bool(v.isfinite().all()) for v in state["model"].values())
    assert not (tmp_path / "lb" / "results.csv").exists()


def test_resume_of_a_finished_run_recomputes_nothing(reference, data, tmp_path, capsys, monkeypatch):
    from membench.engine import stage

    code, _out, err = cli(run_args(data, tmp_path, "tiny-one", "1"), capsys)
    assert code == 0, err

    def no_training(*a, **k):
        raise AssertionError("a finished job was trained again")

    monkeypatch.setattr(stage, "train_stage", no_training)
    code, _out, err = cli(run_args(data, tmp_path, "tiny-one", "1", "--resume"), capsys)
    assert code == 0, err
    assert "finished earlier, reusing" in err
    assert outcome(tmp_path / "lb")[("tiny-one", "1")] == reference[("tiny-one", "1")]


@pytest.mark.slow
@pytest.mark.parametrize("label", [
    "step:fit:1:1",                      # before the first step: nothing saved yet
    "checkpoint:fit:1",                  # best.pt written, last.pt not yet
    "stage-done:tiny-chain:base:2",      # after a chained stage
    "stage-done:tiny-chain:polish:1",    # after the last stage, before testing
    "result-saved:tiny-chain:1",         # result.json written, leaderboard not yet
    "leaderboard:predictions",           # predictions written, results.csv not yet
    "write:summary.csv",                 # results.csv replaced, summary.csv half-written
    "stage-done:tiny-one:fit:2",         # a job done, its result not yet saved
])
def test_sigkill_at_each_point_then_resume_matches_uninterrupted(
        label, reference, data, plugin_dir, tmp_path, capsys):
    args = run_args(data, tmp_path, "tiny-chain", "1,2", "--resume")
    proc = spawn(args, plugin_dir, tmp_path / "home", MEMBENCH_TEST_KILL_AT=label)
    assert proc.returncode == -signal.SIGKILL, f"{label} was never reached:\n{proc.stderr[-2000:]}"
    code, _out, err = cli(args, capsys)
    assert code == 0, err
    assert outcome(tmp_path / "lb") == reference
    assert_clean(tmp_path / "lb")
