"""Opening a registered dataset by name: the plugin that reads it, on the data it names.

Where installed datasets live: `$MEMBENCH_DATA/<name>`, by default
`$MEMBENCH_HOME/data/<name>` (what `membench data download NAME` and `membench data import
NAME` fill when no `--to` is given). `--dataset NAME` without `--data` reads that copy.
"""

from __future__ import annotations

import os
from pathlib import Path

from membench.errors import MembenchError

DATA_ENV = "MEMBENCH_DATA"


def data_home() -> Path:
    """$MEMBENCH_DATA, or $MEMBENCH_HOME/data: one folder per installed dataset."""
    from membench.util.files import membench_home

    given = os.environ.get(DATA_ENV, "").strip()
    return Path(given).expanduser() if given else membench_home() / "data"


def installed_path(name: str) -> Path | None:
    """data_home()/name when it is a non-empty directory (or a link to one), else None."""
    path = data_home() / name
    try:
        return path if path.is_dir() and any(path.iterdir()) else None
    except OSError:
        return None


def open_named(name: str | None, data: str, options: dict[str, str]):
    """The dataset object of plugin `name` (default: lamem for a directory, demo for
    "demo") on `data`, with its --dataset-option values (see DatasetSpec). A dataset that
    needs a directory, named without --data (`data` is "demo"), reads its installed copy."""
    from membench import registry

    name = name or ("demo" if data == "demo" else "lamem")
    spec = registry.get_dataset(name)
    check_options(spec, options)
    if spec.needs_path:
        if data == "demo":
            installed = installed_path(name)
            if installed is None:
                raise MembenchError(f"dataset {name!r} needs --data DIR (nothing installed at {data_home() / name}; "
                                    "`membench datasets` says how to get it)")
            data = str(installed)
        root = Path(data).expanduser()
        if not root.exists():
            from membench.data.layout import LAYOUT_HINT

            hint = LAYOUT_HINT if name == "lamem" else f"`membench datasets` says how to get {name}: {spec.summary}"
            raise MembenchError(f"data directory does not exist; {hint}", root)
        if not root.is_dir():  # e.g. the CSV of a csv dataset given instead of its folder
            hint = (f"; for a CSV of scores give its folder: --data {root.parent} --dataset csv --dataset-option "
                    f"csv={root.name}" if root.suffix.lower() == ".csv" else "")
            raise MembenchError(f"--data must be the dataset's directory, not a file{hint}", root)
        if not os.access(root, os.R_OK | os.X_OK):
            raise MembenchError("data directory is not readable", root)
        return spec.opener()(root, options)
    root = None if data == "demo" else Path(data).expanduser()
    return spec.opener()(root, options)


def check_options(spec, options: dict[str, str]) -> None:
    """--dataset-option keys against those the dataset declares (`-` read as `_`): an
    unknown one is a one-line error naming the known ones, never silently ignored."""
    import difflib

    if spec.options is None:
        return
    for key in options:
        if str(key).strip().replace("-", "_") in spec.options:
            continue
        if not spec.options:
            raise MembenchError(f"unknown dataset option {key!r}: dataset {spec.name!r} takes no options")
        close = difflib.get_close_matches(key, list(spec.options), n=1, cutoff=0.5)
        hint = f"; did you mean {close[0]}?" if close else ""
        known = ", ".join(f"{k} ({v})" for k, v in spec.options.items())
        raise MembenchError(f"unknown dataset option {key!r} for {spec.name}{hint} (known options: {known})")


def open_described(data_args: dict):
    """The dataset that a job description names (`dataset`, `data`, `dataset_option`, as
    `membench run` hands them to the jobs it starts in other processes)."""
    from membench.options import key_values

    return open_named(data_args.get("dataset"), data_args["data"],
                      key_values(data_args.get("dataset_option") or [], "--dataset-option"))
