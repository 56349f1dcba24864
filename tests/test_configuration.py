"""Run identity: declared model options, the configuration string and id, parameter counts
of the configuration that ran."""

from __future__ import annotations

import ast
import json
from pathlib import Path

import pytest

from membench.errors import MembenchError
from membench.options import Option, check_options
from membench.results.configuration import Configuration, from_row, from_settings

PLUGINS = Path(__file__).resolve().parents[1] / "plugins"


# ---------------------------------------------------------------- declared options

def test_option_values_are_checked_and_canonical():
    declared = (Option("width", "int", default=8), Option("scale", "float", default=1.0),
                Option("flip", "bool", default=False), Option("mode", choices=("a", "b"), default="a"))
    got = check_options("m", declared, {"width": "016", "scale": "2", "flip": "yes", "mode": "b"})
    assert got == {"width": "16", "scale": "2.0", "flip": "true", "mode": "b"}
    with pytest.raises(MembenchError, match=r"model option width of m takes an integer, got 'x'"):
        check_options("m", declared, {"width": "x"})
    with pytest.raises(MembenchError, match=r"takes one of a, b, got 'c'"):
        check_options("m", declared, {"mode": "c"})
    with pytest.raises(MembenchError, match=r"unknown model option 'widht' for m; did you mean width\? "
                                            r"\(known options: width, scale, flip, mode\)"):
        check_options("m", declared, {"widht": "16"})
    with pytest.raises(MembenchError, match="m declares no options"):
        check_options("m", (), {"width": "16"})


def test_bad_declarations_are_refused():
    with pytest.raises(ValueError, match="reserved"):
        Option("patience", "int")
    with pytest.raises(ValueError, match="type must be one of"):
        Option("x", "list")
    with pytest.raises(ValueError, match="default 'z' is invalid"):
        Option("x", "int", default="z")


def _option_reads(path: Path) -> set[str]:
    """Names a plugin module reads with ctx.options.get("NAME"...) or ctx.options["NAME"]."""
    names = set()
    for node in ast.walk(ast.parse(path.read_text())):
        target = None
        if isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute) and node.func.attr == "get":
            target, key = node.func.value, node.args[0] if node.args else None
        elif isinstance(node, ast.Subscript):
            target, key = node.value, node.slice
        if (isinstance(target, ast.Attribute) and target.attr == "options"
                and isinstance(key, ast.Constant) and isinstance(key.value, str)):
            names.add(key.value)
    return names


def test_every_builtin_model_declares_the_options_its_plugin_reads():
    from membench import registry

    by_plugin: dict[str, set[str]] = {}
    for spec in registry.models().values():
        by_plugin.setdefault(spec.plugin, set()).update(o.name for o in spec.options)
    for member in ("timm/resnet18", "probe/resmem-resnet152"):  # families: their members' options
        spec = registry.get_model(member)
        by_plugin.setdefault(spec.plugin, set()).update(o.name for o in spec.options)
    checked = 0
    for path in sorted(PLUGINS.rglob("*.py")):
        reads = _option_reads(path)
        if not reads:
            continue
        plugin = next((p for p in by_plugin if p.endswith(path.stem)), None)
        assert plugin is not None, path
        assert reads <= by_plugin[plugin], f"{path.name} reads {sorted(reads - by_plugin[plugin])} undeclared"
        checked += 1
    assert checked >= 6  # amnet, memnet, squalli, resmem, vitmem, ours


@pytest.mark.parametrize("model,bad", [("amnet", "wieghts=x"), ("ours", "capitoner=random"),
                                       ("resnet50-lamem", "weights=x")])
def test_misspelt_option_exits_2_naming_the_known_ones(run_cli, model, bad):
    from membench import registry

    known = ", ".join(o.name for o in registry.get_model(model).options)
    code, out, err = run_cli("params", model, "--model-option", bad)
    assert code == 2 and out == ""
    lines = err.strip().splitlines()
    assert len(lines) == 1 and "unknown model option" in lines[0]
    assert (f"known options: {known})" in lines[0]) if known else "declares no options" in lines[0]
    if model == "amnet":
        assert "did you mean weights?" in lines[0]


def test_misspelt_option_stops_a_run_before_any_work(run_cli, tiny_plugin, demo_root, tmp_path):
    code, _, err = run_cli("run", "--model", "tiny-cnn", "--data", demo_root, "--dataset", "demo", "--splits", "1",
                           "--preset", "smoke", "--out", tmp_path / "board", "--work-dir", tmp_path / "work",
                           "--model-option", "widht=16")
    assert code == 2 and err.strip().splitlines() == [
        "membench: error: unknown model option 'widht' for tiny-cnn; did you mean width? (known options: width)"]
    assert not (tmp_path / "board").exists() and not (tmp_path / "work").exists()
    code, _, err = run_cli("run", "--model", "tiny-cnn", "--data", demo_root, "--dataset", "demo", "--splits", "1",
                           "--out", tmp_path / "board", "--model-option", "width=wide")
    assert code == 2 and "model option width of tiny-cnn takes an integer, got 'wide'" in err
    assert not (tmp_path / "board").exists()


def test_models_and_params_show_the_declared_options(run_cli, tiny_plugin):
    from membench import registry

    code, out, _ = run_cli("models", "ours,tiny-cnn")
    assert code == 0
    assert "tiny-cnn options (--model-option NAME=VALUE):\n  width (int, default 8): channels of the convolution" in out
    ours = registry.get_model("ours").options
    assert "captioner (str, default unset)" in out and all(o.describe() in out for o in ours)
    code, out, _ = run_cli("models", "all", "--format", "json")
    rows = {r["model"]: r for r in json.loads(out)}
    assert rows["ours"]["options"].startswith("captioner, ") and rows["resnet50-lamem"]["options"] == ""
    assert rows["tiny-cnn"]["options"] == "width=8"


def test_params_counts_the_configuration_given(run_cli, tiny_plugin):
    code, out, _ = run_cli("params", "tiny-cnn", "--format", "json")
    default = json.loads(out)[0]
    assert code == 0 and default["params_total"] == 249 and default["options"] == "width=8"
    code, out, _ = run_cli("params", "tiny-cnn", "--model-option", "width=16", "--format", "json")
    wide = json.loads(out)[0]
    # conv 3*16*9+16, BN 2*16, head 16+1
    assert code == 0 and wide["params_total"] == 3 * 16 * 9 + 16 + 32 + 17 and wide["options"] == "width=16"


# ---------------------------------------------------------------- the configuration string and id

def test_protocol_configuration_is_empty_and_named_protocol():
    c = Configuration()
    assert (c.label, c.id, c.is_protocol) == ("", "protocol", True)
    # an option given at its declared default is still the protocol
    declared = (Option("beam", "int", default=1), Option("captioner"))
    assert from_settings({"options": {"beam": "1"}}, declared).id == "protocol"
    assert from_settings({"options": {"beam": "3"}}, declared).label == "beam=3"


def test_every_setting_that_changes_numbers_is_in_the_configuration():
    base = Configuration()
    variants = {
        "preset=smoke": Configuration(preset="smoke"),
        "captioner=random": Configuration(model_options={"captioner": "random"}),
        "train=none": Configuration(train="none"),
        "checkpoint=best.pt@0123abcd": Configuration(checkpoint="/w/best.pt", files={"checkpoint": "0123abcd" * 8}),
        "pretrained=none": Configuration(pretrained=False),
        "init=scratch": Configuration(init="scratch"),
        "patience=3": Configuration(patience=3),
        "precision=bf16": Configuration(precision="bf16"),
        "frozen-train-cache=4": Configuration(frozen_train_cache=4),
        "dataset.seed=1": Configuration(dataset_options={"seed": "1"}),
        "exif=ignore": Configuration(extra={"exif": "ignore"}),
    }
    ids = {base.id}
    for label, c in variants.items():
        assert c.label == label and not c.is_protocol
        ids.add(c.id)
    assert len(ids) == len(variants) + 1  # all distinct
    both = Configuration(model_options={"captioner": "random"}, frozen_train_cache=4)
    assert both.label == "captioner=random; frozen-train-cache=4"
    assert len(both.id) == 8 and both.id == Configuration(frozen_train_cache=4,
                                                          model_options={"captioner": "random"}).id


def test_files_are_identified_by_content_not_path():
    a = Configuration(checkpoint="/a/best.pt", files={"checkpoint": "1" * 64})
    b = Configuration(checkpoint="/elsewhere/copy.pt", files={"checkpoint": "1" * 64})
    c = Configuration(checkpoint="/a/best.pt", files={"checkpoint": "2" * 64})
    assert a.id == b.id != c.id


def test_rows_without_configuration_columns_are_derived_and_say_so():
    old = {"preset": "paper", "pretrained": "True", "init": "imagenet", "train_mode": "full", "device": "cpu",
           "notes": "captioner=random; frozen_train_cache=4 (approximation)"}
    label, cid, derived = from_row(old)
    assert (label, derived) == ("captioner=random; frozen-train-cache=4", True)
    assert cid == Configuration(model_options={"captioner": "random"}, frozen_train_cache=4).id
    assert from_row({**old, "notes": ""}) == ("", "protocol", True)
    # the old code always used bf16 autocast on CUDA; random init was recorded as init=random
    assert from_row({**old, "notes": "", "device": "cuda"})[0] == "precision=bf16"
    assert from_row({**old, "notes": "", "init": "random", "pretrained": "False"})[0] == "pretrained=none"
    # the run JSON of an old run supplies what rows never held (patience)
    assert from_row({**old, "notes": ""}, {"config": {"patience": 3}})[0] == "patience=3"
    assert from_row({"config_id": "abcd1234", "configuration": "patience=3"}) == ("patience=3", "abcd1234", False)


def test_rows_scored_on_another_dataset_are_their_own_configuration():
    """`membench evaluate` rows (a checkpoint trained elsewhere, or every image scored) never
    share a table row with the runs trained on the dataset itself."""
    native = {"run_id": "m__csv__paper__s0__abc", "dataset": "csv", "trained_on": "csv", "preset": "paper",
              "config_id": "protocol", "configuration": ""}
    transfer = {**native, "run_id": "m__lamem__paper__s0__def__on__csv-test__0123abcd", "trained_on": "lamem"}
    everything = {**transfer, "run_id": "m__lamem__paper__s0__def__on__csv-all__4567cdef"}
    assert from_row(native) == ("", "protocol", False)
    label, cid, _ = from_row(transfer)
    assert label == "trained-on=lamem" and cid not in ("protocol", from_row(everything)[1])
    assert from_row(everything)[0] == "trained-on=lamem; eval-part=all"
    old = {k: v for k, v in transfer.items() if k not in ("config_id", "configuration")}  # derived, with its JSON
    assert from_row(old, {"eval_part": "all"})[0] == "trained-on=lamem; eval-part=all"
    # scored again on the run's own test splits: an evaluation naming its run, never the run's row
    again = {**native, "run_id": "m__csv__paper__s0__abc__on__csv-test__89abcdef"}
    assert from_row(again)[0] == "evaluated-from=m__csv__paper__s0__abc" and from_row(again)[1] != "protocol"


class _ScratchOnly:
    """A third-party model without pretrained weights (its builder never reads ctx.pretrained)."""

    @staticmethod
    def register_models(register):
        import tiny_plugin
        from membench import ModelSpec, Stage

        register(ModelSpec(name="tiny-scratch", build=tiny_plugin.build_tiny, preprocess=tiny_plugin.PRE,
                           recipe=(Stage("stage1", epochs=1, batch_size=8, lr=1e-2),), pretrained_weights=False))


@pytest.fixture
def scratch_model(tiny_plugin):
    from membench import hookimpl, plugins, registry

    plugin = _ScratchOnly()
    hookimpl(_ScratchOnly.register_models)
    plugins.load().register(plugin, name="tests.scratch_only")
    registry.clear_cache()
    yield registry.get_model("tiny-scratch")
    plugins.load().unregister(plugin)
    registry.clear_cache()


# Job keys of models with pretrained weights, computed before `pretrained_weights` existed:
# they must never change (finished jobs are found again by their key).
KEYS = {("tiny-cnn", True): "tiny-cnn__demo__smoke__s0__6a6e360e7a",
        ("tiny-cnn", False): "tiny-cnn__demo__smoke__s0__e07c5335c9",
        ("resnet50-lamem", True): "resnet50-lamem__demo__smoke__s0__a0cfaa598c",
        ("resnet50-lamem", False): "resnet50-lamem__demo__smoke__s0__2188ab857a"}


def test_pretrained_none_is_no_other_configuration_of_a_model_without_weights(scratch_model, demo_root, tmp_path,
                                                                              run_cli):
    from membench import registry
    from membench.engine.job import RunConfig, job_key
    from membench.results.leaderboard import read_rows

    class Data:
        name, root = "demo", None

        def fingerprint(self):
            return "fp"

    def key(spec, pretrained):
        return job_key(spec, Data(), RunConfig(out=tmp_path, work_dir=tmp_path, preset="smoke", pretrained=pretrained))

    assert key(scratch_model, False) == key(scratch_model, True)
    for (model, pretrained), expected in KEYS.items():  # models with weights: keys as they were
        assert key(registry.get_model(model), pretrained) == expected
    board = tmp_path / "board"
    for extra in (["--pretrained", "none"], ["--resume"]):
        code, _, err = run_cli("run", "--model", "tiny-scratch", "--data", demo_root, "--dataset", "demo", "--splits",
                               "1", "--preset", "smoke", "--out", board, "--work-dir", tmp_path / "work", *extra)
        assert code == 0, err
        assert ("tiny-scratch has no pretrained weights: --pretrained none changes nothing" in " ".join(err.split())) \
            == ("none" in extra)
    rows = read_rows(board / "results.csv")
    assert len({r["run_id"] for r in rows}) == 1 and rows[0]["configuration"] == "preset=smoke"
