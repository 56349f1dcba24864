"""The command line: listing without torch, formats, one-line errors."""

import csv
import io
import json
import subprocess
import sys

import pytest

NO_TORCH = """
import sys
from membench.cli import main
try:
    code = main({args!r})
except SystemExit as e:
    code = e.code
assert "torch" not in sys.modules, "torch was imported"
print("NO-TORCH-OK", code)
"""


@pytest.mark.parametrize("args", [["--help"], ["models"], ["params", "--help"], ["run", "--help"], ["plugins"]])
def test_listing_and_help_do_not_import_torch(args):
    out = subprocess.run([sys.executable, "-c", NO_TORCH.format(args=args)], capture_output=True, text=True)
    assert "NO-TORCH-OK" in out.stdout, out.stderr[-2000:]


def test_models_lists_builtin_with_reported_numbers(run_cli):
    code, out, _ = run_cli("models", "--format", "json")
    assert code == 0
    models = {m["model"]: m for m in json.loads(out)}
    assert models["resnet50-lamem"]["rho_reported"] == 0.680
    assert models["resnet50-lamem"]["plugin"] == "membench_plugins.models.resnet"


def test_params_json_and_csv(run_cli):
    code, out, _ = run_cli("params", "resnet50-lamem", "--format", "json")
    assert code == 0
    (row,) = json.loads(out)
    assert row["model"] == "resnet50-lamem"
    assert row["params_total"] == 23_510_081 == row["params_used"]
    assert "params_reported" in row
    code, out, _ = run_cli("params", "resnet50-lamem", "--format", "csv")
    (crow,) = list(csv.DictReader(io.StringIO(out)))
    assert crow["params_total"] == "23510081"


def test_params_matches_torchvision_reference():
    from torchvision.models import resnet50

    from membench import registry
    from membench.results import params

    ref = resnet50()
    expected = sum(p.numel() for p in ref.parameters()) - ref.fc.weight.numel() - ref.fc.bias.numel() + 2049
    assert params.count(registry.get_model("resnet50-lamem"))["total"] == expected


def test_unknown_model_suggests(run_cli):
    code, out, err = run_cli("params", "resnet50-lamen")
    assert code == 2
    assert err.strip().splitlines()[-1].startswith("membench: error: unknown model 'resnet50-lamen'; did you mean resnet50-lamem")
    assert "Traceback" not in err


def test_unknown_dataset_suggests(run_cli, tmp_path):
    code, _, err = run_cli("data", "check", "--data", tmp_path, "--dataset", "lamen")
    assert code == 2 and "did you mean lamem" in err


def test_debug_shows_traceback():
    out = subprocess.run([sys.executable, "-m", "membench", "--debug", "params", "nope"],
                         capture_output=True, text=True)
    assert out.returncode != 0 and "Traceback" in out.stderr


def test_selection_name_list_wildcard_all(tiny_plugin):
    from membench import registry

    assert [m.name for m in registry.select_models("tiny-cnn,tiny-chain")] == ["tiny-cnn", "tiny-chain"]
    assert [m.name for m in registry.select_models("tiny-*")] == ["tiny-chain", "tiny-cnn"]
    assert {"tiny-cnn", "resnet50-lamem"} <= {m.name for m in registry.select_models("all")}
    from membench.errors import MembenchError

    with pytest.raises(MembenchError, match="no model matches"):
        registry.select_models("zzz*")


def test_demo_data_command_is_deterministic(run_cli, tmp_path):
    for d in ("a", "b"):
        assert run_cli("demo-data", tmp_path / d, "--images", 40, "--splits", 2)[0] == 0
    for f in ("splits/train_1.txt", "splits/test_2.txt", "images/00000007.jpg"):
        assert (tmp_path / "a" / f).read_bytes() == (tmp_path / "b" / f).read_bytes()
    assert len(list((tmp_path / "a" / "images").iterdir())) == 40


def test_data_check_reports_counts(run_cli, demo_root):
    code, out, err = run_cli("data", "check", "--data", demo_root)
    assert code == 0, err
    assert "no problems found" in out
    assert "CMYK" in out and "L" in out  # non-RGB images are reported as converted


def test_predict_csv(tiny_plugin, demo_root, tmp_path, run_cli):
    import torch

    from membench import BuildContext
    from tiny_plugin import build_tiny

    torch.manual_seed(0)
    torch.save(build_tiny(BuildContext()).state_dict(), tmp_path / "w.pt")
    images = sorted((demo_root / "images").iterdir())[:3]
    code, out, err = run_cli("predict", "--model", "tiny-cnn", "--checkpoint", tmp_path / "w.pt", *images)
    assert code == 0, err
    rows = list(csv.DictReader(io.StringIO(out)))
    assert [r["image"] for r in rows] == [str(p) for p in images]
    assert all(0 <= abs(float(r["score"])) < 100 for r in rows)


def test_misspelt_hook_is_reported_not_fatal(monkeypatch, run_cli):
    import types

    from membench import hookimpl, plugins

    bad = types.ModuleType("membench_misspelt")
    bad.register_modles = hookimpl(lambda register: None)  # typo: no such hook
    import sys

    monkeypatch.setitem(sys.modules, "membench_misspelt", bad)
    monkeypatch.setattr(plugins, "DEFAULT_PLUGINS", plugins.DEFAULT_PLUGINS + ("membench_misspelt",))
    plugins._reset_for_tests()
    try:
        code, out, err = run_cli("models", "--format", "json")
        assert code == 0 and "resnet50-lamem" in out
        assert "membench_misspelt" in err and "register_modles" in err
    finally:
        monkeypatch.undo()
        plugins._reset_for_tests()
