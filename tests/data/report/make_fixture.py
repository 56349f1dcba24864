"""Writes the fixed leaderboard under leaderboard/ (run once; the output is committed).

Synthetic, clearly fake runs: they exist to pin the table and figure layout, not to
claim any measurement. Re-running reproduces the same bytes. The columns are those of
leaderboards written before membench recorded configurations (no config_id): the report
must keep reading such files, deriving each run's configuration.
"""

from pathlib import Path

import numpy as np
from scipy.stats import spearmanr

from membench.results.leaderboard import csv_text

HERE = Path(__file__).parent / "leaderboard"
IMAGES = [f"img{i:03d}.jpg" for i in range(1, 31)]
# run_id, model, dataset, preset, splits, noise, params_total, params_used, timestamp
RUNS = [
    ("r50-old", "resnet50-lamem", "demo", "smoke", (1, 2), 0.30, 23_510_081, 23_510_081, "2026-11-28T10:00:00+00:00"),
    ("r50-new", "resnet50-lamem", "demo", "smoke", (1, 2, 3), 0.05, 23_510_081, 23_510_081, "2026-11-29T05:00:00+00:00"),
    ("r50-paper", "resnet50-lamem", "demo", "paper", (1,), 0.04, 23_510_081, 23_510_081, "2026-11-29T05:10:00+00:00"),
    ("amnet-1", "amnet", "demo", "smoke", (1, 2, 3), 0.08, 38_880_493, 21_866_757, "2026-11-29T05:20:00+00:00"),
    ("ours-1", "ours", "demo", "smoke", (1,), 0.06, 130_186_148, 130_186_148, "2026-11-29T05:30:00+00:00"),
    ("amnet-lamem", "amnet", "lamem", "paper", (1,), 0.07, 38_880_493, 21_866_757, "2026-11-29T06:00:00+00:00"),
]
LEGACY_COLUMNS = (
    "run_id", "model", "dataset", "split", "rho", "mse", "n_test",
    "params_total", "params_used", "params_trainable",
    "preset", "train_mode", "init", "pretrained", "epochs_run", "best_epoch", "best_val_rho",
    "device", "hardware", "seconds", "seed", "git_commit", "membench_version", "timestamp",
    "data_fingerprint", "notes",
)
NO_PREDICTIONS = {"r50-paper"}  # a run whose predictions were lost: its CI must show as missing


def main():
    rows = []
    for run_id, model, dataset, preset, splits, noise, total, used, stamp in RUNS:
        for k in splits:
            truth = np.round(np.random.default_rng([k, len(dataset)]).uniform(0.4, 1.0, len(IMAGES)), 6)
            rng = np.random.default_rng([k, len(run_id), int(noise * 100)])
            pred = np.round(truth + rng.normal(0, noise, len(IMAGES)), 6)
            if run_id not in NO_PREDICTIONS:
                path = HERE / "predictions" / run_id / f"split{k}.csv"
                path.parent.mkdir(parents=True, exist_ok=True)
                path.write_text("image,score,pred\n" + "".join(
                    f"{n},{s!r},{p!r}\n" for n, s, p in zip(IMAGES, truth.tolist(), pred.tolist())))
            rows.append({
                "run_id": run_id, "model": model, "dataset": dataset, "split": k,
                "rho": float(spearmanr(truth, pred)[0]), "mse": float(np.mean((pred - truth) ** 2)),
                "n_test": len(IMAGES), "params_total": total, "params_used": used,
                "params_trainable": used, "preset": preset, "train_mode": "full", "init": "imagenet",
                "pretrained": True, "epochs_run": 1, "best_epoch": 0, "best_val_rho": 0.5,
                "device": "cpu", "hardware": "fixture CPU (2 cores)", "seconds": 1.0, "seed": 0,
                "git_commit": "0123456789abcdef", "membench_version": "0.1.0", "timestamp": stamp,
                "data_fingerprint": f"fp-{dataset}", "notes": "synthetic fixture",
            })
    rows.sort(key=lambda r: (r["model"], r["dataset"], r["run_id"], int(r["split"])))
    (HERE / "results.csv").write_text(csv_text(rows, LEGACY_COLUMNS))
    # measured counts for a model without runs (the table takes them from here)
    (HERE / "params.csv").write_text("model,stage,params_total,params_used,params_trainable\n"
                                     "memnet,stage1,56872321,56872321,56872321\n")


if __name__ == "__main__":
    main()
