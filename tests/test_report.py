"""Tables, Fig. 3 and `membench compare`, on the fixed leaderboard in tests/data/report.

Golden files: tests/data/report/expected/. After a deliberate layout change, regenerate
them with MEMBENCH_REGEN_GOLDEN=1, review the diff by eye, and commit.
"""

from __future__ import annotations

import csv
import os
import shutil
import statistics
from pathlib import Path

import numpy as np
import pytest
from scipy.stats import spearmanr

from membench.cli import main
from membench.errors import MembenchError
from membench.report import compare, figures
from membench.report import tables as report
from membench.spec import ModelSpec, Reported

DATA = Path(__file__).parent / "data" / "report"
BOARD = DATA / "leaderboard"
EXPECTED = DATA / "expected"
N_BOOT = 200
T1, T2 = "Leonardi et al. 2019, Table 1", "Leonardi et al. 2019, Table 2"
# The paper's Table 2: rho, MSE, parameters as printed.
PAPER_TABLE2 = {
    "amnet": ("0.677", "0.0082", "39M"),
    "memnet": ("0.640", "N/A", "62M"),
    "squalli": ("0.720", "0.0092*", "280M"),
    "ours": ("0.687", "0.0079", "130M"),
}
# Row labels of the fixture's smoke runs on demo (not the protocol: labelled with what differs).
SMOKE = {m: f"{m} [preset=smoke]" for m in ("amnet", "ours")}


def _spec(name, tags=(), **reported):
    return ModelSpec(name=name, build="membench:__version__", trainable=False, tags=tags,
                     reported=Reported(**reported) if reported else None)


SPECS = {s.name: s for s in [
    _spec("resnet50-lamem", ("table1",), rho=0.680, mse=0.0083, source=T1),
    _spec("resnet50-lamem-imagenet", ("table1",), rho=0.686, mse=0.0080, source=T1),
    _spec("ours", ("table1",), rho=0.687, mse=0.0079, params=130_000_000, source=T2),
    _spec("amnet", rho=0.677, mse=0.0082, params=39_000_000, source=T2),
    _spec("memnet", rho=0.640, params=62_000_000, source=T2),
    _spec("squalli", rho=0.720, mse=0.0092, params=280_000_000, source=T2, note="MSE estimated by the authors"),
    _spec("vitmem"),
]}


@pytest.fixture(scope="module")
def latest():
    return report.latest_runs(report.load_runs(BOARD))


def entries(latest, table="table2", dataset="demo", specs=SPECS):
    """The table's rows from every run of the fixture (the report groups them by configuration
    and seed itself; `latest` is kept for the tests of latest_runs)."""
    return report.build_entries(table, dataset, report.load_runs(BOARD), specs, report.read_params(BOARD),
                                n_boot=N_BOOT)


def results_rows(run_id):
    with open(BOARD / "results.csv", newline="") as f:
        return [r for r in csv.DictReader(f) if r["run_id"] == run_id]


def md_table(text):
    """Rows of the first Markdown table as {row label without its footnote mark: cells}."""
    rows = [line.strip("|").split(" | ") for line in text.splitlines() if line.startswith("| ")]
    header, body = rows[0], rows[1:]
    return [h.strip() for h in header], {cells[0].strip().rstrip("¹²³⁴⁵⁶⁷⁸⁹"): [c.strip() for c in cells]
                                         for cells in body}


# ------------------------------------------------------------------ golden files


@pytest.mark.parametrize("name", ["table1_demo", "table2_demo", "table2_lamem"])
@pytest.mark.parametrize("fmt", ["md", "tex"])
def test_tables_match_golden_files(latest, name, fmt):
    table, dataset = name.split("_")
    es = entries(latest, table, dataset)
    render = report.render_markdown if fmt == "md" else report.render_latex
    text = render(table, dataset, es, n_boot=N_BOOT, seed=0)
    golden = EXPECTED / f"{name}.{fmt}"
    if os.environ.get("MEMBENCH_REGEN_GOLDEN") == "1":
        golden.parent.mkdir(parents=True, exist_ok=True)
        golden.write_text(text, encoding="utf-8")
    assert text.encode("utf-8") == golden.read_bytes()


def test_make_report_writes_every_format_and_matches_golden(tmp_path):
    written = report.make_report(BOARD, tmp_path, SPECS, n_boot=N_BOOT, human={"lamem": 0.68})
    names = {p.name for p in written}
    for ds in ("demo", "lamem"):
        for t in ("table1", "table2"):
            assert {f"{t}_{ds}.md", f"{t}_{ds}.tex", f"{t}_{ds}.csv"} <= names
        assert {f"fig3_{ds}.png", f"fig3_{ds}.svg"} <= names
    assert {"README.md", "reported.csv"} <= names
    assert (tmp_path / "table2_demo.md").read_bytes() == (EXPECTED / "table2_demo.md").read_bytes()
    readme = (tmp_path / "README.md").read_text()
    assert "## demo" in readme and "## lamem" in readme and "](fig3_demo.png)" in readme
    assert (tmp_path / "fig3_demo.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert (tmp_path / "fig3_demo.svg").read_text().lstrip().startswith("<?xml")


# ------------------------------------------------------------------ table content


def test_reported_columns_equal_the_papers_table2(latest):
    header, rows = md_table(report.render_markdown("table2", "lamem", entries(latest, dataset="lamem")))
    cols = [header.index(c) for c in ("ρ reported", "MSE reported", "Params reported")]
    assert list(rows)[:4] == list(PAPER_TABLE2)  # the paper's order first
    for model, expected in PAPER_TABLE2.items():
        assert tuple(rows[model][c] for c in cols) == expected
    assert "\\* MSE estimated by the authors (squalli)." in report.render_markdown(
        "table2", "lamem", entries(latest, dataset="lamem"))


def test_numbers_published_on_another_dataset_never_sit_in_its_rows(latest):
    """The demo table keeps the published parameter counts (a property of the model) but
    shows no ρ or MSE published on LaMem next to demo measurements, nor their notes."""
    header, rows = md_table(report.render_markdown("table2", "demo", entries(latest)))
    cols = [header.index(c) for c in ("ρ reported", "MSE reported", "Params reported")]
    # the paper's order first; the fixture's demo runs of amnet and ours are smoke runs
    assert list(rows)[:4] == ["amnet [preset=smoke]", "memnet", "squalli", "ours [preset=smoke]"]
    for model, (_rho, _mse, params) in PAPER_TABLE2.items():
        assert tuple(rows[SMOKE.get(model, model)][c] for c in cols) == ("N/A", "N/A", params)
    assert rows["resnet50-lamem [preset=smoke]"][cols[0]:] == ["—"] * 4  # nothing published but ρ/MSE
    text = report.render_markdown("table2", "demo", entries(latest))
    assert "MSE estimated by the authors" not in text and "obtained on lamem" not in text
    assert "ρ and MSE only where published on demo" in text
    pooled = SPECS["ours"].reported.__class__(rho=0.67, dataset="lamem+memcat")
    assert pooled.covers("lamem") and pooled.covers("memcat") and not pooled.covers("lnsim")
    assert report.reported_for(pooled, "lnsim") is None  # no parameter count either: no reported cells


def test_registered_specs_reproduce_the_papers_table2(latest):
    from membench import registry

    specs = registry.models()
    missing = [m for m in PAPER_TABLE2 if m not in specs]
    if missing:
        pytest.skip(f"plugins not registered yet: {', '.join(missing)}")
    header, rows = md_table(report.render_markdown("table2", "lamem", entries(latest, dataset="lamem", specs=specs)))
    cols = [header.index(c) for c in ("ρ reported", "MSE reported", "Params reported")]
    assert list(rows)[:4] == list(PAPER_TABLE2)
    for model, expected in PAPER_TABLE2.items():
        assert tuple(rows[model][c] for c in cols) == expected


def test_latest_run_per_model_dataset_preset_and_stats_over_splits(latest):
    assert latest[("resnet50-lamem", "demo", "smoke")].run_id == "r50-new"  # not the older r50-old
    assert latest[("resnet50-lamem", "demo", "paper")].run_id == "r50-paper"
    rows = {e.label: e for e in entries(latest)}
    smoke = rows["resnet50-lamem [preset=smoke]"]
    rho = [float(r["rho"]) for r in results_rows("r50-new")]
    mse = [float(r["mse"]) for r in results_rows("r50-new")]
    assert smoke.stat("rho") == (statistics.fmean(rho), statistics.stdev(rho))
    assert smoke.stat("mse") == (statistics.fmean(mse), statistics.stdev(mse))
    assert smoke.n_splits == 3
    cells = report.cells(smoke)
    assert cells[1] == f"{statistics.fmean(rho):.3f} ± {statistics.stdev(rho):.3f}"
    assert cells[4] == "3"


def test_datasets_never_share_a_table(latest):
    demo = {e.label: e for e in entries(latest, dataset="demo")}
    lamem = {e.label: e for e in entries(latest, dataset="lamem")}
    assert demo["amnet [preset=smoke]"].run.run_id == "amnet-1"
    assert lamem["amnet"].run.run_id == "amnet-lamem"
    assert lamem["amnet"].stat("rho")[0] == float(results_rows("amnet-lamem")[0]["rho"])
    assert lamem["resnet50-lamem"].run is None  # resnet50-lamem has demo runs only
    text = report.render_markdown("table2", "lamem", list(lamem.values()))
    assert "r50-new" not in text and "amnet-1" not in text and "Measured on lamem" in text


def test_missing_values_print_as_missing_never_zero(latest):
    rows = {e.label: report.cells(e) for e in entries(latest)}
    assert rows["memnet"][1:5] == ["—"] * 4
    assert rows["memnet"][5] == "56.9M"  # measured count from params.csv, no run needed
    assert rows["squalli"][1:6] == ["—"] * 5
    assert "vitmem" not in rows  # no run and no published number: no (empty) row
    assert rows["resnet50-lamem"][2] == "—"  # its predictions are missing: no CI
    assert rows["ours [preset=smoke]"][1] == "0.935" and "±" not in rows["ours [preset=smoke]"][1]  # one split
    assert rows["resnet50-lamem [preset=smoke]"][8] == "—"  # Table 1 gives only ρ/MSE, on LaMem
    lamem = {e.label: report.cells(e) for e in entries(latest, dataset="lamem")}
    assert lamem["resnet50-lamem"][8] == "N/A"  # Table 1 gives no parameter count
    for row in csv.DictReader(report.render_csv("table2", "demo", entries(latest)).splitlines()):
        del row["seeds"]  # seed 0 is a real value
        assert "0.0" not in row.values() and "0" not in row.values()


def test_table2_has_no_row_without_a_number_on_its_dataset(latest):
    """An installed model with neither a run on the dataset nor a published number the table
    can show gets no row (it used to add an empty one to every dataset's Table 2)."""
    specs = dict(SPECS, **{"third-party": _spec("third-party"),
                           "lamem-only": _spec("lamem-only", rho=0.6, source="a paper")})
    demo = [e.label for e in entries(latest, specs=specs)]
    lamem = [e.label for e in entries(latest, dataset="lamem", specs=specs)]
    assert "third-party" not in demo + lamem and "vitmem" not in demo + lamem
    assert "lamem-only" in lamem and "lamem-only" not in demo  # its ρ was published on LaMem only
    assert "memnet" in demo  # its published parameter count is shown on every dataset
    assert "resnet50-lamem [preset=smoke]" in demo and "resnet50-lamem-imagenet" not in demo
    assert "resnet50-lamem-imagenet" in [e.label for e in entries(latest, "table1")]  # Table 1: the paper's rows


def test_a_footnote_has_one_mark_in_both_tables_of_a_dataset(tmp_path):
    """Table 2 lists amnet's quick run first: its configuration is ¹ there, so the smoke
    configuration is ² in Table 2 and in Table 1 alike."""
    board = tmp_path / "board"
    shutil.copytree(BOARD, board)
    rows = list(csv.DictReader((board / "results.csv").read_text().splitlines()))
    quick = [dict(r, run_id="amnet-quick", preset="quick") for r in rows if r["run_id"] == "amnet-1"]
    (board / "results.csv").write_text(report.csv_text(rows + quick, list(rows[0])))
    report.make_report(board, tmp_path / "out", SPECS, n_boot=0, figure=False)
    marks = {}
    for table in ("table1", "table2"):
        text = (tmp_path / "out" / f"{table}_demo.md").read_text()
        for line in text.splitlines():
            if line.startswith("| ") and "[preset=" in line:
                label = line.split(" | ")[0].lstrip("| ")
                marks.setdefault(label.rstrip("¹²³⁴⁵⁶⁷⁸⁹"), set()).add(label[-1])
        notes = [line[0] for line in text.splitlines() if line and line[0] in "¹²³"]
        assert notes == sorted(notes, key="¹²³".index)  # footnotes in mark order
    assert marks["amnet [preset=quick]"] == {"¹"}
    assert marks["resnet50-lamem [preset=smoke]"] == marks["ours [preset=smoke]"] == {"²"}
    assert "² [preset=smoke]" in (tmp_path / "out" / "table1_demo.md").read_text()


def test_table1_holds_the_ablations_in_paper_order(latest):
    labels = [e.label for e in entries(latest, "table1")]
    assert labels == ["resnet50-lamem", "resnet50-lamem [preset=smoke]", "resnet50-lamem-imagenet",
                      "ours [preset=smoke]"]


def test_provenance_and_protocol_under_the_table(latest):
    text = report.render_markdown("table2", "demo", entries(latest), n_boot=N_BOOT)
    assert "Measured on demo: preset paper, smoke;" in text
    assert "hardware fixture CPU (2 cores)" in text and "commit 0123456789ab" in text
    assert "amnet [preset=smoke]¹: amnet-1 (seed 0)" in text
    assert "resnet50-lamem [preset=smoke]¹: r50-new (seed 0); replaces r50-old" in text
    assert f"({N_BOOT} resamples, seed 0)" in text
    assert "obtained on lamem" in report.render_markdown("table2", "lamem", entries(latest, dataset="lamem"))


def test_csv_table_is_tidy_and_holds_the_bootstrap_interval(latest):
    rows = list(csv.DictReader(report.render_csv("table2", "demo", entries(latest)).splitlines()))
    smoke = next(r for r in rows if r["run_id"] == "r50-new")
    data = {k: compare.read_predictions(BOARD / "predictions" / "r50-new" / f"split{k}.csv") for k in (1, 2, 3)}
    low, high = compare.rho_interval(data, n_boot=N_BOOT, seed=0)
    assert (float(smoke["rho_ci_low"]), float(smoke["rho_ci_high"])) == (low, high)
    assert low < float(smoke["rho_mean"]) < high
    memnet = next(r for r in rows if r["model"] == "memnet")
    assert memnet["rho_mean"] == "" and memnet["reported_mse"] == "" and memnet["reported_rho"] == ""
    assert memnet["reported_params"] == "62000000"
    lamem = list(csv.DictReader(report.render_csv("table2", "lamem", entries(latest, dataset="lamem")).splitlines()))
    memnet = next(r for r in lamem if r["model"] == "memnet")
    assert memnet["reported_mse"] == "" and memnet["reported_rho"] == "0.64" and memnet["reported_dataset"] == "lamem"


def test_latex_escapes_special_characters():
    assert report.latex_escape("a_b & 5% — ρ ± 1*") == r"a\_b \& 5\% --- $\rho$ $\pm$ 1$^{*}$"


def test_footnote_goes_to_the_cell_its_note_names(latest):
    specs = dict(SPECS, amnet=_spec("amnet", rho=0.677, params=39_000_000, source=T2, note="params include fc"),
                 memnet=_spec("memnet", rho=0.64, source=T2, note="on its own hyper-parameter split"))
    rows = {e.label: report.cells(e) for e in entries(latest, dataset="lamem", specs=specs)}
    assert rows["amnet"][8] == "39M*" and rows["memnet"][9] == T2 + "†"  # marks in row order
    assert rows["squalli"][7] == "0.0092‡"


def test_params_and_reported_reference_rows():
    counts = {"amnet": {"total": 38_880_493, "used": 21_866_757, "trainable": {"stage1": 13_323_461}}}
    rows = report.params_rows({"amnet": SPECS["amnet"]}, count=lambda s: counts[s.name])
    assert rows == [{"model": "amnet", "stage": "stage1", "params_total": 38_880_493,
                     "params_used": 21_866_757, "params_trainable": 13_323_461}]
    reported = {r["model"]: r for r in report.reported_rows(SPECS)}
    assert "vitmem" not in reported and reported["squalli"]["note"] == "MSE estimated by the authors"


def test_committed_reported_csv_matches_the_registry():
    from membench import registry
    from membench.results.leaderboard import csv_text

    path = Path(__file__).parents[1] / "leaderboards" / "reported.csv"
    if not path.is_file():
        pytest.skip("leaderboards/reported.csv not generated yet")
    expected = csv_text(report.reported_rows(registry.models()), report.REPORTED_COLUMNS)
    assert path.read_text() == expected, "regenerate with `membench report --leaderboard leaderboards`"


# ------------------------------------------------------------------ Fig. 3


def _offsets(ax, prefix):
    found = [c for c in ax.collections if c.get_label().startswith(prefix)]
    assert len(found) == 1, [c.get_label() for c in ax.collections]
    return found[0], [tuple(p) for p in found[0].get_offsets().tolist()]


def _assert_same_points(got, want):
    # pytest >= 9 refuses pytest.approx on nested data (a list of (x, y) tuples); compare
    # point by point, in order, with the same default tolerance.
    assert len(got) == len(want), (got, want)
    for g, w in zip(got, want):
        assert len(g) == len(w) == 2 and g == pytest.approx(w), (got, want)


def test_figure_plots_exactly_the_table_data(latest):
    es = entries(latest, dataset="lamem")
    fig = figures.figure3(es, "lamem", {"lamem": 0.68})
    ax_rho, ax_mse = fig.axes[:2]
    measured = [e for e in es if e.run]
    reported = [e for e in es if e.reported and e.reported.params]
    for ax, metric in ((ax_rho, "rho"), (ax_mse, "mse")):
        coll_m, pts_m = _offsets(ax, "measured on lamem")
        _assert_same_points(pts_m, [(e.params_total / 1e6, e.stat(metric)[0]) for e in measured])
        coll_r, pts_r = _offsets(ax, "reported by the authors")
        want = [(e.reported.params / 1e6, getattr(e.reported, metric)) for e in reported
                if getattr(e.reported, metric) is not None]
        _assert_same_points(pts_r, want)
        # visually distinct: filled vs open markers
        assert coll_m.get_facecolors()[0][3] > 0 and len(coll_r.get_facecolors()) == 0
        texts = {t.get_text() for t in ax.texts}
        assert {e.label + e.config_mark for e in measured} <= texts
    assert ax_rho.get_legend() is not None and ax_mse.get_legend() is not None
    assert (130.0, 0.687) in [tuple(p) for p in _offsets(ax_rho, "reported")[1]]
    human = [line for line in ax_rho.get_lines() if line.get_label().startswith("human consistency")]
    assert len(human) == 1 and human[0].get_linestyle() == "--"
    assert list(human[0].get_ydata()) == [0.68, 0.68]
    assert not [line for line in ax_mse.get_lines() if line.get_label().startswith("human")]


def test_figure_files_are_reproducible(latest, tmp_path):
    first, second = ([p.read_bytes() for p in figures.save(figures.figure3(entries(latest), "demo", {"lamem": 0.68}),
                                                           tmp_path / stem)] for stem in ("a", "b"))
    assert first == second and all(len(b) > 1000 for b in first)


# ------------------------------------------------------------------ bootstrap and compare


def test_counts_spearman_equals_scipy_on_the_explicit_resample():
    rng = np.random.default_rng(3)
    x = np.round(rng.random(40), 1)  # many ties
    y = np.round(x + rng.normal(0, 0.3, 40), 1)
    counts, _ = next(compare.draws(40, 1, 20, seed=5))
    assert counts.shape == (20, 40) and (counts.sum(axis=1) == 40).all()
    ours = compare.spearman_counts(x, y, counts)
    ref = [spearmanr(np.repeat(x, c), np.repeat(y, c))[0] for c in counts]
    np.testing.assert_allclose(ours, ref, atol=1e-12)
    mse = compare.mse_counts(x, y, counts)
    np.testing.assert_allclose(mse, [np.mean((np.repeat(y, c) - np.repeat(x, c)) ** 2) for c in counts])


def test_bootstrap_is_seeded_and_paired():
    a = next(compare.draws(30, 1, 10, seed=1))[0]
    b = next(compare.draws(30, 1, 10, seed=1))[0]
    c = next(compare.draws(30, 1, 10, seed=2))[0]
    assert (a == b).all() and not (a == c).all()


def _pred_files(run_a, run_b, splits):
    return {k: (BOARD / "predictions" / run_a / f"split{k}.csv", BOARD / "predictions" / run_b / f"split{k}.csv")
            for k in splits}


def test_compare_point_estimate_and_interval():
    result = compare.compare_predictions("resnet50-lamem", "amnet", "demo",
                                         _pred_files("r50-new", "amnet-1", (1, 2, 3)), n_boot=N_BOOT)
    diffs = []
    for k in (1, 2, 3):
        _, t, pa = compare.read_predictions(BOARD / "predictions" / "r50-new" / f"split{k}.csv")
        _, _, pb = compare.read_predictions(BOARD / "predictions" / "amnet-1" / f"split{k}.csv")
        diffs.append(spearmanr(t, pa)[0] - spearmanr(t, pb)[0])
    assert result.d_rho == pytest.approx(np.mean(diffs), abs=1e-12)
    low, high = result.d_rho_ci
    assert low < result.d_rho < high
    assert result.n_images == {1: 30, 2: 30, 3: 30}


def test_compare_a_model_with_itself_finds_no_difference():
    result = compare.compare_predictions("x", "y", "demo", _pred_files("r50-new", "r50-new", (1, 2)), n_boot=50)
    assert result.d_rho_ci == (0.0, 0.0) and result.d_mse_ci == (0.0, 0.0)
    assert result.verdict().startswith("no significant difference in rho: Δrho = +0.000")


def test_verdict_wording():
    base = dict(a="A", b="B", dataset="d", splits=[1], n_images={1: 9}, n_boot=9, seed=0,
                rho_a=0.7, rho_b=0.669, mse_a=0.008, mse_b=0.009)
    better = compare.Comparison(**base, d_rho_ci=(0.012, 0.050), d_mse_ci=(-0.002, -0.0001))
    assert better.verdict() == ("A better than B: Δrho = +0.031 [+0.012, +0.050]; "
                                "A lower MSE: ΔMSE = -0.00100 [-0.00200, -0.00010]")
    # a tiny but significant difference shows its digits instead of "+0.000 [+0.000, +0.000]"
    tiny = compare.Comparison(**dict(base, rho_a=0.48012, rho_b=0.48001, mse_a=0.0158450, mse_b=0.0158537),
                              d_rho_ci=(0.00004, 0.00019), d_mse_ci=(-0.0000141, -0.0000032))
    assert tiny.verdict() == ("A better than B: Δrho = +0.00011 [+0.00004, +0.00019]; "
                              "A lower MSE: ΔMSE = -0.000009 [-0.000014, -0.000003]")
    assert "Δ(a-b) +0.00011  95% CI [+0.00004, +0.00019]" in tiny.render()
    worse = compare.Comparison(**base, d_rho_ci=(-0.05, -0.01), d_mse_ci=(-0.002, 0.001))
    assert worse.verdict().startswith("B better than A: ")
    assert "no significant difference in MSE" in worse.verdict()


def test_compare_matches_images_by_name_and_checks_scores(tmp_path):
    src_a = BOARD / "predictions" / "r50-new" / "split1.csv"
    lines = src_a.read_text().splitlines()
    b = tmp_path / "b.csv"
    b.write_text("\n".join([lines[0]] + lines[1:][::-1][:20]) + "\n")  # other order, 20 images
    names, t, pa, pb = compare.match_split(src_a, b, 1)
    assert len(t) == len(names) == 20 and np.array_equal(pa, pb)
    b.write_text(lines[0] + "\nnot-there.jpg,0.5,0.5\n")
    with pytest.raises(MembenchError, match="share no test image"):
        compare.match_split(src_a, b, 1)
    name, score, pred = lines[1].split(",")
    b.write_text(f"{lines[0]}\n{name},{float(score) + 0.1},{pred}\n")
    with pytest.raises(MembenchError, match="different data"):
        compare.match_split(src_a, b, 1)


def test_cli_compare_prints_an_interval_and_a_verdict(capsys):
    assert main(["compare", "resnet50-lamem", "amnet", "--leaderboard", str(BOARD), "--n-boot", "100"]) == 0
    out = capsys.readouterr().out
    assert "resnet50-lamem: run r50-new (preset smoke, 3 split(s))" in out
    assert "95% CI [" in out and "\nverdict: " in out and "splits 1,2,3" in out


def test_compare_help_describes_the_bootstrap_it_runs(capsys):
    """The bootstrap draws from the union of the splits' test images once per replicate
    (membench.report.compare), not each split on its own as the help used to say."""
    with pytest.raises(SystemExit):
        main(["compare", "--help"])
    text = " ".join(capsys.readouterr().out.split())
    assert "from the union of the common splits' test images once and applies that one draw to every split" in text
    assert "per split, images matched by name" not in text
    assert "one draw for every split" in compare.Comparison(
        "a", "b", "demo", [1], {1: 3}, 10, 0, 0.5, 0.4, 0.01, 0.02, None, None).render()


def test_cli_compare_errors(capsys):
    board = ["--leaderboard", str(BOARD)]
    assert main(["compare", "resnet50-lamem", "nothere", *board]) == 2
    assert "no run of model 'nothere'" in capsys.readouterr().err
    assert main(["compare", "resnet50-lamem", "amnet", "--dataset", "lamem", *board]) == 2
    assert ("have no runs on the same dataset and preset matching lamem (resnet50-lamem: demo/paper, "
            "demo/smoke; amnet: demo/smoke, lamem/paper)") in capsys.readouterr().err
    assert main(["compare", "resnet50-lamem", "resnet50-lamem", *board]) == 2
    assert "presets paper, smoke; choose one with --preset" in capsys.readouterr().err
    assert main(["compare", "resnet50-lamem", "ours", "--splits", "2", *board]) == 2
    assert "split(s) 2 not run by both" in capsys.readouterr().err


def test_cli_compare_with_no_common_split(tmp_path, capsys):
    board = tmp_path / "board"
    shutil.copytree(BOARD, board)
    with open(board / "results.csv", newline="") as f:
        rows = list(csv.DictReader(f))
    from membench.results.leaderboard import RESULT_COLUMNS, csv_text

    keep = [r for r in rows if r["run_id"] in ("r50-new", "amnet-1")]
    for r in keep:
        if r["run_id"] == "amnet-1":
            r["split"] = str(int(r["split"]) + 10)
    (board / "results.csv").write_text(csv_text(keep, RESULT_COLUMNS))
    assert main(["compare", "resnet50-lamem", "amnet", "--leaderboard", str(board)]) == 2
    assert "have no split in common on demo" in capsys.readouterr().err


# ------------------------------------------------------------------ CLI report


def test_cli_report_end_to_end(tmp_path, capsys):
    out = tmp_path / "out"
    assert main(["report", "--leaderboard", str(BOARD), "--out", str(out), "--n-boot", "50",
                 "--dataset", "demo"]) == 0
    printed = capsys.readouterr().out
    assert f"wrote {out / 'table2_demo.tex'}" in printed
    assert sorted(p.name for p in out.iterdir()) == sorted([
        "README.md", "reported.csv", "fig3_demo.png", "fig3_demo.svg", ".membench-report.json", "index.html",
        "site",
        *(f"table{t}_demo.{x}" for t in (1, 2) for x in ("md", "tex", "csv"))])
    assert "amnet-lamem" not in (out / "table2_demo.md").read_text()


def test_cli_report_errors(tmp_path, capsys):
    assert main(["report", "--leaderboard", str(tmp_path / "nope"), "--out", str(tmp_path)]) == 2
    assert "leaderboard directory does not exist" in capsys.readouterr().err
    assert main(["report", "--leaderboard", str(BOARD), "--out", str(tmp_path), "--dataset", "lnsim"]) == 2
    assert "no run on dataset 'lnsim'" in capsys.readouterr().err


def test_cli_report_without_runs_shows_reported_numbers_only(tmp_path, capsys):
    board = tmp_path / "board"
    board.mkdir()
    assert main(["report", "--leaderboard", str(board), "--n-boot", "0"]) == 0
    assert "reported numbers only" in capsys.readouterr().out
    text = (board / "table2_lamem.md").read_text()
    assert "Measured: no run on lamem in this leaderboard." in text
    assert (board / "README.md").is_file() and (board / "fig3_lamem.svg").is_file()


def test_report_and_compare_do_not_import_torch_at_parse_time():
    import subprocess
    import sys

    code = ("import sys; from membench.cli import build_parser; build_parser(); "
            "import membench.commands.report, membench.commands.compare; "
            "print('torch' in sys.modules, 'matplotlib' in sys.modules, 'pandas' in sys.modules)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.split() == ["False", "False", "False"]


# ------------------------------------------------------------------ with the runner's writer


def _add_run(out, model, run_id, noise, splits=(1, 2)):
    from membench.results.leaderboard import RESULT_COLUMNS, add_result

    for k in splits:
        rng = np.random.default_rng([k, int(noise * 1000)])
        names = [f"{i:08d}.jpg" for i in range(40)]
        truth = np.random.default_rng(k).uniform(0.3, 1.0, 40)
        pred = truth + rng.normal(0, noise, 40)
        row = dict.fromkeys(RESULT_COLUMNS, "")
        row.update(run_id=run_id, model=model, dataset="demo", split=k, rho=float(spearmanr(truth, pred)[0]),
                   mse=float(np.mean((pred - truth) ** 2)), n_test=40, params_total=1_000_000,
                   params_used=1_000_000, preset="smoke", hardware="test CPU", git_commit="abc",
                   timestamp="2026-11-29T05:00:00Z")
        add_result(out, row, list(zip(names, truth.tolist(), pred.tolist())), {"run_id": run_id})


def test_report_and_compare_read_what_the_leaderboard_writer_writes(tmp_path, capsys):
    board = tmp_path / "D"
    _add_run(board, "resnet50-lamem", "run-a", 0.02)
    _add_run(board, "amnet", "run-b", 0.5)
    assert main(["report", "--leaderboard", str(board), "--out", str(board), "--n-boot", "100"]) == 0
    text = (board / "table2_demo.md").read_text()
    _, rows = md_table(text)
    amnet = rows["amnet [preset=smoke]"]
    assert amnet[4] == "2" and amnet[5] == "1M" and amnet[2].startswith("[")
    assert (board / "table1_demo.tex").is_file() and (board / "fig3_demo.svg").is_file()
    capsys.readouterr()
    assert main(["compare", "resnet50-lamem", "amnet", "--leaderboard", str(board), "--n-boot", "200"]) == 0
    out = capsys.readouterr().out
    assert "verdict: resnet50-lamem better than amnet: Δrho = +" in out


@pytest.mark.slow
def test_done_when_runner_report_compare(tmp_path, monkeypatch, capsys):
    """The issue's acceptance run: ~10 minutes on 2 CPU cores (10 smoke jobs)."""
    monkeypatch.setenv("MEMBENCH_HOME", str(tmp_path / "home"))
    board = tmp_path / "D"
    assert main(["run", "--model", "resnet50-lamem,amnet", "--splits", "all", "--data", "demo",
                 "--preset", "smoke", "--pretrained", "none", "--out", str(board)]) == 0
    assert main(["report", "--leaderboard", str(board), "--out", str(board)]) == 0
    for name in ("table1_demo.md", "table1_demo.tex", "table2_demo.md", "table2_demo.tex",
                 "fig3_demo.png", "fig3_demo.svg", "README.md"):
        assert (board / name).is_file(), name
    _, rows = md_table((board / "table2_demo.md").read_text())
    assert rows["amnet [preset=smoke; pretrained=none]"][4] == rows["resnet50-lamem [preset=smoke; pretrained=none]"][4] == "5"
    capsys.readouterr()
    assert main(["compare", "resnet50-lamem", "amnet", "--leaderboard", str(board)]) == 0
    out = capsys.readouterr().out
    assert "95% CI [" in out and "\nverdict: " in out


def test_runner_then_report_then_compare(tiny_plugin, demo_root, tmp_path, run_cli):
    """The done-when chain with the real runner on tiny models (the full one is the slow test)."""
    board = tmp_path / "D"
    code, _, err = run_cli("run", "--model", "tiny-cnn,tiny-chain", "--data", demo_root, "--dataset", "demo",
                           "--splits", "1,2", "--preset", "smoke", "--out", board)
    assert code == 0, err
    code, out, err = run_cli("report", "--leaderboard", board, "--out", board, "--n-boot", "100")
    assert code == 0, err
    _, rows = md_table((board / "table2_demo.md").read_text())
    cnn, chain = rows["tiny-cnn [preset=smoke]"], rows["tiny-chain [preset=smoke]"]
    assert cnn[4] == chain[4] == "2"
    # its numbers were "published" on lamem: only the parameter count sits in a demo row
    assert cnn[5] == "249" and cnn[6:10] == ["N/A", "N/A", "249", "made up for tests"]
    fig = (board / "fig3_demo.svg").read_text()
    assert "tiny-chain" in fig
    code, out, err = run_cli("compare", "tiny-cnn", "tiny-chain", "--leaderboard", board, "--n-boot", "100")
    assert code == 0, err
    assert "splits 1,2" in out and "95% CI [" in out and "\nverdict: " in out


def test_report_preset_filter_and_no_bootstrap(tmp_path, capsys):
    assert main(["report", "--leaderboard", str(BOARD), "--out", str(tmp_path), "--preset", "nightly"]) == 2
    assert "no run with preset 'nightly' (presets: paper, smoke)" in capsys.readouterr().err
    es = report.build_entries("table2", "demo", report.latest_runs(report.load_runs(BOARD)), SPECS, n_boot=0)
    assert all(e.rho_ci is None for e in es)
    assert "ρ 95% CI: not computed (--n-boot 0)." in report.render_markdown("table2", "demo", es, n_boot=0)


def test_point_labels_cover_neither_each_other_nor_a_marker():
    """The committed LNSIM leaderboard: three configurations of ResMem at 131.7M parameters
    within 0.003 of each other (their labels printed over each other in Fig. 3(b) before).
    Every label stays inside its axes, clear of every other label and of every point."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg

    lnsim = Path(__file__).resolve().parents[1] / "leaderboards" / "lnsim"
    runs = report.load_runs(lnsim)
    es = report.build_entries("table2", "lnsim", runs, report.registry_specs(sorted({r.model for r in runs})),
                              n_boot=0)
    fig = figures.figure3(es, "lnsim", {"lnsim": 0.779})
    renderer = FigureCanvasAgg(fig).get_renderer()
    fig.draw_without_rendering()
    pts = figures.points(es, "lnsim")
    for ax, metric in zip(fig.axes[:2], ("rho", "mse")):
        placed = pts[f"measured_{metric}"] + pts[f"reported_{metric}"]
        assert sorted(t.get_text() for t in ax.texts) == sorted(label for label, _, _ in placed)
        boxes = [t.get_window_extent(renderer) for t in ax.texts]
        markers = [ax.transData.transform((x, y)) for _, x, y in placed]
        frame = ax.get_window_extent(renderer)
        for i, box in enumerate(boxes):
            assert frame.x0 <= box.x0 and box.x1 <= frame.x1 and frame.y0 <= box.y0 and box.y1 <= frame.y1
            assert not any(box.overlaps(other) for other in boxes[i + 1:]), ax.texts[i].get_text()
            assert not any(box.x0 - 4 < x < box.x1 + 4 and box.y0 - 4 < y < box.y1 + 4 for x, y in markers)
