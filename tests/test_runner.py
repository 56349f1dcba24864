"""The protocol runner end to end on generated data, with a tiny model for speed."""

import csv
import json
import math
import re

import pytest


def rows(out):
    with open(out / "results.csv", newline="") as f:
        return list(csv.DictReader(f))


def test_run_all_splits_writes_rows_summary_predictions_provenance(tiny_plugin, demo_root, tmp_path, run_cli):
    out = tmp_path / "lb"
    code, stdout, err = run_cli("run", "--model", "tiny-cnn", "--data", demo_root, "--dataset", "demo",
                                "--splits", "all", "--out", out)
    assert code == 0, err
    rs = rows(out)
    assert [int(r["split"]) for r in rs] == [1, 2, 3, 4, 5]
    for r in rs:
        assert math.isfinite(float(r["rho"])) and math.isfinite(float(r["mse"]))
        assert r["preset"] == "paper" and r["params_total"] == "249" and r["dataset"] == "demo"
        assert int(r["epochs_run"]) >= 1 and 1 <= int(r["best_epoch"]) <= int(r["epochs_run"])
        pred_file = out / "predictions" / r["run_id"] / f"split{r['split']}.csv"
        with open(pred_file, newline="") as f:
            preds = list(csv.DictReader(f))
        assert len(preds) == int(r["n_test"])
        # the row's metrics are exactly the metrics of the stored predictions
        from membench.results.metrics import mse, spearman

        p = [float(x["pred"]) for x in preds]
        t = [float(x["score"]) for x in preds]
        assert float(r["rho"]) == pytest.approx(spearman(p, t))
        assert float(r["mse"]) == pytest.approx(mse(p, t))
    with open(out / "summary.csv", newline="") as f:
        summary = list(csv.DictReader(f))
    assert len(summary) == 1 and summary[0]["n_splits"] == "5"
    rho = [float(r["rho"]) for r in rs]
    assert float(summary[0]["rho_mean"]) == pytest.approx(sum(rho) / 5)
    import statistics

    assert float(summary[0]["rho_sd"]) == pytest.approx(statistics.stdev(rho))
    prov = json.loads((out / "runs" / f"{rs[0]['run_id']}.json").read_text())
    assert prov["dataset"]["name"] == "demo" and prov["recipe"][0]["lr"] == 1e-2
    assert prov["environment"]["versions"]["torch"]
    import torch

    assert prov["environment"]["torch_threads"] == torch.get_num_threads()  # CPU sums depend on it


def test_split_scores_come_from_their_own_files(tiny_plugin, demo_root, tmp_path, run_cli):
    """The same image has different scores in different splits (as in LaMem)."""
    out = tmp_path / "lb"
    assert run_cli("run", "--model", "tiny-cnn", "--data", demo_root, "--dataset", "demo",
                   "--splits", "1,2", "--out", out, "--preset", "smoke")[0] == 0
    truth = {}
    for k in (1, 2):
        for line in (demo_root / "splits" / f"test_{k}.txt").read_text().splitlines():
            name, score = line.split()
            truth[(k, name)] = float(score)
    for r in rows(out):
        with open(out / "predictions" / r["run_id"] / f"split{r['split']}.csv", newline="") as f:
            for p in csv.DictReader(f):
                assert float(p["score"]) == truth[(int(r["split"]), p["image"])]


def test_resume_retrains_nothing_finished(tiny_plugin, demo_root, tmp_path, run_cli, monkeypatch):
    out, work = tmp_path / "lb", tmp_path / "work"
    args = ["run", "--model", "tiny-cnn", "--data", demo_root, "--dataset", "demo", "--splits", "1,2",
            "--out", out, "--work-dir", work]
    assert run_cli(*args)[0] == 0
    first = rows(out)

    from membench.engine import stage as train

    def boom(*a, **k):
        raise AssertionError("a finished job was retrained")

    monkeypatch.setattr(train, "train_stage", boom)
    code, _, err = run_cli(*args, "--resume")
    assert code == 0, err
    assert rows(out) == first  # same rows, not duplicated


def test_chained_stages_reuse_stage1_and_freeze(tiny_plugin, demo_root, tmp_path, run_cli):
    out, work = tmp_path / "lb", tmp_path / "work"
    code, _, err = run_cli("run", "--model", "tiny-chain", "--data", demo_root, "--dataset", "demo",
                           "--splits", "1", "--out", out, "--work-dir", work)
    assert code == 0, err
    models = sorted(r["model"] for r in rows(out))
    assert models == ["tiny-chain", "tiny-cnn"]  # stage 1 is a measured run of its own model
    import torch

    chain_dir = next(work.glob("tiny-chain__*")) / "split1"
    stage1_dir = next(work.glob("tiny-cnn__*")) / "split1" / "stage1"
    s1 = torch.load(stage1_dir / "best.pt", weights_only=False)["model"]
    saved = torch.load(chain_dir / "stage2" / "best.pt", weights_only=False)
    s2 = saved["model"]
    # stage 2's checkpoint references its frozen parameters instead of saving them again ...
    frozen = [n for n in s1 if n.startswith("features.") and n not in s2]
    assert frozen and not any("running" in n or "num_batches" in n for n in frozen)
    # ... by a digest that is stage 1's: frozen in stage 2, bit-identical
    from membench import BuildContext
    from membench.engine.checkpoints import digest

    stage1_model = tiny_plugin.build_tiny(BuildContext(upstream={"stage1": stage1_dir / "best.pt"}))
    assert digest(stage1_model, frozen) == saved["frozen"]["digest"]
    for name in s1:
        if name.startswith("features.") and name in s2:
            assert torch.equal(s1[name], s2[name]), name  # frozen BatchNorm statistics: unchanged
    assert not torch.equal(s1["head.weight"], s2["head.weight"])


def test_same_seed_same_numbers(tiny_plugin, demo_root, tmp_path, run_cli):
    results = []
    for i in range(2):
        out = tmp_path / f"lb{i}"
        assert run_cli("run", "--model", "tiny-cnn", "--data", demo_root, "--dataset", "demo",
                       "--splits", "1", "--out", out, "--work-dir", tmp_path / f"w{i}", "--seed", "3")[0] == 0
        results.append((rows(out)[0]["rho"], rows(out)[0]["mse"]))
    assert results[0] == results[1]


def test_evaluate_only_needs_weights(tiny_plugin, demo_root, tmp_path, run_cli):
    code, _, err = run_cli("run", "--model", "tiny-cnn", "--data", demo_root, "--dataset", "demo",
                           "--splits", "1", "--out", tmp_path / "lb", "--train", "none", "--pretrained", "none")
    assert code == 2 and "--checkpoint" in err
    assert not (tmp_path / "lb" / "results.csv").exists()


def test_evaluate_only_with_checkpoint(tiny_plugin, demo_root, tmp_path, run_cli):
    import torch

    from membench import BuildContext
    from tiny_plugin import build_tiny

    model = build_tiny(BuildContext())
    torch.save(model.state_dict(), tmp_path / "w.pt")
    out = tmp_path / "lb"
    code, _, err = run_cli("run", "--model", "tiny-cnn", "--data", demo_root, "--dataset", "demo",
                           "--splits", "1", "--out", out, "--train", "none", "--checkpoint", tmp_path / "w.pt")
    assert code == 0, err
    r = rows(out)[0]
    assert r["train_mode"] == "none" and r["epochs_run"] == "0"


def test_quick_preset_refuses_fixed_size_models_clearly(demo_root, tmp_path, run_cli):
    code, _, err = run_cli("run", "--model", "resnet50-lamem-imagenet", "--data", demo_root, "--dataset", "demo",
                           "--splits", "1", "--out", tmp_path / "lb", "--preset", "quick", "--pretrained", "none")
    assert code == 2 and "needs its own input size (256x256)" in err and "Traceback" not in err
    assert not (tmp_path / "lb" / "results.csv").exists()


def test_cpu_preset_trains_every_image_at_64x64_for_12_epochs_and_is_labelled(tiny_plugin, demo_root, tmp_path,
                                                                                run_cli):
    from membench import registry
    from membench.engine.job import PRESETS, effective

    stages, pre = effective(registry.get_model("resnet50-lamem"), "cpu")
    assert pre.input_size == (64, 64) and [(s.epochs, s.lr, s.batch_size) for s in stages] == [(12, 1e-3, 32)]
    assert PRESETS["cpu"].sizes is None and PRESETS["quick"].sizes["train"] == 600  # cpu: every image
    out = tmp_path / "lb"
    code, stdout, err = run_cli("run", "--model", "tiny-cnn", "--data", demo_root, "--dataset", "demo",
                                "--splits", "1", "--out", out, "--preset", "cpu")
    assert code == 0, err
    [row] = rows(out)
    full = sum(1 for line in (demo_root / "splits" / "test_1.txt").read_text().splitlines() if line.strip())
    assert row["preset"] == "cpu" and int(row["n_test"]) == full  # every test image, unlike quick's 200
    assert row["configuration"] == "preset=cpu" and "note: preset cpu" in stdout
    code, _, err = run_cli("report", "--leaderboard", out, "--out", out, "--n-boot", "0")
    assert code == 0, err
    text = (out / "table2_demo.md").read_text()
    assert "— cpu: 64x64 CPU-sized training, not the paper protocol" in text.splitlines()[0]
    assert "cpu preset: 64x64 inputs, every image of the split, 12 epochs" in text
    code, _, err = run_cli("run", "--model", "resnet50-lamem-imagenet", "--data", demo_root, "--dataset", "demo",
                           "--splits", "1", "--out", tmp_path / "lb2", "--preset", "cpu", "--pretrained", "none")
    assert code == 2 and "the cpu preset (64x64)" in err


def test_a_split_is_loaded_once_and_options_checked_once(tiny_plugin, demo_root, tmp_path, run_cli, monkeypatch):
    """The run path, straightened: each split file is read once per invocation (not again per
    job or per chained stage), and --model-option is checked in one place, before any work."""
    from membench import options
    from membench.data.layout import LamemLayout  # the demo dataset reads through it

    loads, checks = [], []

    real_load, real_check = LamemLayout.load_split, options.check_options
    monkeypatch.setattr(LamemLayout, "load_split", lambda self, k: (loads.append(k), real_load(self, k))[1])
    monkeypatch.setattr(options, "check_options", lambda *a: (checks.append(a[0]), real_check(*a))[1])
    code, _, err = run_cli("run", "--model", "tiny-chain,tiny-cnn", "--data", demo_root, "--dataset", "demo",
                           "--splits", "1,2", "--preset", "smoke", "--out", tmp_path / "lb",
                           "--model-option", "width=8")
    assert code == 0, err
    assert sorted(loads) == [1, 2]  # 4 jobs (+ 2 chained stages), each split read once
    assert sorted(checks) == ["tiny-chain", "tiny-cnn"]  # once per selected model that takes options


def test_a_run_on_the_demo_data_says_they_are_synthetic_and_how_long_each_stage_takes(tiny_plugin, demo_root,
                                                                                     tmp_path, run_cli):
    """Before any work: the demo data are synthetic, what the preset trains and on how many
    splits; after a stage's first epoch: the time it took and the estimate for the rest."""
    code, _, err = run_cli("run", "--model", "tiny-chain", "--data", demo_root, "--dataset", "demo", "--splits", "1",
                           "--out", tmp_path / "lb", "--work-dir", tmp_path / "work")
    assert code == 0, err
    text = " ".join(err.split())  # rich wraps long lines
    assert "synthetic demo data" in text and "not LaMem" in text
    assert ("Preset paper trains tiny-chain: stage1 = tiny-cnn (stage1 3 epochs) + stage2 2 epochs (at most: "
            "early stopping may end a stage sooner), on 1 split(s)") in text
    assert text.index("synthetic") < text.index("epoch 1/3 took")
    for stage, epochs in (("stage1", 3), ("stage2", 2)):
        (took, left), = re.findall(rf"{stage}: epoch 1/{epochs} took ([\d.]+) s; the {epochs - 1} epoch\(s\) "
                                   r"left take about ([\d.]+) s more", text)
        assert float(left) == pytest.approx(float(took) * (epochs - 1), abs=0.1 * (epochs - 1))
