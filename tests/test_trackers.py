"""`membench run --log tensorboard|mlflow`: the training curves read back from what the
trackers wrote equal the per-epoch history of the run JSON; the end of a run names the
report command; tables are not folded when piped."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest

from membench.errors import MembenchError
from membench.results import trackers


def _run(run_cli, demo_root, board, *log):
    code, out, err = run_cli("run", "--model", "tiny-cnn", "--data", demo_root, "--dataset", "demo", "--splits", "1,2",
                             "--preset", "quick", "--out", board, *log)
    assert code == 0, err
    (run_json,) = (board / "runs").glob("*.json")
    return out, {**json.loads(run_json.read_text()), "_board": str(board)}


def _rows(run: dict) -> list[dict]:
    from membench.results.leaderboard import read_rows

    return [r for r in read_rows(Path(run["_board"]) / "results.csv") if r["run_id"] == run["run_id"]]


def _history(run: dict, split: int, key: str) -> list[tuple[int, float]]:
    return [(h["epoch"], h[key]) for h in run["split_stages"][str(split)]["stage1"]["history"]]


def test_trackers_hold_the_run_json_history(tiny_plugin, demo_root, tmp_path, run_cli):
    """One run logged to both trackers (one training run: CI time); each installed one is read back."""
    import importlib.util

    installed = [k for k in ("tensorboard", "mlflow") if importlib.util.find_spec(k) is not None]
    if not installed:
        pytest.skip("neither tensorboard nor mlflow is installed (pip install 'membench[tracking]')")
    logdir, uri = tmp_path / "tb", f"sqlite:///{tmp_path / 'mlflow.db'}"
    where = {"tensorboard": f"--log=tensorboard={logdir}", "mlflow": f"--log=mlflow={uri}"}
    out, run = _run(run_cli, demo_root, tmp_path / "board", *(where[k] for k in installed))
    assert set(run["split_stages"]) == {"1", "2"}  # every split's curves, not only the last one's
    if "tensorboard" in installed:
        assert f"tensorboard --logdir {logdir}" in out
        _check_tensorboard(logdir / run["run_id"], run)
    if "mlflow" in installed:
        assert f"mlflow ui --backend-store-uri {uri}" in out
        _check_mlflow(uri, run)


def _check_tensorboard(logdir, run):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    for split in (1, 2):
        (folder,) = {p.parent for p in (logdir / f"split{split}").glob("events.out.tfevents.*")}
        events = EventAccumulator(str(folder)).Reload()
        for key in ("val_rho", "val_mse", "train_loss", "lr"):
            logged = [(e.step, e.value) for e in events.Scalars(f"stage1/{key}")]
            expected = _history(run, split, key)
            assert len(logged) == len(expected) == 4  # the quick preset's 4 epochs
            for (step, value), (epoch, want) in zip(logged, expected):
                assert step == epoch and value == pytest.approx(want, rel=1e-6, abs=1e-7)  # float32 events
        assert events.Tensors("configuration/text_summary")[0].tensor_proto.string_val[0].decode() == "preset=quick"


def _check_mlflow(uri, run):
    from mlflow.tracking import MlflowClient

    client = MlflowClient(tracking_uri=uri)
    found = client.search_runs([client.get_experiment_by_name("membench").experiment_id])
    by_split = {int(r.data.params["split"]): r for r in found}
    assert sorted(by_split) == [1, 2]
    for split, mlrun in by_split.items():
        assert mlrun.info.status == "FINISHED"
        assert mlrun.data.tags["configuration"] == "preset=quick"
        assert mlrun.data.params["membench.run_id"] == run["run_id"]
        for key in ("val_rho", "val_mse", "train_loss", "lr"):
            logged = [(m.step, m.value) for m in client.get_metric_history(mlrun.info.run_id, f"stage1/{key}")]
            assert sorted(logged) == _history(run, split, key)  # float64: exact
        assert client.get_metric_history(mlrun.info.run_id, "test/rho")[0].value == pytest.approx(
            float(next(r for r in _rows(run) if r["split"] == str(split))["rho"]), abs=1e-12)


def test_log_values_are_checked_before_any_work():
    assert trackers.parse(["tensorboard", "mlflow=http://127.0.0.1:5000,tensorboard=/tmp/x"]) == [
        trackers.Tracker("tensorboard"), trackers.Tracker("mlflow", "http://127.0.0.1:5000"),
        trackers.Tracker("tensorboard", "/tmp/x")]
    with pytest.raises(MembenchError, match="unknown tracker 'wandb'; choose from tensorboard, mlflow"):
        trackers.parse(["wandb"])


def test_a_missing_tracker_package_is_one_line_before_training(tiny_plugin, demo_root, tmp_path, run_cli,
                                                               monkeypatch):
    import importlib.util

    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name == "mlflow" else real(name, *a))
    code, _, err = run_cli("run", "--model", "tiny-cnn", "--data", demo_root, "--dataset", "demo", "--splits", "1",
                           "--preset", "smoke", "--out", tmp_path / "board", "--log", "mlflow")
    assert code == 2 and err.count("\n") == 1
    assert "--log mlflow needs the mlflow package: pip install 'membench[tracking]'" in err
    assert not (tmp_path / "board" / "results.csv").exists()


def test_nan_epochs_are_left_out_not_logged():
    seen = []

    class Sink:
        def scalar(self, key, value, step):
            seen.append((key, value, step))

    log = trackers.JobLog([], "r", "m", "d", 1)
    log.sinks = [Sink()]
    log.epoch("stage1", {"epoch": 1, "lr": 0.1, "train_loss": 1.0, "val_rho": math.nan, "val_mse": 0.5})
    assert [k for k, _, _ in seen] == ["stage1/train_loss", "stage1/val_mse", "stage1/lr"]


def test_run_ends_naming_the_report_and_prints_full_width_when_piped(tiny_plugin, demo_root, tmp_path, run_cli):
    board = tmp_path / "my board"
    code, out, err = run_cli("run", "--model", "tiny-cnn", "--data", demo_root, "--dataset", "demo", "--splits", "1",
                             "--preset", "smoke", "--out", board, "--model-option", "width=4")
    assert code == 0, err
    assert f"next: membench report --leaderboard '{board}'" in out
    # captured (not a terminal): the configuration sits on one line, not folded to 80 columns
    line = next(line for line in out.splitlines() if "tiny-cnn" in line and "demo" in line)
    assert "preset=smoke; width=4" in line and len(line) > 80
