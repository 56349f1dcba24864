"""Everything membench reads back is checked: what membench writes it accepts (an undefined
rho too), and damage to a stored file (predictions, a run JSON, a finished job's
result.json, a stage's stage.json, a dataset's derived split files) is one line naming the
file, never a silently different number. (results.csv: test_leaderboard_guard.py; the
feature store: test_feature_store.py.)"""

from __future__ import annotations

import csv
import json
import shutil
from pathlib import Path

import numpy as np
import pytest
from test_report import _add_run  # a leaderboard written by add_result, as the runner writes it

from membench import ModelSpec, Preprocess, Stage, hookimpl, plugins, registry
from membench.errors import MembenchError
from membench.results import leaderboard
from membench.results.leaderboard import RESULT_COLUMNS, add_result, read_results

SMOKE = ("--preset", "smoke", "--pretrained", "none", "--device", "cpu")


def _error_line(err: str) -> str:
    assert "Traceback" not in err, err
    (line,) = [ln for ln in err.splitlines() if ln.startswith("membench: error:")]
    return line


# ------------------------------------------------------------------ a model with constant output

def build_constant(ctx):
    import torch
    import torch.nn as nn

    class Constant(nn.Module):
        """Trainable, but its prediction never depends on the image: Spearman is undefined."""

        def __init__(self):
            super().__init__()
            self.bias = nn.Parameter(torch.zeros(1))

        def forward(self, x):
            return self.bias.expand(len(x)) + 0.0 * x.mean(dim=(1, 2, 3)).detach()

    with torch.device("meta") if ctx.meta else torch.device("cpu"):
        return Constant()


class ConstantPlugin:
    @hookimpl
    def register_models(self, register):
        register(ModelSpec(name="tiny-const", build=build_constant, summary="constant output", citation="none",
                           preprocess=Preprocess(size=(32, 32), train="paper"),
                           recipe=(Stage("stage1", epochs=2, batch_size=8, lr=1e-2),), tags=("test",)))


@pytest.fixture
def constant_model(tiny_plugin):
    pm = plugins.load()
    plugin = ConstantPlugin()
    pm.register(plugin, name="tests.constant_plugin")
    registry.clear_cache()
    yield
    pm.unregister(plugin)
    registry.clear_cache()


def test_constant_predictions_run_report_and_compare_end_to_end(constant_model, demo_root, tmp_path, run_cli):
    """membench wrote rho=nan and then refused its own results.csv (in the run's next
    split, report and compare). Now: recorded as undefined with the reason, shown as such,
    left out of means, and compare compares MSE only, saying why."""
    lb = tmp_path / "lb"
    for model in ("tiny-const", "tiny-cnn"):
        code, _, err = run_cli("run", "--model", model, "--data", demo_root, "--splits", "1,2", *SMOKE,
                               "--out", lb, "--work-dir", tmp_path / "work")
        assert code == 0, err
    rows = [r for r in read_results(lb / "results.csv").rows if r["model"] == "tiny-const"]
    assert [r["rho"] for r in rows] == ["nan", "nan"]
    assert all("rho undefined (constant predictions)" in r["notes"] for r in rows)
    summary = {r["model"]: r for r in leaderboard.read_rows(lb / "summary.csv")}
    assert (summary["tiny-const"]["rho_mean"], summary["tiny-const"]["rho_undefined"]) == ("nan", "2")
    assert summary["tiny-cnn"]["rho_undefined"] == "0" and -1 <= float(summary["tiny-cnn"]["rho_mean"]) <= 1

    code, _, err = run_cli("report", "--leaderboard", lb, "--out", tmp_path / "report", "--n-boot", "50")
    assert code == 0, err
    table = (tmp_path / "report" / "table2_lamem.md").read_text()
    (const_row,) = [ln for ln in table.splitlines() if ln.startswith("| tiny-const")]
    assert const_row.split(" | ")[1:3] == ["undefined (constant predictions)", "—"]  # rho, its CI
    assert "ρ undefined (Spearman's ρ needs predictions and scores that vary)" in table
    assert "split 1 (constant predictions), split 2 (constant predictions)" in table
    table_csv = {r["model"]: r for r in leaderboard.read_rows(tmp_path / "report" / "table2_lamem.csv")}
    assert (table_csv["tiny-const"]["rho_mean"], table_csv["tiny-const"]["rho_ci_low"]) == ("nan", "")

    code, out, err = run_cli("compare", "tiny-const", "tiny-cnn", "--leaderboard", lb, "--n-boot", "50")
    assert code == 0, err
    verdict = out.splitlines()[-1]
    assert verdict.startswith("verdict: rho not compared: Spearman's rho is undefined for tiny-const on split 1, 2 "
                              "(constant predictions)")
    mse = {}
    for model in ("tiny-const", "tiny-cnn"):
        (run_dir,) = (lb / "predictions").glob(f"{model}__*")
        per_split = []
        for k in (1, 2):
            with open(run_dir / f"split{k}.csv", newline="") as f:
                got = list(csv.DictReader(f))
            per_split.append(np.mean([(float(r["pred"]) - float(r["score"])) ** 2 for r in got]))
        mse[model] = np.mean(per_split)
    assert f"MSE  tiny-const {mse['tiny-const']:.5f}  tiny-cnn {mse['tiny-cnn']:.5f}" in out


def test_a_row_with_some_splits_undefined_averages_the_others_and_says_so(tmp_path):
    from membench.report import tables as report

    board = tmp_path / "board"
    _add_run(board, "resnet50-lamem", "run-a", 0.1, splits=(1, 2, 3))
    rows = read_results(board / "results.csv").rows
    defined = [float(r["rho"]) for r in rows if r["split"] != "2"]
    lines = (board / "results.csv").read_text().splitlines()
    header = lines[0].split(",")
    fields = lines[2].split(",")  # split 2
    fields[header.index("rho")], fields[header.index("notes")] = "nan", "rho undefined (constant predictions)"
    lines[2] = ",".join(fields)
    (board / "results.csv").write_text("\n".join(lines) + "\n")
    specs = {"resnet50-lamem": ModelSpec(name="resnet50-lamem", build="membench:__version__", trainable=False)}
    (entry,) = report.build_entries("table2", "demo", report.load_runs(board), specs, n_boot=50)
    assert entry.stat("rho")[0] == pytest.approx(np.mean(defined))
    assert entry.stat("rho")[1] == pytest.approx(np.std(defined, ddof=1))
    assert report.cells(entry)[1] == f"{np.mean(defined):.3f} ± {np.std(defined, ddof=1):.3f} (2 of 3 splits)"
    assert entry.rho_ci is not None  # over the defined splits only
    assert "split 2 (constant predictions)" in report.undefined_note([entry])


def test_the_every_run_table_and_transfer_matrix_show_an_undefined_rho(tmp_path):
    from membench.report import transfer

    board = tmp_path / "board"
    names = [f"{i:08d}.jpg" for i in range(10)]
    truth = np.linspace(0.3, 0.9, 10)
    for k in (1, 2):
        row = _row("run-c", "amnet", k, rho=float("nan"), mse=float(np.mean((0.5 - truth) ** 2)), n_test=10,
                   train_mode="none", notes="rho undefined (constant predictions)")
        add_result(board, row, [(n, t, 0.5) for n, t in zip(names, truth.tolist())], {"run_id": "run-c"})
    items = transfer.views(leaderboard.load_runs(board))
    (measured,) = transfer.run_rows(items, "demo", [], n_boot=20, seed=0)
    assert np.isnan(measured["rho_mean"]) and measured["rho_ci_low"] is None
    assert measured["mse_mean"] == pytest.approx(np.mean((0.5 - truth) ** 2))
    assert "ρ undefined on split(s) 1, 2 (constant predictions), left out of the ρ mean" in measured["notes"]
    text = transfer.render_runs("demo", [measured], None, [], 20, 0, None)
    assert "| amnet (zero-shot, released weights) [preset=smoke] | undefined | — |" in text
    (cell,) = transfer.matrix_rows(items, n_boot=20)
    assert "undefined (n=2)" in transfer.render_matrix([cell], 20, 0)


def test_non_finite_predictions_are_refused_before_anything_is_written(tmp_path):
    row = _row("run-a", "resnet50-lamem", 1, rho=0.5, mse=0.1, n_test=2)
    with pytest.raises(MembenchError, match="not finite numbers"):
        add_result(tmp_path / "lb", row, [("a.jpg", 0.5, float("nan")), ("b.jpg", 0.6, 0.4)], {"run_id": "run-a"})
    assert not (tmp_path / "lb" / "results.csv").exists() and not (tmp_path / "lb" / "predictions").exists()


# ------------------------------------------------------------------ stored predictions

def _row(run_id, model, k, **values):
    row = dict.fromkeys(RESULT_COLUMNS, "")
    row.update(run_id=run_id, model=model, dataset="demo", split=k, params_total=1_000_000, params_used=1_000_000,
               preset="smoke", hardware="test CPU", git_commit="abc", timestamp="2026-11-29T05:00:00Z", **values)
    return row


@pytest.fixture(scope="module")
def written_board(tmp_path_factory):
    board = tmp_path_factory.mktemp("written") / "lb"
    _add_run(board, "resnet50-lamem", "run-a", 0.05)
    _add_run(board, "amnet", "run-b", 0.3)
    return board


def _damage_lines(edit):
    def apply(path: Path):
        lines = path.read_text().splitlines(keepends=True)
        edit(lines)
        path.write_text("".join(lines))
    return apply


def _set_pred(lines, number, value):
    name, score, _ = lines[number - 1].rstrip("\n").split(",")
    lines[number - 1] = f"{name},{score},{value}\n"


def _flip_last_digit(path: Path, line: int):
    """Flip the lowest bit of the last digit on `line`: a digit still, another number."""
    raw = bytearray(path.read_bytes())
    at = [i for i, b in enumerate(raw) if b == ord("\n")][line - 1] - 1
    raw[at] ^= 1
    path.write_bytes(bytes(raw))


PREDICTION_DAMAGE = {  # name: (edit of predictions/run-a/split1.csv, line named or None, message)
    "cut at a line end": (_damage_lines(lambda ls: ls.pop()), None,
                          "39 predictions, but its results.csv row says n_test=40"),
    "cut inside a line": (lambda p: p.write_bytes(p.read_bytes()[:p.read_bytes().rindex(b",")]), 41,
                          "expected 3 fields"),
    "a line duplicated": (_damage_lines(lambda ls: ls.insert(5, ls[3])), 6, "is already on line 4"),
    "a prediction turned nan": (_damage_lines(lambda ls: _set_pred(ls, 7, "nan")), 7, "must be finite numbers"),
    "a prediction turned inf": (_damage_lines(lambda ls: _set_pred(ls, 8, "inf")), 8, "must be finite numbers"),
    "a prediction edited": (_damage_lines(lambda ls: _set_pred(ls, 9, "0.123")), None,
                            "changed since membench wrote it"),
    "a flipped bit": (lambda p: _flip_last_digit(p, 10), None, "changed since membench wrote it"),
    "the header edited": (_damage_lines(lambda ls: ls.__setitem__(0, "image,truth,pred\n")), 1, "expected header"),
}


@pytest.mark.parametrize("command", ["compare", "report"])
@pytest.mark.parametrize("case", sorted(PREDICTION_DAMAGE))
def test_damaged_predictions_are_one_line_naming_file_and_line(written_board, tmp_path, run_cli, case, command):
    """Before: a cut or duplicated file, a nan or an edited number silently changed
    compare's verdict and the report's interval."""
    board = tmp_path / "lb"
    shutil.copytree(written_board, board)
    edit, line, message = PREDICTION_DAMAGE[case]
    path = board / "predictions" / "run-a" / "split1.csv"
    edit(path)
    args = (["compare", "resnet50-lamem", "amnet", "--leaderboard", board, "--n-boot", "20"] if command == "compare"
            else ["report", "--leaderboard", board, "--out", tmp_path / "report", "--n-boot", "20"])
    code, out, err = run_cli(*args)
    assert code == 2 and "verdict" not in out
    where = f"{path}:{line}:" if line else f"{path}:"
    assert f"membench: error: {where} " in _error_line(err) and message in _error_line(err)


def test_undamaged_predictions_compare_as_before(written_board, run_cli):
    code, out, err = run_cli("compare", "resnet50-lamem", "amnet", "--leaderboard", written_board, "--n-boot", "20")
    assert code == 0 and "resnet50-lamem better than amnet" in out, err


def test_rows_written_before_the_checksum_are_still_checked_line_by_line(written_board, tmp_path, run_cli):
    board = tmp_path / "lb"
    shutil.copytree(written_board, board)
    lines = (board / "results.csv").read_text().splitlines()
    header = lines[0].split(",")
    legacy = [",".join(f for c, f in zip(header, ln.split(",")) if c != "predictions_sha256") for ln in lines]
    (board / "results.csv").write_text("\n".join(legacy) + "\n")
    assert run_cli("compare", "resnet50-lamem", "amnet", "--leaderboard", board, "--n-boot", "20")[0] == 0
    path = board / "predictions" / "run-a" / "split2.csv"
    _damage_lines(lambda ls: ls.insert(3, ls[2]))(path)
    code, _, err = run_cli("compare", "resnet50-lamem", "amnet", "--leaderboard", board, "--n-boot", "20")
    assert code == 2 and f"{path}:4: image" in _error_line(err)


def test_a_predictions_sha256_that_is_not_one_is_refused_in_results_csv(written_board, tmp_path):
    board = tmp_path / "lb"
    shutil.copytree(written_board, board)
    text = (board / "results.csv").read_text()
    digest = read_results(board / "results.csv").rows[0]["predictions_sha256"]
    (board / "results.csv").write_text(text.replace(digest, digest[:20]))
    with pytest.raises(MembenchError, match=r"results.csv:2: predictions_sha256 .* is not a sha256"):
        read_results(board / "results.csv")


# ------------------------------------------------------------------ run JSON

RUN_JSON_DAMAGE = {
    "cut short": lambda p: p.write_text(p.read_text()[:-10]),
    "a value edited": lambda p: p.write_text(p.read_text().replace('"run_id": "run-a"', '"run_id": "run-x"')),
    "not an object": lambda p: p.write_text("[]\n"),
}


@pytest.mark.parametrize("case", sorted(RUN_JSON_DAMAGE))
def test_a_damaged_run_json_stops_the_report_naming_it(written_board, tmp_path, run_cli, case):
    """Before: an unreadable run JSON was skipped (an `--eval-part all` run then showed as
    test-split numbers); an edited one was used."""
    board = tmp_path / "lb"
    shutil.copytree(written_board, board)
    path = board / "runs" / "run-a.json"
    assert "checksum" in json.loads(path.read_text())
    RUN_JSON_DAMAGE[case](path)
    code, _, err = run_cli("report", "--leaderboard", board, "--out", tmp_path / "report", "--n-boot", "0")
    assert code == 2 and f"membench: error: {path}" in _error_line(err) and "run JSON" in _error_line(err)


def test_a_run_json_written_before_the_checksum_is_read_as_it_is(written_board, tmp_path):
    board = tmp_path / "lb"
    shutil.copytree(written_board, board)
    path = board / "runs" / "run-a.json"
    record = json.loads(path.read_text())
    del record["checksum"]
    path.write_text(json.dumps(record))
    assert leaderboard.read_run_json(board, "run-a") == record and record["run_id"] == "run-a"


# ------------------------------------------------------------------ a finished job's result.json, stage.json

def _run_tiny(run_cli, demo_root, tmp_path, *extra):
    return run_cli("run", "--model", "tiny-cnn", "--data", demo_root, "--splits", "1", *SMOKE,
                   "--out", tmp_path / "lb", "--work-dir", tmp_path / "work", *extra)


RESULT_DAMAGE = {
    "rho edited": (lambda saved: saved["row"].update(rho=0.99), "was changed or damaged since membench wrote it"),
    "a prediction edited": (lambda saved: saved["predictions"][0].__setitem__(2, 0.5),
                            "was changed or damaged since membench wrote it"),
    "row missing": (lambda saved: saved.pop("row"), "was changed or damaged"),
}


@pytest.mark.parametrize("case", sorted(RESULT_DAMAGE))
def test_resume_refuses_a_damaged_result_json(tiny_plugin, demo_root, tmp_path, run_cli, case):
    """Before: --resume put an edited result.json's row and predictions into the
    leaderboard (or, without a row, crashed with a KeyError traceback)."""
    assert _run_tiny(run_cli, demo_root, tmp_path)[0] == 0
    (path,) = (tmp_path / "work").glob("tiny-cnn__*/split1/result.json")
    saved = json.loads(path.read_text())
    edit, message = RESULT_DAMAGE[case]
    edit(saved)
    path.write_text(json.dumps(saved, indent=2))
    before = (tmp_path / "lb" / "results.csv").read_bytes()
    code, _, err = _run_tiny(run_cli, demo_root, tmp_path, "--resume")
    assert code == 2 and f"membench: error: {path}: the finished job's result {message}" in _error_line(err)
    assert (tmp_path / "lb" / "results.csv").read_bytes() == before


def test_resume_without_checksum_still_checks_the_shape_of_result_json(tiny_plugin, demo_root, tmp_path, run_cli):
    assert _run_tiny(run_cli, demo_root, tmp_path)[0] == 0
    (path,) = (tmp_path / "work").glob("tiny-cnn__*/split1/result.json")
    saved = json.loads(path.read_text())
    del saved["checksum"]  # as membench wrote it before it sealed the file
    path.write_text(json.dumps(saved))
    code, _, err = _run_tiny(run_cli, demo_root, tmp_path, "--resume")
    assert code == 0, err
    saved["predictions"] = "lost"
    path.write_text(json.dumps(saved))
    code, _, err = _run_tiny(run_cli, demo_root, tmp_path, "--resume")
    assert code == 2 and "predictions that are not (image, score, prediction) triples" in _error_line(err)


STAGE_DAMAGE = {
    "epochs edited": (lambda p: p.write_text(p.read_text().replace('"epochs_run": 1', '"epochs_run": 9')),
                      "was changed or damaged since membench wrote it"),
    "not JSON": (lambda p: p.write_text(p.read_text()[:30]), "is not valid JSON"),
    "no outcome": (lambda p: p.write_text('{"outcome": {}}\n'), "has no complete outcome"),
}


@pytest.mark.parametrize("case", sorted(STAGE_DAMAGE))
def test_resume_refuses_a_damaged_stage_json(tiny_plugin, demo_root, tmp_path, run_cli, case):
    """A job killed after its stage finished, before result.json: --resume reuses the
    stage from best.pt and stage.json. Before: an edited stage.json went into the row
    (epochs_run 9), a damaged one made the stage train again without a word."""
    assert _run_tiny(run_cli, demo_root, tmp_path, "--keep-checkpoints")[0] == 0
    (job,) = (tmp_path / "work").glob("tiny-cnn__*/split1")
    (job / "result.json").unlink()
    marker = job / "stage1" / "stage.json"
    edit, message = STAGE_DAMAGE[case]
    edit(marker)
    code, _, err = _run_tiny(run_cli, demo_root, tmp_path, "--resume", "--keep-checkpoints")
    line = _error_line(err)
    assert code == 2 and f"membench: error: {marker}" in line and message in line
    assert f"delete the folder {job / 'stage1'}" in line
    assert not (job / "result.json").exists()


# ------------------------------------------------------------------ a dataset's derived split files

def test_a_damaged_derived_split_file_is_refused_naming_file_and_line(tmp_path, monkeypatch):
    """The csv and lnsim datasets keep LaMem-style split files in MEMBENCH_HOME and reuse
    them. Before: an edited one was read as the dataset (other scores, other numbers)."""
    from PIL import Image

    monkeypatch.setenv("MEMBENCH_HOME", str(tmp_path / "home"))
    data = tmp_path / "data"
    data.mkdir()
    rng = np.random.default_rng(0)
    with open(data / "scores.csv", "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["image", "score"])
        for i in range(30):
            Image.fromarray(rng.integers(0, 255, (8, 8, 3), dtype=np.uint8)).save(data / f"{i:03d}.png")
            w.writerow([f"{i:03d}.png", f"{rng.uniform(0.2, 0.9):.4f}"])

    def open_csv():
        return registry.get_dataset("csv").opener()(data, {})

    first = open_csv().load_split(1)
    (view,) = (tmp_path / "home" / "datasets").glob("csv-*")
    assert [s.score for s in open_csv().load_split(1).test] == [s.score for s in first.test]  # reused, checked
    path = view / "splits" / "test_1.txt"
    lines = path.read_text().splitlines(keepends=True)
    lines[2] = lines[2].split(" ")[0] + " 0.999\n"
    path.write_text("".join(lines))
    with pytest.raises(MembenchError) as err:
        open_csv()
    assert str(err.value).startswith(f"{path}:3: differs from the split the source data define")
    assert f"delete the directory {view}" in str(err.value)
    shutil.rmtree(view)  # what the message says: membench writes it again
    assert [s.score for s in open_csv().load_split(1).test] == [s.score for s in first.test]


def test_the_site_without_a_bootstrap_still_checks_the_predictions_it_plots(written_board, tmp_path, run_cli):
    """--n-boot 0 reads the predictions only for the run pages' scatter: an edited value is
    refused there too, not plotted."""
    board = tmp_path / "lb"
    shutil.copytree(written_board, board)
    path = board / "predictions" / "run-a" / "split1.csv"
    PREDICTION_DAMAGE["a prediction edited"][0](path)
    code, _, err = run_cli("report", "--leaderboard", board, "--out", tmp_path / "report", "--n-boot", "0")
    assert code == 2 and f"membench: error: {path}: " in _error_line(err) and "changed since membench" in err


def test_an_edited_run_history_is_not_carried_into_the_next_split_under_a_new_seal(tmp_path):
    from membench.results.leaderboard import read_run_json

    row = {"run_id": "m__r", "model": "m", "dataset": "demo", "split": 1, "rho": 0.5, "mse": 0.01, "n_test": 1,
           "params_total": 1, "params_used": 1, "preset": "smoke", "train_mode": "full"}
    stages = {"stage1": {"epochs_run": 1, "history": [{"epoch": 1, "val_rho": 0.1}]}}
    add_result(tmp_path, row, [("a.jpg", 0.5, 0.4)], {"run_id": "m__r", "stages": stages})
    path = tmp_path / "runs" / "m__r.json"
    path.write_text(path.read_text().replace('"val_rho": 0.1', '"val_rho": 0.9'))  # edited by hand
    add_result(tmp_path, {**row, "split": 2}, [("a.jpg", 0.5, 0.4)], {"run_id": "m__r", "stages": stages})
    assert list(read_run_json(tmp_path, "m__r")["split_stages"]) == ["2"]  # the edited split-1 history is gone
