"""Opening a registered dataset by name: the plugin that reads it, on the data it names."""

from __future__ import annotations

import os
from pathlib import Path

from membench.errors import MembenchError


def open_named(name: str | None, data: str, options: dict[str, str]):
    """The dataset object of plugin `name` (default: lamem for a directory, demo for
    "demo") on `data`, with its --dataset-option values (see DatasetSpec)."""
    from membench import registry

    name = name or ("demo" if data == "demo" else "lamem")
    spec = registry.get_dataset(name)
    if spec.needs_path:
        if data == "demo":
            raise MembenchError(f"dataset {name!r} needs --data DIR")
        root = Path(data).expanduser()
        if not root.exists():
            from membench.data.layout import LAYOUT_HINT

            raise MembenchError(f"data directory does not exist; {LAYOUT_HINT}", root)
        if not root.is_dir():  # e.g. the CSV of a csv dataset given instead of its folder
            hint = (f"; for a CSV of scores give its folder: --data {root.parent} --dataset csv --dataset-option "
                    f"csv={root.name}" if root.suffix.lower() == ".csv" else "")
            raise MembenchError(f"--data must be the dataset's directory, not a file{hint}", root)
        if not os.access(root, os.R_OK | os.X_OK):
            raise MembenchError("data directory is not readable", root)
        return spec.opener()(root, options)
    root = None if data == "demo" else Path(data).expanduser()
    return spec.opener()(root, options)


def open_described(data_args: dict):
    """The dataset that a job description names (`dataset`, `data`, `dataset_option`, as
    `membench run` hands them to the jobs it starts in other processes)."""
    from membench.options import key_values

    return open_named(data_args.get("dataset"), data_args["data"],
                      key_values(data_args.get("dataset_option") or [], "--dataset-option"))
