"""Reading a leaderboard's results.csv strictly, before anything is written or reported.

The whole file is checked, not only the rows a command needs: a leaderboard is a record,
and a rewrite must never carry a damaged, cut, duplicated or hand-edited value forward
or drop anything. Every problem is a one-line error naming the file and line, and the
file is left exactly as it is:

- the text: UTF-8 without a byte-order mark, `\\n` line ends (a BOM or CRLF means a
  spreadsheet saved it, and spreadsheets round numbers and rewrite dates silently);
- the header: the core columns present, no name empty or repeated;
- every row: as many fields as the header (a row cut in half is refused, not padded),
  core values present, numbers that parse (rho in [-1, 1], MSE >= 0, a split number),
  no (run_id, split) twice. The one non-number accepted is rho `nan`, exactly as membench
  writes it when Spearman's rho is undefined (constant predictions; the row's notes say
  why): the tables show it as undefined and leave it out of means;
- a predictions_sha256, when present, is 64 hexadecimal digits (the sha256 of the split's
  predictions file, checked whenever that file is read: membench.results.leaderboard).

Columns that membench does not know (a user's `my_comment`) are allowed and kept on every
rewrite, after membench's own columns. The known columns are given by the caller:
membench.results.leaderboard.read_results passes its RESULT_COLUMNS (one schema, no copy here).
"""

from __future__ import annotations

import csv
import io
import math
import re
from dataclasses import dataclass, field
from pathlib import Path

from membench.errors import MembenchError

CORE = ("run_id", "model", "dataset", "split", "rho", "mse")
INTEGERS = ("split", "n_test", "params_total", "params_used", "params_trainable", "epochs_run",
            "best_epoch", "seed")
NUMBERS = ("rho", "mse", "best_val_rho", "seconds")
UNDEFINED = "nan"  # rho when Spearman's rho is undefined (membench.results.metrics.undefined_reason)
FIX = "fix or remove the line (membench rewrites nothing until then)"


@dataclass
class ResultsFile:
    path: Path
    known: tuple[str, ...] = ()  # membench's own columns, in their order
    header: list[str] = field(default_factory=list)
    rows: list[dict] = field(default_factory=list)
    lines: list[int] = field(default_factory=list)  # the line each row starts on

    def extra_columns(self) -> list[str]:
        """Columns a user added, in the file's order (kept on every rewrite)."""
        return [c for c in self.header if c not in self.known]

    def columns(self) -> list[str]:
        return list(self.known) + self.extra_columns()


def read_results(path: Path, known) -> ResultsFile:
    """The validated rows of `path` ([] when the file does not exist); `known`: membench's
    own columns (the rest are a user's, kept)."""
    path = Path(path)
    found = ResultsFile(path, tuple(known))
    try:
        raw = path.read_bytes()
    except FileNotFoundError:
        return found
    except OSError as exc:
        raise MembenchError(f"cannot read the leaderboard ({exc.strerror})", path) from None
    text = _text(raw, path)
    if not text.strip():
        return found
    reader = csv.reader(io.StringIO(text, newline=""), strict=True)
    try:
        header = next(reader)
        _check_header(header, path)
        found.header = header
        seen: dict[tuple[str, str], int] = {}
        start = reader.line_num + 1
        for fields in reader:
            line, start = start, reader.line_num + 1
            if not fields:
                raise MembenchError(f"empty line inside the leaderboard; {FIX}", path, line)
            if len(fields) != len(header):
                raise MembenchError(f"damaged leaderboard row: {len(fields)} fields, the header has {len(header)} (cut short, "
                                    f"or a comma added or lost); {FIX}", path, line)
            row = dict(zip(header, fields))
            _check_row(row, path, line)
            key = (row["run_id"], str(int(row["split"])))
            if key in seen:
                raise MembenchError(f"run {key[0]} split {key[1]} is already on line {seen[key]} (a duplicated "
                                    "row would be counted twice); remove one", path, line)
            seen[key] = line
            found.rows.append(row)
            found.lines.append(line)
    except csv.Error as exc:
        raise MembenchError(f"damaged CSV ({exc}); {FIX}", path, reader.line_num or 1) from None
    return found


def _text(raw: bytes, path: Path) -> str:
    bom, crlf = raw.startswith(b"\xef\xbb\xbf"), b"\r\n" in raw
    if bom or crlf:
        what = " and ".join(w for w, on in (("a byte-order mark", bom), ("Windows line ends (CRLF)", crlf)) if on)
        line = 1 if bom else raw[:raw.index(b"\r\n")].count(b"\n") + 1
        raise MembenchError(f"the leaderboard has {what}: a spreadsheet saved it, and spreadsheets may round "
                            "numbers and rewrite dates; restore membench's file, or check every value and save "
                            "it as plain UTF-8 with \\n line ends", path, line)
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        line = raw[:exc.start].count(b"\n") + 1
        raise MembenchError(f"not UTF-8 text (byte 0x{raw[exc.start]:02x}); membench writes UTF-8: "
                            f"{FIX.replace('the line', 'the character')}", path, line) from None


def _check_header(header: list[str], path: Path) -> None:
    if any(not h.strip() for h in header):
        raise MembenchError("the header has an empty column name (a stray comma?)", path, 1)
    repeated = sorted({h for h in header if header.count(h) > 1})
    if repeated:
        raise MembenchError(f"the header names column {repeated[0]!r} twice", path, 1)
    missing = [c for c in CORE if c not in header]
    if missing:
        raise MembenchError(f"the header lacks {', '.join(missing)} (not a membench results.csv, or its "
                            "first line was edited)", path, 1)


def _check_row(row: dict, path: Path, line: int) -> None:
    empty = [c for c in CORE if not row[c].strip()]
    if empty:
        raise MembenchError(f"row has no {', '.join(empty)}; {FIX}", path, line)
    for column in INTEGERS:
        value = row.get(column, "")
        if value != "" and not (value.isdigit() or (value.startswith("-") and value[1:].isdigit())):
            raise MembenchError(f"{column} {value!r} is not a whole number; {FIX}", path, line)
    if int(row["split"]) < 1:
        raise MembenchError(f"split {row['split']!r} is not a split number (1, 2, ...); {FIX}", path, line)
    for column in NUMBERS:
        value = row.get(column, "")
        if (value == "" and column not in CORE) or (column == "rho" and value == UNDEFINED):
            continue
        try:
            number = float(value)
        except ValueError:
            number = math.nan
        if not math.isfinite(number):
            raise MembenchError(f"{column} {value!r} is not a number; {FIX}", path, line)
    rho, mse = float(row["rho"]), float(row["mse"])
    if not math.isnan(rho) and not -1.0 <= rho <= 1.0:
        raise MembenchError(f"rho {row['rho']} is outside [-1, 1]; {FIX}", path, line)
    if mse < 0:
        raise MembenchError(f"mse {row['mse']} is negative; {FIX}", path, line)
    digest = row.get("predictions_sha256", "")
    if digest and not re.fullmatch(r"[0-9a-f]{64}", digest):
        raise MembenchError(f"predictions_sha256 {digest!r} is not a sha256 (64 hexadecimal digits); {FIX}",
                            path, line)
