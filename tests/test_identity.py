"""Every number traceable, end to end with the real runner: the configuration in rows,
summary.csv, the run JSON and the report; parameters of the configuration that ran; the
recipe each stage executed; files loaded with their sha256; precision."""

from __future__ import annotations

import csv
import hashlib
import json
import subprocess
from pathlib import Path

import pytest

from membench.report import tables as report
from membench.results.leaderboard import read_rows

RUN = ("--dataset", "demo", "--splits", "1")


def _run(run_cli, demo_root, board, model, *extra):
    code, out, err = run_cli("run", "--model", model, "--data", demo_root, *RUN, "--out", board, *extra)
    assert code == 0, err
    return out


def _md_rows(path: Path) -> dict[str, list[str]]:
    rows = [line.strip("|").split(" | ") for line in path.read_text().splitlines() if line.startswith("| ")]
    return {cells[0].strip(): [c.strip() for c in cells] for cells in rows[1:]}


def _json(board: Path, run_id: str) -> dict:
    return json.loads((board / "runs" / f"{run_id}.json").read_text())


def test_protocol_and_later_configurations_render_as_separate_labelled_rows(run_cli, tiny_plugin, demo_root,
                                                                            tmp_path):
    board = tmp_path / "board"
    _run(run_cli, demo_root, board, "tiny-cnn")  # the protocol: paper preset, default options
    _run(run_cli, demo_root, board, "tiny-cnn", "--seed", "1")  # a replicate of it
    _run(run_cli, demo_root, board, "tiny-cnn", "--model-option", "width=16")  # later, not the protocol
    _run(run_cli, demo_root, board, "tiny-cnn", "--patience", "2", "--model-option", "width=8")

    rows = read_rows(board / "results.csv")
    by_config = {}
    for r in rows:
        by_config.setdefault(r["configuration"], []).append(r)
    assert sorted(by_config) == ["", "patience=2", "width=16"]  # width=8 is the default: not a difference
    assert {r["config_id"] for r in by_config[""]} == {"protocol"}
    assert sorted(r["seed"] for r in by_config[""]) == ["0", "1"]
    status = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no", "--", ":/membench",
                             ":/plugins", ":/pyproject.toml"], capture_output=True, text=True,
                            cwd=Path(report.__file__).parent)
    dirty = (status.stdout.strip() != "") if status.returncode == 0 else None  # None: not a git checkout
    assert all(r["precision"] == "fp32" and r["git_dirty"] == ("" if dirty is None else str(dirty)) for r in rows)

    summary = {s["configuration"]: s for s in read_rows(board / "summary.csv")}
    assert set(summary) == {"", "patience=2", "width=16"}
    assert summary[""]["seeds"] == "0 1" and summary[""]["n_splits"] == "2"
    assert summary[""]["run_ids"].split() == [r["run_id"] for r in sorted(by_config[""], key=lambda r: r["seed"])]

    code, _, err = run_cli("report", "--leaderboard", board, "--n-boot", "50")
    assert code == 0, err
    table = _md_rows(board / "table2_demo.md")
    assert set(table) >= {"tiny-cnn", "tiny-cnn [patience=2]¹", "tiny-cnn [width=16]²"}
    protocol = table["tiny-cnn"]
    assert protocol[4] == "1 × 2 seeds"
    rhos = [float(r["rho"]) for r in by_config[""]]
    assert protocol[1].startswith(f"{sum(rhos) / 2:.3f}")
    text = (board / "table2_demo.md").read_text()
    wide = by_config["width=16"][0]
    assert f"² [width=16] (configuration {wide['config_id']}): not the protocol of tiny-cnn: width=16." in text
    seeds = sorted(by_config[""], key=lambda r: r["seed"])
    assert (f"tiny-cnn: {seeds[0]['run_id']} (seed 0), {seeds[1]['run_id']} (seed 1)" in text
            and f"tiny-cnn [width=16]²: {wide['run_id']} (seed 0)" in text)
    assert "smoke" not in text.splitlines()[0]  # paper-preset runs only: no smoke label in the title
    assert "tiny-cnn [width=16]²" in (board / "fig3_demo.svg").read_text()
    csv_rows = {r["configuration"]: r for r in csv.DictReader((board / "table2_demo.csv").read_text().splitlines())
                if r["model"] == "tiny-cnn"}
    assert csv_rows["width=16"]["config_id"] == wide["config_id"] and csv_rows[""]["seeds"] == "0 1"

    # the parameters of each row are those of the configuration that ran
    for options, row in (((), by_config[""][0]), (("--model-option", "width=16"), wide)):
        code, out, _ = run_cli("params", "tiny-cnn", *options, "--format", "json")
        counted = json.loads(out)[0]
        assert (int(row["params_total"]), int(row["params_used"])) == (counted["params_total"], counted["params_used"])
    assert int(wide["params_total"]) == 3 * 16 * 9 + 16 + 32 + 17 != int(by_config[""][0]["params_total"])

    # the run JSON carries the same configuration, init/pretrained as the row, and provenance
    prov = _json(board, wide["run_id"])
    assert prov["configuration"] == {**prov["configuration"], "label": "width=16", "id": wide["config_id"],
                                     "protocol": False}
    assert (prov["config"]["init"], str(prov["config"]["pretrained"])) == (wide["init"], wide["pretrained"])
    assert prov["config"]["precision"] == "fp32"
    [recipe] = prov["recipe"]
    assert {k: recipe[k] for k in ("name", "epochs", "batch_size", "lr", "optimizer", "model", "patience")} == {
        "name": "stage1", "epochs": 3, "batch_size": 8, "lr": 0.01, "optimizer": "adam", "model": None,
        "patience": 10}
    env = prov["environment"]
    assert env["git_dirty"] is dirty
    from importlib.metadata import version

    assert env["distributions"]["membench"] == version("membench")
    assert env["distributions"]["plugin"]["module"] == "tiny_plugin"
    assert _json(board, by_config["patience=2"][0]["run_id"])["recipe"][0]["patience"] == 2


def test_chained_stage_records_the_recipe_stage_1_executed(run_cli, tiny_plugin, demo_root, tmp_path):
    board = tmp_path / "board"
    _run(run_cli, demo_root, board, "tiny-chain")  # paper preset: its checkpoints stay
    rows = {r["model"]: r for r in read_rows(board / "results.csv")}
    stage1 = rows["tiny-cnn"]
    prov = _json(board, rows["tiny-chain"]["run_id"])
    first, second = prov["recipe"]
    # stage 1 is tiny-cnn's own job: its batch size and LR, never the placeholder Stage's defaults
    assert (first["name"], first["model"], first["run_id"]) == ("stage1", "tiny-cnn", stage1["run_id"])
    assert [(s["batch_size"], s["lr"], s["epochs"]) for s in first["recipe"]] == [(8, 0.01, 3)]
    assert (second["name"], second["batch_size"], second["lr"], second["epochs"]) == ("stage2", 8, 0.01, 2)
    assert rows["tiny-chain"]["configuration"] == "" and rows["tiny-chain"]["config_id"] == "protocol"
    # the stage-1 checkpoint tiny-chain loaded, with its sha256
    best = next(Path(p) for p in prov["files_loaded"] if p.endswith("stage1/best.pt"))
    assert prov["files_loaded"][str(best)] == hashlib.sha256(best.read_bytes()).hexdigest()


def test_evaluation_checkpoint_is_in_the_configuration_with_its_sha256(run_cli, tiny_plugin, demo_root, tmp_path):
    import torch

    from membench import BuildContext, registry

    weights = tmp_path / "w.pt"
    torch.manual_seed(0)
    torch.save(registry.get_model("tiny-cnn").builder()(BuildContext(pretrained=False)).state_dict(), weights)
    sha = hashlib.sha256(weights.read_bytes()).hexdigest()
    board = tmp_path / "board"
    _run(run_cli, demo_root, board, "tiny-cnn", "--train", "none", "--checkpoint", weights)
    row = read_rows(board / "results.csv")[0]
    assert row["configuration"] == f"train=none; checkpoint=w.pt@{sha[:8]}"
    prov = _json(board, row["run_id"])
    assert prov["files_loaded"] == {str(weights.resolve()): sha}
    assert prov["configuration"]["settings"]["files"] == {"checkpoint": sha}


def test_precision_is_recorded_keys_stay_and_bf16_on_cpu_is_refused(run_cli, tiny_plugin, demo_root, tmp_path,
                                                                    capsys):
    from membench import registry
    from membench.engine.device import Device
    from membench.engine.device import resolve_precision as resolve_device_precision
    from membench.engine.job import RunConfig, job_key
    from membench.engine.runner import resolve_precision

    code, _, err = run_cli("run", "--model", "tiny-cnn", "--data", demo_root, *RUN, "--out", tmp_path / "b",
                           "--device", "cpu", "--precision", "bf16")
    assert code == 2 and "--precision bf16 is bf16 autocast on CUDA" in err and len(err.strip().splitlines()) == 1
    assert not (tmp_path / "b").exists()
    # fp32 is the default on every device (bf16 is opt-in); `auto` is no longer offered
    with pytest.raises(SystemExit) as exited:
        run_cli("run", "--model", "tiny-cnn", "--data", demo_root, *RUN, "--out", tmp_path / "b", "--precision", "auto")
    assert exited.value.code == 2 and "invalid choice 'auto' (choose from fp32, bf16)" in capsys.readouterr().err
    assert not (tmp_path / "b").exists()
    assert [resolve_device_precision(p, d) for p, d in [("fp32", "cuda"), ("bf16", "cuda"), ("auto", "cuda")]] \
        == ["fp32", "bf16", "fp32"]
    assert RunConfig(out=tmp_path, work_dir=tmp_path).precision == "fp32"
    assert RunConfig(out=tmp_path, work_dir=tmp_path, precision="auto").precision == "fp32"  # old saved configs
    assert Device(type="cuda").precision == "fp32" and not Device(type="cuda").amp
    assert Device(type="cuda", precision="bf16").amp

    class Data:
        name, root = "demo", None

        def fingerprint(self):
            return "fp"

    spec = registry.get_model("tiny-cnn")
    unresolved = RunConfig(out=tmp_path, work_dir=tmp_path, device="cpu")
    default = resolve_precision(unresolved)
    gpu = resolve_precision(RunConfig(out=tmp_path, work_dir=tmp_path, device="cuda"))  # no GPU query for fp32
    assert default.precision == gpu.precision == "fp32"
    # fp32 adds nothing to the key material: the keys of runs made before precision existed stay,
    # and a default GPU run is the same job as a CPU one
    assert job_key(spec, Data(), default) == job_key(spec, Data(), unresolved) == job_key(spec, Data(), gpu)
    bf16 = RunConfig(out=tmp_path, work_dir=tmp_path, device="cuda", precision="bf16")
    assert job_key(spec, Data(), bf16) != job_key(spec, Data(), default)


def test_predictions_under_bf16_autocast_are_fp32_and_not_quantised():
    """bf16 holds 8 significant bits: near 0.75 its steps are 2^-8 (~0.004), so values within
    0.74-0.76 round to at most 7 of them."""
    import torch
    import torch.nn as nn

    from membench.engine.device import Device
    from membench.engine.device import resolve_precision as resolve_device_precision

    def model():
        torch.manual_seed(0)
        m = nn.Sequential(nn.Linear(16, 32), nn.ReLU(), nn.Linear(32, 1))
        with torch.no_grad():
            m[2].weight.mul_(0.01)
            m[2].bias.fill_(0.75)
        return m

    x = torch.randn(10_000, 16)
    bf16_values = torch.arange(0.74, 0.76, 1e-5).to(torch.bfloat16).unique().numel()
    assert bf16_values <= 7
    with torch.no_grad(), torch.autocast("cpu", dtype=torch.bfloat16):
        quantised = model()(x)
        kept = Device(type="cpu").prepare(model())(x)  # the harness's preparation: fp32 head
    assert quantised.dtype == torch.bfloat16 and quantised.float().unique().numel() <= 2 * bf16_values
    assert kept.dtype == torch.float32
    assert kept.unique().numel() > 1000 > bf16_values
    assert ((kept > 0.74) & (kept < 0.76)).float().mean() > 0.5  # the values really sit near 0.75


@pytest.mark.slow
def test_ours_run_json_recipe_shows_stage_1s_batch_and_learning_rate(run_cli, demo_root, tmp_path):
    """The proposed model end to end (smoke, random captioner, random init): a few minutes on CPU."""
    board = tmp_path / "board"
    _run(run_cli, demo_root, board, "ours", "--preset", "smoke", "--pretrained", "none",
         "--model-option", "captioner=random")
    rows = {r["model"]: r for r in read_rows(board / "results.csv")}
    prov = _json(board, rows["ours"]["run_id"])
    first, second = prov["recipe"]
    assert first["model"] == "resnet50-lamem" and first["run_id"] == rows["resnet50-lamem"]["run_id"]
    assert [(s["batch_size"], s["lr"]) for s in first["recipe"]] == [(10, 5e-7)]  # not stage 2's (16, 5e-5)
    assert (second["batch_size"], second["lr"]) == (16, 5e-5)
    assert (prov["config"]["init"], rows["ours"]["init"]) == ("random", "random")
    code, out, _ = run_cli("params", "ours", "--model-option", "captioner=random", "--format", "json")
    assert int(rows["ours"]["params_total"]) == json.loads(out)[0]["params_total"]
    assert rows["ours"]["configuration"] == "preset=smoke; captioner=random; pretrained=none"


def test_a_run_records_the_commit_its_code_was_loaded_from(run_cli, tiny_plugin, demo_root, tmp_path, monkeypatch):
    """The commit and dirty flag are read when the run starts: a commit made (here: a git
    that answers otherwise) while the run trains is not recorded as the code that ran."""
    from membench.engine import provenance
    from membench.results import identity

    provenance.git_commit.cache_clear()
    identity.git_dirty.cache_clear()
    real_run = subprocess.run
    started = {}

    def later_git(args, **kw):  # once the run has pinned its state, git reports another HEAD and edits
        if "rev-parse" in args and started:
            return subprocess.CompletedProcess(args, 0, "feedfacecafe\n", "")
        if "status" in args and started:
            return subprocess.CompletedProcess(args, 0, " M membench/engine/runner.py\n", "")
        return real_run(args, **kw)

    original = identity.pin_source_state

    def pin_then_move():
        original()
        started["pinned"] = True

    monkeypatch.setattr(subprocess, "run", later_git)
    monkeypatch.setattr(identity, "pin_source_state", pin_then_move)
    try:
        where = dict(capture_output=True, text=True, cwd=Path(report.__file__).parent)
        head = real_run(["git", "rev-parse", "--short=12", "HEAD"], **where)
        status = real_run(["git", "status", "--porcelain", "--untracked-files=no", "--", *identity.CODE_PATHS], **where)
        dirty = "" if status.returncode else str(status.stdout.strip() != "")
        _run(run_cli, demo_root, tmp_path / "board", "tiny-cnn")
        assert started
        rows = read_rows(tmp_path / "board" / "results.csv")
        want = head.stdout.strip() if head.returncode == 0 else "unknown"
        assert {r["git_commit"] for r in rows} == {want} != {"feedfacecafe"}
        assert {r["git_dirty"] for r in rows} == {dirty}
    finally:
        provenance.git_commit.cache_clear()
        identity.git_dirty.cache_clear()


def test_dirty_means_the_code_changed_not_docs_or_an_in_repo_leaderboard(tmp_path):
    from membench.results.identity import code_dirty

    repo = tmp_path / "repo"
    for name in ("membench/core.py", "plugins/p.py", "pyproject.toml", "docs/a.md", "leaderboards/results.csv"):
        (repo / name).parent.mkdir(parents=True, exist_ok=True)
        (repo / name).write_text("v1\n")
    git = dict(cwd=repo, check=True, capture_output=True)
    subprocess.run(["git", "init", "-q"], **git)
    subprocess.run(["git", "add", "."], **git)
    subprocess.run(["git", "-c", "user.name=t", "-c", "user.email=t@t", "commit", "-qm", "v1"], **git)
    where = repo / "membench"
    assert code_dirty(where) is False
    (repo / "docs" / "a.md").write_text("v2\n")
    (repo / "leaderboards" / "results.csv").write_text("a run wrote here\n")
    (repo / "membench" / "untracked.py").write_text("new\n")
    assert code_dirty(where) is False
    for name in ("plugins/p.py", "pyproject.toml", "membench/core.py"):
        (repo / name).write_text("v2\n")
        assert code_dirty(where) is True, name
        subprocess.run(["git", "checkout", "-q", "--", name], **git)
    assert code_dirty(tmp_path) is None  # not a git checkout
