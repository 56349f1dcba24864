"""`membench compare` picks runs per (model, dataset, configuration), as the report's rows:
never the latest run of another configuration; MODEL[LABEL or ID] names one; without a
name the protocol configuration, else a one-line error listing them."""

from __future__ import annotations

from membench.results.leaderboard import read_rows


def test_compare_respects_configurations(run_cli, tiny_plugin, demo_root, tmp_path):
    board = tmp_path / "board"

    def run(*extra):
        code, _, err = run_cli("run", "--model", "tiny-cnn", "--data", demo_root, "--dataset", "demo",
                               "--splits", "1", "--out", board, "--work-dir", tmp_path / "work", *extra)
        assert code == 0, err

    def compare(*args):
        return run_cli("compare", *args, "--leaderboard", board, "--n-boot", "50")

    def one_error(code, out, err):
        lines = err.strip().splitlines()
        assert code == 2 and out == "" and len(lines) == 1, err
        return lines[0]

    def ids():
        return {r["configuration"]: (r["config_id"], r["run_id"])
                for r in sorted(read_rows(board / "results.csv"), key=lambda r: r["timestamp"])}

    run("--model-option", "width=4")
    run("--model-option", "width=16")
    wide_id, wide_run = ids()["width=16"]
    narrow_id, narrow_run = ids()["width=4"]
    # two configurations and no protocol: refused, listing labels and ids
    message = one_error(*compare("tiny-cnn", "tiny-cnn[width=16]"))
    assert message == (f"membench: error: tiny-cnn has 2 configurations on demo: "
                       f"tiny-cnn [width=16] (configuration {wide_id}, demo/paper), "
                       f"tiny-cnn [width=4] (configuration {narrow_id}, demo/paper); "
                       "name one as tiny-cnn[LABEL or ID]")
    message = one_error(*compare("tiny-cnn[width=99]", "tiny-cnn[width=16]"))
    assert message.startswith("membench: error: no configuration 'width=99' of tiny-cnn in results.csv "
                              f"(its configurations: tiny-cnn [width=16] (configuration {wide_id}")

    run()  # the protocol
    run("--model-option", "width=16", "--seed", "1")  # the latest run, of another configuration
    protocol_run = ids()[""][1]
    latest_wide = ids()["width=16"][1]
    assert latest_wide != wide_run and ids()[""][0] == "protocol"
    # unnamed: the protocol configuration, not the latest run (width=16, seed 1)
    code, out, err = compare("tiny-cnn", "tiny-cnn [width=16]")  # the label as the report prints it
    assert code == 0, err
    first, second = [line for line in out.splitlines() if line.startswith("tiny-cnn: run ")]
    assert first.startswith(f"tiny-cnn: run {protocol_run} ") and second.startswith(f"tiny-cnn: run {latest_wide} ")
    assert "  configuration: tiny-cnn (protocol)" in out
    assert f"  configuration: tiny-cnn [width=16] ({wide_id}; latest of its 2 seeds)" in out
    assert "tiny-cnn vs tiny-cnn [width=16] on demo: splits 1," in out and "\nverdict: " in out
    # by id, and 'protocol' by name
    code, out, err = compare(f"tiny-cnn[{narrow_id}]", "tiny-cnn[protocol]")
    assert code == 0, err
    assert f"tiny-cnn: run {narrow_run} " in out and f"tiny-cnn: run {protocol_run} " in out
    assert "tiny-cnn [width=4] vs tiny-cnn on demo: splits 1," in out
    message = one_error(*compare("tiny-cnn[width=16", "tiny-cnn"))
    assert "expected MODEL or MODEL[CONFIGURATION]" in message


def test_report_computes_the_comparisons_a_leaderboard_lists(run_cli, tiny_plugin, demo_root, tmp_path):
    """OUT/comparisons.csv names pairs as `membench compare` takes them; `membench report`
    writes each paired bootstrap into compare_<dataset>.csv and runs_<dataset>.md, the same
    numbers as `membench compare` prints; a bad line is one error naming file and line."""
    board = tmp_path / "board"
    for width in ("4", "16"):
        code, _, err = run_cli("run", "--model", "tiny-cnn", "--data", demo_root, "--dataset", "demo", "--splits",
                               "1,2", "--out", board, "--work-dir", tmp_path / "work", "--model-option",
                               f"width={width}")
        assert code == 0, err
    (board / "comparisons.csv").write_text("a,b,dataset\ntiny-cnn[width=16],tiny-cnn[width=4],demo\n")
    code, _, err = run_cli("report", "--leaderboard", board, "--n-boot", "50", "--no-figure")
    assert code == 0, err
    row, = read_rows(board / "compare_demo.csv")
    assert row["model"] == "tiny-cnn[width=16] vs tiny-cnn[width=4]" and row["splits"] == "1,2"
    code, out, err = run_cli("compare", "tiny-cnn[width=16]", "tiny-cnn[width=4]", "--leaderboard", board,
                             "--n-boot", "50")
    assert code == 0, err
    d_rho = float(row["d_rho"])
    assert f"Δ(a-b) {d_rho:+.3f}" in out or f"Δ(a-b) {d_rho:+.5f}" in out
    text = (board / "runs_demo.md").read_text()
    assert "tiny-cnn[width=16] vs tiny-cnn[width=4] (comparisons.csv, paired bootstrap of `membench compare`" in text
    assert row["verdict"] in text
    (board / "comparisons.csv").write_text("a,b\ntiny-cnn[width=16],tiny-cnn[width=4]\nnope,tiny-cnn[width=4]\n")
    code, out, err = run_cli("report", "--leaderboard", board, "--n-boot", "50", "--no-figure")
    assert code == 2 and f"{board / 'comparisons.csv'}:3: no run of model 'nope'" in err, err
