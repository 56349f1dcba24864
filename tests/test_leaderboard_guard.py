"""A leaderboard nothing can silently change: results.csv is validated as a whole before
anything is written (run) or read (report, compare); every problem is one line naming
file and line, and the file stays byte for byte as it was. User-added columns are kept."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from membench.errors import MembenchError
from membench.results import leaderboard
from membench.results.leaderboard import read_results

BOARD = Path(__file__).parent / "data" / "report" / "leaderboard"


@pytest.fixture
def board(tmp_path):
    out = tmp_path / "board"
    shutil.copytree(BOARD, out)
    return out


def _lines(board):
    return (board / "results.csv").read_text().splitlines()


def _write(board, lines, newline="\n", bom=b""):
    (board / "results.csv").write_bytes(bom + newline.join(lines).encode() + newline.encode())


def _cell(lines, row, column, value):
    header = lines[0].split(",")
    fields = lines[row].split(",")
    fields[header.index(column)] = value
    lines[row] = ",".join(fields)


CASES = {
    "rho edited to n/a": (lambda ls: _cell(ls, 2, "rho", "n/a"), 3, "rho 'n/a' is not a number"),
    "split written as a word": (lambda ls: _cell(ls, 4, "split", "two"), 5, "split 'two' is not a whole number"),
    "rho outside [-1, 1]": (lambda ls: _cell(ls, 1, "rho", "1.7"), 2, "rho 1.7 is outside"),
    "row cut in half": (lambda ls: ls.__setitem__(3, ls[3][: len(ls[3]) // 2]), 4, "fields, the header has"),
    "duplicated row": (lambda ls: ls.insert(3, ls[2]), 4, "already on line 3"),
    "empty core value": (lambda ls: _cell(ls, 2, "model", ""), 3, "row has no model"),
    "header lost a core column": (lambda ls: ls.__setitem__(0, ls[0].replace("rho", "rh0")), 1, "lacks rho"),
    "header names a column twice": (lambda ls: ls.__setitem__(0, ls[0].replace("notes", "seed")), 1,
                                    "column 'seed' twice"),
}


@pytest.mark.parametrize("case", sorted(CASES))
def test_each_damage_is_one_line_naming_file_and_line(board, case):
    edit, line, message = CASES[case]
    lines = _lines(board)
    edit(lines)
    _write(board, lines)
    with pytest.raises(MembenchError) as err:
        read_results(board / "results.csv")
    assert err.value.path == str(board / "results.csv") and err.value.line == line, str(err.value)
    assert message in str(err.value) and "\n" not in str(err.value)


def test_excel_bom_and_crlf_are_refused_with_the_reason(board):
    lines = _lines(board)
    _write(board, lines, newline="\r\n", bom=b"\xef\xbb\xbf")
    with pytest.raises(MembenchError, match="byte-order mark and Windows line ends.*spreadsheet") as err:
        read_results(board / "results.csv")
    assert err.value.line == 1
    _write(board, lines[:3] + [lines[3] + "\r"] + lines[4:])
    with pytest.raises(MembenchError, match="Windows line ends") as err:
        read_results(board / "results.csv")
    assert err.value.line == 4


def test_a_non_utf8_byte_names_its_line(board):
    raw = (board / "results.csv").read_bytes().replace(b"synthetic fixture", b"synth\xe9tic fixture", 3)
    (board / "results.csv").write_bytes(raw)
    with pytest.raises(MembenchError, match="not UTF-8 text \\(byte 0xe9\\)") as err:
        read_results(board / "results.csv")
    assert err.value.line == 2


def test_user_added_columns_are_accepted_and_listed(board):
    lines = _lines(board)
    lines[0] += ",my_comment"
    for i in range(1, len(lines)):
        lines[i] += f",note {i}"
    _write(board, lines)
    found = read_results(board / "results.csv")
    assert found.extra_columns() == ["my_comment"]
    assert found.columns()[-1] == "my_comment" and found.rows[0]["my_comment"] == "note 1"
    assert list(found.columns()[:len(leaderboard.RESULT_COLUMNS)]) == list(leaderboard.RESULT_COLUMNS)


def test_the_committed_fixture_and_an_absent_file_are_fine(tmp_path):
    assert len(read_results(BOARD / "results.csv").rows) >= 10
    assert read_results(tmp_path / "none.csv").rows == []


# ---- the guard in front of every writer and reader --------------------------------------------


def _damage(board, case):
    lines = _lines(board)
    CASES[case][0](lines)
    _write(board, lines)
    return (board / "results.csv").read_bytes()


def _snapshot(board):
    return {p.relative_to(board): p.read_bytes() for p in board.rglob("*") if p.is_file() and p.name != ".lock"}


@pytest.mark.parametrize("case", ["rho edited to n/a", "row cut in half", "duplicated row"])
def test_nothing_is_written_next_to_a_damaged_leaderboard(board, case):
    _damage(board, case)
    before = _snapshot(board)
    row = dict.fromkeys(leaderboard.RESULT_COLUMNS, "")
    row.update(run_id="new-1", model="tiny-cnn", dataset="demo", split=1, rho=0.5, mse=0.01, preset="smoke")
    with pytest.raises(MembenchError) as err:
        leaderboard.add_result(board, row, [("a.jpg", 0.5, 0.4)], {"run_id": "new-1"})
    assert err.value.path == str(board / "results.csv") and err.value.line == CASES[case][1]
    assert _snapshot(board) == before  # not results.csv, summary, predictions nor provenance


@pytest.mark.parametrize("command", ["report", "compare"])
@pytest.mark.parametrize("case", ["rho edited to n/a", "split written as a word", "non-UTF-8 byte"])
def test_report_and_compare_refuse_a_damaged_leaderboard_in_one_line(board, case, command, run_cli, tmp_path):
    if case == "non-UTF-8 byte":
        raw = (board / "results.csv").read_bytes()
        (board / "results.csv").write_bytes(raw.replace(b"synthetic fixture", b"synth\xe9tic fixture", 1))
        line = 2
    else:
        _damage(board, case)
        line = CASES[case][1]
    args = (["report", "--leaderboard", board, "--out", tmp_path / "report", "--no-figure", "--n-boot", "10"]
            if command == "report" else ["compare", "amnet", "resnet50-lamem", "--leaderboard", board, "--n-boot", "10"])
    code, out, err = run_cli(*args)
    assert code == 2 and "Traceback" not in err, err
    (message,) = [ln for ln in err.splitlines() if ln.startswith("membench: error:")]
    assert f"{board / 'results.csv'}:{line}:" in message
    assert not (tmp_path / "report").exists() or not list((tmp_path / "report").iterdir())


def test_a_user_column_survives_a_run_that_adds_rows(tiny_plugin, demo_root, tmp_path, run_cli):
    args = ("run", "--model", "tiny-cnn", "--data", demo_root, "--preset", "smoke", "--pretrained", "none",
            "--device", "cpu", "--out", tmp_path / "lb", "--work-dir", tmp_path / "work")
    assert run_cli(*args, "--splits", "1")[0] == 0
    path = tmp_path / "lb" / "results.csv"
    lines = path.read_text().splitlines()
    path.write_text("\n".join([lines[0] + ",my_comment"] + [ln + ",looks fine" for ln in lines[1:]]) + "\n")
    code, _, err = run_cli(*args, "--splits", "2")
    assert code == 0, err
    found = read_results(path)
    assert found.header[-1] == "my_comment" and [r["my_comment"] for r in found.rows] == ["looks fine", ""]
    assert sorted(int(r["split"]) for r in found.rows) == [1, 2]


def test_a_run_stops_before_training_when_a_rho_cell_says_n_a(tiny_plugin, demo_root, board, tmp_path, run_cli):
    before = _damage(board, "rho edited to n/a")
    summary = (board / "summary.csv").read_bytes() if (board / "summary.csv").exists() else None
    code, _, err = run_cli("run", "--model", "tiny-cnn", "--data", demo_root, "--splits", "1", "--preset", "smoke",
                           "--pretrained", "none", "--device", "cpu", "--out", board, "--work-dir", tmp_path / "work")
    assert code == 2 and "Traceback" not in err
    (message,) = [ln for ln in err.splitlines() if ln.startswith("membench: error:")]
    assert f"{board / 'results.csv'}:3: rho 'n/a' is not a number" in message
    assert (board / "results.csv").read_bytes() == before
    assert ((board / "summary.csv").read_bytes() if (board / "summary.csv").exists() else None) == summary
    assert not list((tmp_path / "work").rglob("*.pt"))  # nothing trained
