"""Cross-dataset evaluation (`membench evaluate`) and the transfer matrix of `membench report`,
on generated data with the tiny model: two training datasets, each run scored on the other."""

from __future__ import annotations

import csv
import json
import re
import statistics
from pathlib import Path

import pytest
from scipy.stats import spearmanr

from membench.data.demo import generate
from membench.results.leaderboard import read_rows

pytestmark = pytest.mark.usefixtures("tiny_plugin")


def demo_as_csv(root: Path, seed: int) -> Path:
    """A demo dataset (learnable, 40 images) rewritten as a CSV dataset: images + scores.csv."""
    lamem = generate(root / "lamem", n_images=40, n_splits=1, seed=seed)
    scores = {}
    for part in ("train", "val", "test"):
        for line in (lamem / "splits" / f"{part}_1.txt").read_text().split("\n"):
            if line.strip():
                name, score = line.split()
                scores[name] = score
    with open(lamem / "images" / "scores.csv", "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["image", "score"])
        w.writerows(sorted(scores.items()))
    return lamem


@pytest.fixture
def two_datasets(tmp_path):
    """'lamem' (demo seed 0 in the LaMem layout, 2 splits) and 'csv-beta' (demo seed 1 as a
    CSV dataset, 5 seeded splits)."""
    alpha = generate(tmp_path / "alpha", n_images=40, n_splits=2, seed=0)
    beta = demo_as_csv(tmp_path / "beta", seed=1) / "images"
    return (["--data", alpha, "--dataset", "lamem"],
            ["--data", beta, "--dataset", "csv", "--dataset-option", "name=beta"])


def recomputed_rho(board: Path, run_id: str) -> tuple[float, list[int]]:
    """Mean over splits of Spearman(pred, score) from the stored per-image predictions."""
    rhos, sizes = [], []
    for path in sorted((board / "predictions" / run_id).glob("split*.csv")):
        rows = read_rows(path)
        rhos.append(spearmanr([float(r["pred"]) for r in rows], [float(r["score"]) for r in rows])[0])
        sizes.append(len(rows))
    return statistics.fmean(rhos), sizes


def run_ids(board: Path) -> dict[tuple[str, str], str]:
    return {(r["dataset"], r["trained_on"]): r["run_id"] for r in read_rows(board / "results.csv")}


def test_evaluate_and_transfer_matrix(tmp_path, two_datasets, run_cli):
    alpha, beta = two_datasets
    board, work = tmp_path / "board", tmp_path / "work"
    common = ["--out", board, "--work-dir", work]
    for data in (alpha, beta):
        code, _, err = run_cli("run", "--model", "tiny-cnn", *data, "--splits", "1,2", "--preset", "smoke",
                               "--pretrained", "none", "--keep-checkpoints", *common)
        assert code == 0, err
    rows = read_rows(board / "results.csv")
    assert {(r["dataset"], r["trained_on"]) for r in rows} == {("lamem", "lamem"), ("csv-beta", "csv-beta")}
    trained = {r["dataset"]: r["run_id"] for r in rows}

    # each run's checkpoints on the other dataset: test split k, and every image
    code, out, err = run_cli("evaluate", "--from-run", trained["lamem"], *beta, *common)
    assert code == 0, err
    assert "csv-beta" in out
    code, _, err = run_cli("evaluate", "--from-run", work / trained["csv-beta"], *alpha, "--eval-part", "all", *common)
    assert code == 0, err
    ids = run_ids(board)
    assert set(ids) == {("lamem", "lamem"), ("csv-beta", "csv-beta"), ("csv-beta", "lamem"), ("lamem", "csv-beta")}

    # checkpoint k scored on test split k of beta: the same images as beta's own test split k
    cross = ids[("csv-beta", "lamem")]
    own = ids[("csv-beta", "csv-beta")]
    for k in (1, 2):
        names = [r["image"] for r in read_rows(board / "predictions" / cross / f"split{k}.csv")]
        assert names == [r["image"] for r in read_rows(board / "predictions" / own / f"split{k}.csv")]
    # --eval-part all: every one of alpha's 40 images, for each of beta's two checkpoints
    all_rows = [r for r in read_rows(board / "results.csv") if r["run_id"] == ids[("lamem", "csv-beta")]]
    assert [int(r["n_test"]) for r in all_rows] == [40, 40]
    prov = json.loads((board / "runs" / f"{ids[('lamem', 'csv-beta')]}.json").read_text())
    assert prov["eval_part"] == "all" and prov["evaluated_from"]["run_id"] == trained["csv-beta"]
    assert prov["evaluated_from"]["checkpoints"]["1"].endswith("best.pt")
    # the evaluated rows are kept as result.json too (rows can be re-derived later)
    assert (work / cross / "split1" / "result.json").is_file()

    code, _, err = run_cli("report", "--leaderboard", board, "--n-boot", "50", "--no-figure")
    assert code == 0, err
    matrix = read_rows(board / "transfer.csv")
    assert {(r["trained_on"], r["dataset"], r["eval_part"]) for r in matrix} == {
        ("lamem", "lamem", "test"), ("lamem", "csv-beta", "test"),
        ("csv-beta", "csv-beta", "test"), ("csv-beta", "lamem", "all")}
    for r in matrix:  # every cell recomputed from the stored predictions
        rho, sizes = recomputed_rho(board, r["run_id"])
        assert float(r["rho_mean"]) == pytest.approx(rho, abs=1e-12)
        assert int(r["n_splits"]) == len(sizes) == 2
        assert float(r["rho_ci_low"]) <= float(r["rho_ci_high"])
    # every run on a dataset is labelled with what differs from the protocol, as in the tables
    labels = {r["label"] for r in read_rows(board / "runs_csv-beta.csv") if r["kind"] == "measured"}
    assert labels == {f"tiny-cnn (trained on {d}) [preset=smoke; pretrained=none]" for d in ("csv-beta", "lamem")}
    md = (board / "transfer.md").read_text()
    header = next(line for line in md.splitlines() if line.startswith("| Model"))
    assert header.split(" | ")[1:] == ["csv-beta", "lamem", "lamem (all images) |"]
    beta_row = next(line for line in md.splitlines() if line.startswith("| tiny-cnn [smoke; pretrained=none] ← lamem"))
    cell = f"{float(next(r for r in matrix if r['run_id'] == cross)['rho_mean']):.3f} ["
    assert cell in beta_row.split(" | ")[1]
    assert "README.md" in {p.name for p in board.iterdir()}
    assert "Transfer matrix" in (board / "README.md").read_text()


def test_evaluate_bad_inputs(tmp_path, two_datasets, run_cli):
    alpha, beta = two_datasets
    board, work = tmp_path / "board", tmp_path / "work"
    code, _, err = run_cli("evaluate", "--from-run", "no-such-run", *alpha, "--out", board, "--work-dir", work)
    assert code == 2 and "no finished run 'no-such-run'" in err and "Traceback" not in err
    assert not (board / "results.csv").exists()
    assert run_cli("run", "--model", "tiny-cnn", *beta, "--splits", "3", "--preset", "smoke",
                   "--pretrained", "none", "--out", board, "--work-dir", work)[0] == 0
    run_id = read_rows(board / "results.csv")[0]["run_id"]
    # alpha has splits 1 and 2 only: test split 3 does not exist there
    code, _, err = run_cli("evaluate", "--from-run", run_id, *alpha, "--out", board, "--work-dir", work)
    assert code == 2 and "has no split 3" in err
    code, _, err = run_cli("evaluate", "--from-run", run_id, *alpha, "--splits", "1", "--out", board,
                           "--work-dir", work)
    assert code == 2 and "no finished split 1" in err
    assert len(read_rows(board / "results.csv")) == 1  # nothing partial was written


def test_transfer_matrix_across_the_fields_datasets(tmp_path, run_cli):
    """tiny-cnn trained on a MemCat replica and scored on THINGS and SUN replicas, and the
    same weights as 'released weights' on all three: one row per (model, training data), a
    column per dataset, every cell recomputed from the stored predictions, each dataset's
    human consistency under the rows and in transfer.csv."""
    import numpy as np
    import torch

    import replicas
    from membench import BuildContext
    from tiny_plugin import build_tiny

    replicas.make_memcat(tmp_path / "memcat", n=30)
    replicas.make_things(tmp_path / "things", n=30)
    _, _, hrs1, hrs2, _ = replicas.make_sun(tmp_path / "sun", n_images=40, n_splits=3)
    data = {"memcat": ["--data", tmp_path / "memcat", "--dataset", "memcat", "--dataset-option", "human_consistency=0.7"],
            "things": ["--data", tmp_path / "things", "--dataset", "things"],
            "sun": ["--data", tmp_path / "sun", "--dataset", "sun"]}
    board, work = tmp_path / "board", tmp_path / "work"
    common = ["--out", board, "--work-dir", work]
    torch.save({"model": build_tiny(BuildContext(pretrained=False)).state_dict(), "model_name": "tiny-cnn"},
               tmp_path / "w.pt")
    for args in data.values():
        code, _, err = run_cli("run", "--model", "tiny-cnn", "--train", "none", "--checkpoint", tmp_path / "w.pt",
                               *args, "--splits", "1,2", "--preset", "smoke", "--pretrained", "none", *common)
        assert code == 0, err
    code, _, err = run_cli("run", "--model", "tiny-cnn", *data["memcat"], "--splits", "1,2", "--preset", "smoke",
                           "--pretrained", "none", "--keep-checkpoints", *common)
    assert code == 0, err
    trained = next(r["run_id"] for r in read_rows(board / "results.csv") if r["train_mode"] == "full")
    for name in ("things", "sun"):
        code, _, err = run_cli("evaluate", "--from-run", trained, *data[name], *common)
        assert code == 0, err

    code, _, err = run_cli("report", "--leaderboard", board, "--n-boot", "50", "--no-figure")
    assert code == 0, err
    matrix = read_rows(board / "transfer.csv")
    assert {(r["trained_on"], r["dataset"]) for r in matrix} == {
        (t, d) for t in ("memcat", "released weights") for d in ("memcat", "things", "sun")}
    sun_ceiling = np.mean([spearmanr(hrs1[r], hrs2[r])[0] for r in range(3)])
    ceilings = {"memcat": 0.7, "things": None, "sun": sun_ceiling}
    for r in matrix:
        rho, sizes = recomputed_rho(board, r["run_id"])
        assert float(r["rho_mean"]) == pytest.approx(rho, abs=1e-12)
        # smoke runs score at most 16 test images; `evaluate` scores the whole test split
        n_test = 6 if r["dataset"] != "sun" else 16 if r["trained_on"] == "released weights" else 20
        assert int(r["n_splits"]) == len(sizes) == 2 and sizes == [n_test] * 2
        assert float(r["rho_ci_low"]) <= float(r["rho_mean"]) <= float(r["rho_ci_high"])
        expected = ceilings[r["dataset"]]
        assert (r["human_consistency"] == "") if expected is None else \
            float(r["human_consistency"]) == pytest.approx(expected, abs=1e-12)
    md = (board / "transfer.md").read_text()
    table = [line for line in md.splitlines() if line.startswith("| ")]
    assert table[0] == "| Model ← trained on | memcat | sun | things |"
    labels = [re.sub(r"@[0-9a-f]{8}", "@HASH", line.split(" | ")[0]) for line in table[1:]]
    assert sorted(labels[:2]) == ["| tiny-cnn [smoke; checkpoint=w.pt@HASH; pretrained=none] ← released weights",
                                  "| tiny-cnn [smoke; pretrained=none] ← memcat"]
    assert labels[2] == "| *human consistency (ceiling)*"
    assert table[-1] == f"| *human consistency (ceiling)* | 0.700 | {sun_ceiling:.3f} | — |"
    for line in table[1:3]:
        assert line.count(" [") == 4 and line.count("(n=2)") == 3  # each cell: ρ [CI] (n=2)
    assert "corrected recognition" in md and "hit rate" in md and "compare models within a column" in md


def smoke_run(tmp_path: Path, data: list, run_cli) -> tuple[Path, list, str]:
    """tiny-cnn trained (smoke) on splits 1 and 2 of `data`, checkpoints kept: (leaderboard,
    the --out/--work-dir arguments, its run id)."""
    board, work = tmp_path / "board", tmp_path / "work"
    common = ["--out", board, "--work-dir", work]
    assert run_cli("run", "--model", "tiny-cnn", *data, "--splits", "1,2", "--preset", "smoke",
                   "--pretrained", "none", "--keep-checkpoints", *common)[0] == 0
    return board, common, read_rows(board / "results.csv")[0]["run_id"]


def test_evaluating_a_run_on_its_own_data_never_takes_the_runs_row(tmp_path, two_datasets, run_cli):
    """`evaluate --from-run` on the run's own dataset (one split) is an evaluation of that
    run: its own row in Table 2, summary.csv, the every-run table and the transfer matrix,
    labelled with the run it evaluates; the run's 2-split row stays the run's."""
    alpha, beta = two_datasets
    board, common, run_id = smoke_run(tmp_path, alpha, run_cli)
    own = [float(r["rho"]) for r in read_rows(board / "results.csv")]
    for data, splits in ((alpha, "1"), (beta, "1,2")):  # its own data (split 1), then another dataset
        code, _, err = run_cli("evaluate", "--from-run", run_id, *data, "--splits", splits, *common)
        assert code == 0, err
    code, _, err = run_cli("report", "--leaderboard", board, "--n-boot", "20", "--no-figure")
    assert code == 0, err

    _, rows = md_rows(board / "table2_lamem.md")
    run_row = rows["tiny-cnn [preset=smoke; pretrained=none]"]
    assert run_row[1].startswith(f"{statistics.fmean(own):.3f} ± ") and run_row[4] == "2"
    evaluated = rows[f"tiny-cnn [preset=smoke; pretrained=none; evaluated-from={run_id}]"]
    assert evaluated[4] == "1"
    summary = {r["run_ids"]: r for r in read_rows(board / "summary.csv") if r["dataset"] == "lamem"}
    assert summary[run_id]["n_splits"] == "2" and len(summary) == 2
    assert f"evaluated-from={run_id}" in next(r for k, r in summary.items() if k != run_id)["configuration"]
    # the transfer matrix: the run keeps its diagonal cell, the evaluation is a row of its own
    diagonal = [r for r in read_rows(board / "transfer.csv") if r["dataset"] == "lamem"]
    assert sorted((r["n_splits"], r["run_id"][:len(run_id) + 16]) for r in diagonal) == [
        ("1", f"{run_id}__on__lamem-test"), ("2", run_id)]
    md = (board / "transfer.md").read_text()
    assert "| tiny-cnn [smoke; pretrained=none] ← lamem | " in md
    assert f"| tiny-cnn [smoke; pretrained=none; evaluated-from={run_id}] ← lamem | " in md
    labels = [r["label"] for r in read_rows(board / "runs_lamem.csv") if r["kind"] == "measured"]
    assert len(labels) == len(set(labels)) == 2


def md_rows(path: Path) -> tuple[list[str], dict[str, list[str]]]:
    """The first Markdown table of a file as {row label without footnote marks: cells}."""
    rows = [line.strip("|").split(" | ") for line in path.read_text().splitlines() if line.startswith("| ")]
    return rows[0], {cells[0].strip().rstrip("¹²³⁴⁵⁶⁷⁸⁹"): [c.strip() for c in cells] for cells in rows[1:]}


def test_evaluate_checks_every_splits_checkpoint_before_any_work(tmp_path, two_datasets, run_cli):
    """A checkpoint gone from split 2 stops `evaluate` before split 1 is scored (nothing
    written); `membench runs` says which checkpoints were kept."""
    alpha, _ = two_datasets
    board, common, run_id = smoke_run(tmp_path, alpha, run_cli)
    work = tmp_path / "work"
    (work / run_id / "split2" / "stage1" / "best.pt").unlink()
    code, out, err = run_cli("runs", "--work-dir", work, "--format", "json")
    assert code == 0, err
    assert {r["split"]: r["checkpoints"] for r in json.loads(out)} == {1: "kept", 2: "removed"}
    assert "checkpoints" in run_cli("runs", "--work-dir", work)[1]  # a column of the table too

    code, _, err = run_cli("evaluate", "--from-run", run_id, *alpha, *common)
    assert code == 2 and "checkpoint of split 2 is gone" in err and "Traceback" not in err, err
    assert len(read_rows(board / "results.csv")) == 2  # nothing of split 1 was written
    assert [p.name for p in work.iterdir()] == [run_id]
    # without --keep-checkpoints every split's checkpoint is gone: one line names them all
    assert run_cli("run", "--model", "tiny-cnn", *alpha, "--splits", "1,2", "--preset", "smoke", "--seed", "1",
                   "--pretrained", "none", *common)[0] == 0
    dropped = next(r["run_id"] for r in read_rows(board / "results.csv") if r["seed"] == "1")
    code, out, _ = run_cli("runs", "--work-dir", work, "--format", "csv")
    assert {r["checkpoints"] for r in csv.DictReader(out.splitlines()) if r["run"] == dropped} == {"removed"}
    code, _, err = run_cli("evaluate", "--from-run", dropped, *alpha, *common)
    assert code == 2 and "checkpoints of splits 1, 2 are gone" in err and "--keep-checkpoints" in err


def test_the_csv_example_of_evaluate_help_works(tmp_path, run_cli):
    from membench.commands.evaluate import EPILOG

    board, work = tmp_path / "board", tmp_path / "work"
    folder = demo_as_csv(tmp_path / "mine", seed=2) / "images"  # images + scores.csv
    data = generate(tmp_path / "three", n_images=40, n_splits=3, seed=0)  # the example scores splits 1 and 3
    assert run_cli("run", "--model", "tiny-cnn", "--data", data, "--splits", "1,3", "--preset", "smoke",
                   "--pretrained", "none", "--keep-checkpoints", "--out", board, "--work-dir", work)[0] == 0
    run_id = read_rows(board / "results.csv")[0]["run_id"]
    example = next(line for line in EPILOG.splitlines() if "--dataset csv" in line).split()[2:]
    given = example[example.index("--data") + 1]
    args = [run_id if a == "RUN_ID" else a for a in example]
    args[args.index("--data") + 1] = folder / "scores.csv" if given.endswith(".csv") else folder
    args[args.index("--feature-store") + 1] = tmp_path / "fs"
    code, _, err = run_cli("evaluate", *args, "--out", board, "--work-dir", work)
    assert code == 0, err
    # the CSV itself instead of its folder: one line saying what to give
    code, _, err = run_cli("evaluate", "--from-run", run_id, "--data", folder / "scores.csv", "--dataset", "csv",
                           "--out", board, "--work-dir", work)
    assert code == 2 and "not a file" in err and "--dataset-option csv=scores.csv" in err, err
