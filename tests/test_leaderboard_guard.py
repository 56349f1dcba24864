"""A leaderboard nothing can silently change: results.csv is validated as a whole before
anything is written (run) or read (report, compare); every problem is one line naming
file and line, and the file stays byte for byte as it was. User-added columns are kept."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from membench import leaderboard
from membench.errors import MembenchError
from membench.results_check import read_results

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
