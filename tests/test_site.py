"""The HTML site of `membench report` (membench.report.site): what its pages hold, read back
with the standard library's HTML parser and compared with the Markdown/CSV the same report
wrote and with the leaderboard's own files; self-contained; byte-for-byte regeneration of
the committed leaderboards. The browser test is tests/test_site_browser.py."""

from __future__ import annotations

import csv
import json
import re
import shutil
from html.parser import HTMLParser
from pathlib import Path

import pytest

from membench.report import site
from membench.report import tables as report

ROOT = Path(__file__).resolve().parents[1]
DATA = Path(__file__).parent / "data" / "report"
LNSIM = ROOT / "leaderboards" / "lnsim"


class Page(HTMLParser):
    """Tables (by id: rows of (text, data-sort)), elements with data-tip, links, scripts."""

    def __init__(self, text: str):
        super().__init__()
        self.tables: dict[str, list[list[tuple[str, str | None]]]] = {}
        self.tips: list[tuple[str, dict]] = []
        self.links: list[str] = []
        self.external: list[str] = []
        self._table = self._cell = None
        self.feed(text)

    def handle_starttag(self, tag, attrs):
        a = dict(attrs)
        if tag == "table":
            self._table = self.tables.setdefault(a.get("id", f"t{len(self.tables)}"), [])
        elif tag == "tr" and self._table is not None:
            self._table.append([])
        elif tag in ("td", "th") and self._table is not None:
            self._cell = [a.get("data-sort"), ""]
        if "data-tip" in a:
            self.tips.append((tag, a))
        for key in ("href", "src"):
            if key in a:
                self.links.append(a[key])
        if (tag == "script" and "src" in a) or (tag == "link" and a.get("rel") == "stylesheet"):
            self.external.append(a.get("src") or a.get("href"))

    def handle_endtag(self, tag):
        if tag in ("td", "th") and self._cell is not None and self._table is not None:
            self._table[-1].append((self._cell[1].strip(), self._cell[0]))
            self._cell = None
        elif tag == "table":
            self._table = None

    def handle_data(self, data):
        if self._cell is not None:
            self._cell[1] += data


def md_rows(path: Path) -> list[list[str]]:
    rows = [line.strip("|").split(" | ") for line in path.read_text().splitlines() if line.startswith("| ")]
    return [[c.strip().replace("\\|", "|") for c in row] for row in rows[1:]]


@pytest.fixture(scope="module")
def board(tmp_path_factory):
    """The report fixture's leaderboard with a site, plus a run JSON holding two splits' curves."""
    out = tmp_path_factory.mktemp("site") / "board"
    shutil.copytree(DATA / "leaderboard", out)
    history = [{"epoch": e, "lr": 0.01 / e, "train_loss": 1.0 / e, "val_rho": 0.1 * e, "val_mse": 0.05 / e}
               for e in (1, 2, 3)]
    stages = {"stage1": {"epochs_run": 3, "best_epoch": 3, "best_val_rho": 0.3, "history": history}}
    (out / "runs").mkdir()
    (out / "runs" / "amnet-1.json").write_text(json.dumps({"run_id": "amnet-1", "stages": stages,
                                                           "split_stages": {"1": stages, "3": stages}}))
    report.make_report(out, out, _specs(), n_boot=50, human={"lamem": 0.68}, site=site.write)
    return out


def _specs():
    from test_report import SPECS  # the report tests' model specs (reported numbers of the paper)

    return SPECS


def test_tables_hold_the_markdown_cells_and_sort_values(board):
    page = Page((board / "index.html").read_text())
    for name in ("table1_demo", "table2_demo", "table2_lamem"):
        table, ds = name.split("_")
        html_rows = page.tables[f"{table}-{ds}"][1:]  # the header row first
        assert [[text for text, _ in row] for row in html_rows] == md_rows(board / f"{name}.md")
    with open(board / "table2_demo.csv", newline="") as f:
        csv_rows = list(csv.DictReader(f))
    for row, expected in zip(page.tables["table2-demo"][1:], csv_rows):
        assert row[1][1] == (f"{float(expected['rho_mean']):.12g}" if expected["rho_mean"] else "")
        assert row[5][1] == (f"{int(expected['params_total']):.12g}" if expected["params_total"] else "")


def test_committed_lnsim_site_tables_are_its_markdown_tables_footnote_marks_included():
    """Table 1 and Table 2 share one footnote numbering (Table 2 first): the site showed
    Table 1's marks numbered on their own (¹ where the Markdown has ⁴)."""
    page = Page((LNSIM / "index.html").read_text())
    for table in ("table1", "table2"):
        html_rows = page.tables[f"{table}-lnsim"][1:]
        assert [[text for text, _ in row] for row in html_rows] == md_rows(LNSIM / f"{table}_lnsim.md")


def test_committed_lnsim_site_shows_every_comparison_of_the_markdown():
    """compare_lnsim.csv holds the fine-tuned vs zero-shot pair and the pairs comparisons.csv
    lists (the probes against ResMem zero-shot); the site showed the first kind only."""
    from html import unescape

    page = unescape((LNSIM / "index.html").read_text())
    with open(LNSIM / "compare_lnsim.csv", newline="") as f:
        verdicts = [r["verdict"] for r in csv.DictReader(f)]
    assert len(verdicts) >= 3 and all(f"verdict: {v}" in page for v in verdicts)


def test_fig3_has_one_point_per_measured_row_with_its_details(board):
    page = Page((board / "index.html").read_text())
    with open(board / "table2_demo.csv", newline="") as f:
        measured = [r for r in csv.DictReader(f) if r["rho_mean"] and r["params_total"]]
    text = (board / "index.html").read_text()
    panel = text[text.index('id="fig3-demo"'):text.index("</svg>", text.index('id="fig3-demo"'))]
    rho_panel = panel[panel.index('data-metric="rho"'):panel.index('data-metric="mse"')]
    points = re.findall(r'<circle class="measured"[^>]*data-tip="([^"]*)"', rho_panel)
    assert len(points) == len(measured)
    for r in measured:
        tip = next(t for t in points if f"ρ = {float(r['rho_mean']):.3f}" in t)
        assert f"configuration: {r['configuration'] or 'protocol'} ({r['config_id']})" in tip.replace("&amp;", "&")
        assert f"splits: {r['n_splits']}" in tip
        if r["rho_ci_low"]:
            assert f"95% CI [{float(r['rho_ci_low']):.3f}, {float(r['rho_ci_high']):.3f}]" in tip
    lamem = text[text.index('id="fig3-lamem"'):]
    assert 'class="human"' in lamem and "human consistency (lamem): 0.680" in lamem
    assert any(tag == "rect" and "reported, not measured here" in a["data-tip"] for tag, a in page.tips)


def test_transfer_heat_map_cells_are_the_transfer_matrix(board):
    from membench.report import transfer
    from membench.results.leaderboard import load_runs

    page = Page((board / "index.html").read_text())
    matrix = transfer.matrix_rows(transfer.views(load_runs(board)), n_boot=50, seed=0)
    cells = {row[0][0]: [text for text, _ in row[1:]] for row in page.tables["transfer-matrix"][1:]}
    columns = [text for text, _ in page.tables["transfer-matrix"][0][1:]]
    for r in matrix:
        expected = f"{r['rho_mean']:.3f}"
        assert cells[r["_row"]][columns.index(r["_column"])].startswith(expected)


def test_run_pages_show_predictions_and_every_splits_curves(board):
    page = (board / "site" / "amnet-1.html").read_text()
    with open(board / "results.csv", newline="") as f:
        rows = [r for r in csv.DictReader(f) if r["run_id"] == "amnet-1"]
    for r in rows:  # the scatter's legend: each split's rho as recorded
        assert f"split {r['split']}: ρ = {float(r['rho']):.3f}, MSE = {float(r['mse']):.4f}" in page
    assert page.count('<path class="dots"') >= len(rows)
    assert set(re.findall(r'data-tip="(split \d) · stage1: 3 epochs', page)) == {"split 1", "split 3"}
    polylines = re.findall(r'<polyline class="curve" points="([^"]*)"', page)
    assert len(polylines) == 4 * 2 and all(len(p.split()) == 3 for p in polylines)  # 4 curves x 2 splits, 3 epochs


def test_pages_are_self_contained_and_every_link_resolves(board):
    """The one stylesheet and script sit in site/, copied from membench's own; nothing else is loaded."""
    for path in [board / "index.html", *sorted((board / "site").glob("*.html"))]:
        text = path.read_text()
        page = Page(text)
        assert [(path.parent / src).resolve() for src in page.external] == [
            (board / "site" / "site.css").resolve(), (board / "site" / "site.js").resolve()]
        assert set(re.findall(r"https?://[^\s\"'<>)]+", text)) <= {"http://www.w3.org/2000/svg"}
        for link in page.links:
            target, _, fragment = link.partition("#")
            if target:
                assert (path.parent / target).is_file(), f"{path.name}: {link}"
            if fragment:
                doc = (path.parent / target).read_text() if target else text
                assert f'id="{fragment}"' in doc, f"{path.name}: {link}"
    for name in ("site.css", "site.js"):
        assert (board / "site" / name).read_bytes() == (ROOT / "membench" / "report" / "static" / name).read_bytes()


def test_site_is_deterministic(board, tmp_path):
    again = tmp_path / "again"
    shutil.copytree(board, again)
    report.make_report(again, again, _specs(), n_boot=50, human={"lamem": 0.68}, site=site.write)
    for path in [board / "index.html", *sorted((board / "site").glob("*.html"))]:
        assert (again / path.relative_to(board)).read_bytes() == path.read_bytes(), path.name


def test_a_run_json_without_every_split_names_the_split_it_holds():
    """leaderboards/lnsim's cpu run was recorded before the run JSON kept every split: its one
    history is split 5's (the only row with its best validation rho and epoch count)."""
    page = (LNSIM / "site" / "resnet50-lamem__lnsim__cpu__s0__7d44560bc9.html").read_text()
    assert "holds the stages of split 5 only" in page
    record = json.loads((LNSIM / "runs" / "resnet50-lamem__lnsim__cpu__s0__7d44560bc9.json").read_text())
    n = len(record["stages"]["stage1"]["history"])
    assert all(len(p.split()) == n for p in re.findall(r'<polyline class="curve" points="([^"]*)"', page))


@pytest.mark.parametrize("board_dir", ["leaderboards", "leaderboards/lnsim"])
def test_committed_leaderboards_regenerate_byte_for_byte(board_dir, tmp_path, run_cli):
    """`membench report` on a copy of the committed directory rewrites every text file it holds
    (Markdown, LaTeX, CSV, HTML) with the same bytes (figures: matplotlib's bytes vary by version)."""
    copy = tmp_path / "leaderboards"
    shutil.copytree(ROOT / "leaderboards", copy)
    target = copy / Path(board_dir).relative_to("leaderboards")
    code, _, err = run_cli("report", "--leaderboard", target)
    assert code == 0, err
    original = ROOT / board_dir
    texts = [p for p in original.rglob("*") if p.is_file() and p.suffix in (".md", ".tex", ".csv", ".html")]
    assert any(p.suffix == ".html" for p in texts)
    for path in texts:
        assert (target / path.relative_to(original)).read_bytes() == path.read_bytes(), path
