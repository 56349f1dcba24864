"""Printing tables and machine-readable output in one consistent way."""

from __future__ import annotations

import csv
import json
import sys

FORMATS = ("table", "csv", "json")


def emit(rows: list[dict], columns: list[str], fmt: str, title: str | None = None) -> None:
    """Print rows as a rich table, CSV (header + rows) or a JSON list of objects."""
    if fmt == "json":
        print(json.dumps(rows, indent=2, default=str))
    elif fmt == "csv":
        w = csv.DictWriter(sys.stdout, fieldnames=columns, extrasaction="ignore", lineterminator="\n")
        w.writeheader()
        for r in rows:
            w.writerow({c: "" if r.get(c) is None else r.get(c) for c in columns})
    else:
        from rich.table import Table

        table = Table(title=title)
        for c in columns:
            table.add_column(c, overflow="fold")
        for r in rows:
            table.add_row(*[_fmt(r.get(c)) for c in columns])
        console().print(table)


# Piped output (a file, `less`, `grep`) has no width: rich would assume 80 columns and fold
# every long cell over several lines; tables are printed at their natural width instead.
PIPED_WIDTH = 100_000


def console(stderr: bool = False):
    """A rich Console for tables: the terminal's width on a terminal, unlimited when piped."""
    from rich.console import Console

    stream = sys.stderr if stderr else sys.stdout
    if stream.isatty():
        return Console(stderr=stderr)
    return Console(stderr=stderr, width=PIPED_WIDTH)


def _fmt(v) -> str:
    if v is None or v == "":
        return "—"
    if isinstance(v, int) and not isinstance(v, bool):
        return f"{v:,}"
    if isinstance(v, float):
        return f"{v:.4g}"
    if isinstance(v, (list, tuple)):
        return ", ".join(map(str, v))
    return str(v)


def millions(n: int | None) -> str:
    if n is None:
        return "—"
    return f"{n // 1_000_000}M" if n % 1_000_000 == 0 else f"{n / 1e6:.1f}M"
