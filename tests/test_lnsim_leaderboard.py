"""The committed LNSIM leaderboard (leaderboards/lnsim): every ρ in its tables recomputed
from the committed per-image predictions; with MEMBENCH_LNSIM set, ResMem's zero-shot
predictions of split 1 recomputed from the photographs."""

from __future__ import annotations

import json
import os
import statistics
from pathlib import Path

import numpy as np
import pytest
from scipy.stats import spearmanr

from membench.results.leaderboard import read_rows

BOARD = Path(__file__).resolve().parents[1] / "leaderboards" / "lnsim"


def predictions(run_id: str, k: int) -> list[dict]:
    return read_rows(BOARD / "predictions" / run_id / f"split{k}.csv")


def split_rho(run_id: str, k: int) -> float:
    rows = predictions(run_id, k)
    return float(spearmanr([float(r["pred"]) for r in rows], [float(r["score"]) for r in rows])[0])


def test_every_committed_rho_is_recomputed_from_the_predictions():
    results = read_rows(BOARD / "results.csv")
    assert results, "leaderboards/lnsim/results.csv holds the measured LNSIM rows"
    by_run: dict[str, list[dict]] = {}
    for r in results:
        assert r["dataset"] == "lnsim"
        assert float(r["rho"]) == pytest.approx(split_rho(r["run_id"], int(r["split"])), abs=1e-12)
        assert int(r["n_test"]) == len(predictions(r["run_id"], int(r["split"])))
        by_run.setdefault(r["run_id"], []).append(r)
    table = {r["run_id"]: r for r in read_rows(BOARD / "runs_lnsim.csv") if r["kind"] == "measured"}
    assert set(table) == set(by_run)
    markdown = (BOARD / "runs_lnsim.md").read_text()
    for run_id, rows in by_run.items():
        mean = statistics.fmean(split_rho(run_id, int(r["split"])) for r in rows)
        assert float(table[run_id]["rho_mean"]) == pytest.approx(mean, abs=1e-12)
        assert f"| {table[run_id]['label']} | {mean:.3f}" in markdown
    # the human ceiling comes from the .mat files (stored in the run JSON by the lnsim plugin)
    ceilings = {json.loads(p.read_text())["dataset"].get("human_consistency") for p in (BOARD / "runs").glob("*.json")}
    assert len(ceilings) == 1 and 0.5 < ceilings.pop() < 1.0


def test_every_committed_row_holds_the_sha256_of_its_predictions():
    """So a changed prediction file is refused when read back (membench.results.leaderboard),
    never scored as if it were the one measured."""
    import hashlib

    from membench.results.leaderboard import load_runs

    for r in read_rows(BOARD / "results.csv"):
        path = BOARD / "predictions" / r["run_id"] / f"split{int(r['split'])}.csv"
        assert r["predictions_sha256"] == hashlib.sha256(path.read_bytes()).hexdigest(), path
    for run in load_runs(BOARD):
        for k in run.splits:
            run.read_predictions(k)  # checked against that sha256


def test_fine_tuned_vs_zero_shot_comparison_is_the_committed_one():
    from membench.report import compare

    rows = read_rows(BOARD / "compare_lnsim.csv")
    for r in rows:
        splits = [int(k) for k in r["splits"].split(",")]
        got = compare.compare_predictions("a", "b", "lnsim", {
            k: (BOARD / "predictions" / r["a_run_id"] / f"split{k}.csv",
                BOARD / "predictions" / r["b_run_id"] / f"split{k}.csv") for k in splits}, n_boot=20, seed=0)
        assert got.rho_a == pytest.approx(float(r["rho_a"]), abs=1e-12)
        assert got.rho_b == pytest.approx(float(r["rho_b"]), abs=1e-12)


def _zero_shot_run() -> str:
    runs = {r["run_id"] for r in read_rows(BOARD / "results.csv")
            if r["model"] == "resmem" and r["train_mode"] == "none" and r["split"] == "1"}
    assert len(runs) == 1
    return runs.pop()


@pytest.mark.realdata
def test_zero_shot_split1_reproduces_the_committed_predictions():
    """Rescore N (default 24, MEMBENCH_LNSIM_N=0: all 527) of split 1's test images with
    ResMem's released weights exactly as `membench run --train none` does, and compare with
    the committed predictions (float rounding of another batch composition only: 1e-5)."""
    root = os.environ.get("MEMBENCH_LNSIM")
    if not root:
        pytest.skip("set MEMBENCH_LNSIM to the LNSIM release (Image_data/, Random_splits/) to rerun split 1")
    pytest.importorskip("resmem", reason="ResMem's weights come with the resmem package")
    from membench import registry
    from membench.engine.crosseval import preprocess_of
    from membench.engine.device import resolve_device
    from membench.engine.inference import predict
    from membench.spec import BuildContext
    from membench_plugins.datasets.lnsim import open_lnsim

    run_id = _zero_shot_run()
    committed = {r["image"]: (float(r["score"]), float(r["pred"])) for r in predictions(run_id, 1)}
    split = open_lnsim(Path(root)).load_split(1)
    # same split, same images, same scores as the committed run
    assert [s.name for s in split.test] == list(committed)
    assert np.allclose([s.score for s in split.test], [v[0] for v in committed.values()], rtol=0, atol=1e-12)
    n = int(os.environ.get("MEMBENCH_LNSIM_N", "24")) or len(split.test)
    samples = split.test[:n]
    provenance = json.loads((BOARD / "runs" / f"{run_id}.json").read_text())
    spec = registry.get_model("resmem")
    model = spec.builder()(BuildContext(pretrained=True, options={}, device="cpu"))
    got = predict(model, samples, preprocess_of(provenance, BOARD), resolve_device("cpu"), batch_size=8)
    np.testing.assert_allclose(got, [committed[s.name][1] for s in samples], rtol=0, atol=1e-5)
