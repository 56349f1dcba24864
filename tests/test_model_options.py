"""Several selected models, one --model-option: it goes to the models that declare it, and
is an error only when none of them does."""

from __future__ import annotations

import json

import pytest

from membench.errors import MembenchError
from membench.options import Option, check_for_models
from membench.results.leaderboard import read_rows

WIDE = (Option("width", "int", default=8), Option("mode", choices=("a", "b"), default="a"))
DEEP = (Option("width", "float", default=1.0),)


def test_an_option_goes_to_the_models_that_declare_it_checked_against_each():
    got = check_for_models([("wide", WIDE), ("deep", DEEP), ("plain", ())], {"width": "016", "mode": "b"})
    assert got == {"wide": {"width": "16", "mode": "b"}, "deep": {"width": "16.0"}, "plain": {}}
    # ill-typed for one declaring model: an error naming that model
    with pytest.raises(MembenchError, match=r"^model option width of wide takes an integer, got '1.5'$"):
        check_for_models([("wide", WIDE), ("deep", DEEP)], {"width": "1.5"})
    with pytest.raises(MembenchError) as exc:
        check_for_models([("wide", WIDE), ("deep", DEEP), ("plain", ()), ("bare", ())], {"mdoe": "b"})
    assert str(exc.value) == ("unknown model option 'mdoe': no selected model declares it; did you mean mode? "
                              "(wide declares width, mode; deep declares width; plain, bare declare none)")
    # one model: the single-model message as before
    with pytest.raises(MembenchError, match=r"^unknown model option 'mdoe' for wide; did you mean mode\?"):
        check_for_models([("wide", WIDE)], {"mdoe": "b"})


def test_params_of_several_models_apply_an_option_to_its_declarers(run_cli):
    code, out, err = run_cli("params", "ours,resnet50-lamem", "--model-option", "captioner=random",
                             "--format", "json")
    assert code == 0, err
    rows = {r["model"]: r for r in json.loads(out)}
    assert "captioner=random" in rows["ours"]["options"] and rows["resnet50-lamem"]["options"] == ""
    code, out, err = run_cli("params", "ours,resnet50-lamem", "--model-option", "capitoner=random")
    lines = err.strip().splitlines()
    assert code == 2 and out == "" and len(lines) == 1
    assert lines[0].startswith("membench: error: unknown model option 'capitoner': no selected model declares it; "
                               "did you mean captioner? (ours declares captioner, ")
    assert lines[0].endswith("; resnet50-lamem declares none)")


def test_run_of_two_models_gives_the_option_only_to_its_declarer(run_cli, tiny_plugin, demo_root, tmp_path):
    board, work = tmp_path / "board", tmp_path / "work"
    code, _, err = run_cli("run", "--model", "tiny-cnn,tiny-chain", "--data", demo_root, "--dataset", "demo",
                           "--splits", "1", "--out", board, "--work-dir", work, "--model-option", "width=16")
    assert code == 0, err
    rows = read_rows(board / "results.csv")
    by = {(r["model"], r["configuration"]): r for r in rows}
    # tiny-cnn received width=16; tiny-chain declares no option: its protocol, and its chained
    # stage 1 is tiny-cnn's protocol job (no options), not the width=16 one
    assert set(by) == {("tiny-cnn", "width=16"), ("tiny-chain", ""), ("tiny-cnn", "")}
    assert by[("tiny-chain", "")]["config_id"] == "protocol" and by[("tiny-chain", "")]["notes"] == ""
    assert int(by[("tiny-cnn", "width=16")]["params_total"]) == 3 * 16 * 9 + 16 + 32 + 17
    assert int(by[("tiny-chain", "")]["params_total"]) == 249
    run_json = json.loads((board / "runs" / f"{by[('tiny-chain', '')]['run_id']}.json").read_text())
    assert run_json["config"]["options"] == {}
    assert len([d for d in work.iterdir() if d.name.startswith("tiny-cnn__")]) == 2
    # no selected model declares it: one line, exit 2, nothing written
    code, _, err = run_cli("run", "--model", "tiny-cnn,tiny-chain", "--data", demo_root, "--dataset", "demo",
                           "--splits", "1", "--out", tmp_path / "b2", "--model-option", "widht=16")
    assert code == 2 and err.strip().splitlines() == [
        "membench: error: unknown model option 'widht': no selected model declares it; did you mean width? "
        "(tiny-cnn declares width; tiny-chain declares none)"]
    assert not (tmp_path / "b2").exists()
