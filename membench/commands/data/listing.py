"""`membench datasets`: every registered dataset, what its scores measure, its splits,
licence and human consistency, whether it is installed, and how to get it."""

from __future__ import annotations

ALL_COLUMNS = ["dataset", "size", "splits", "score", "human_consistency", "license", "installed", "get",
               "homepage", "citation", "summary", "plugin"]


def add_parser(sub) -> None:
    from membench.output import FORMATS

    p = sub.add_parser(
        "datasets", help="list registered datasets: size, splits, scores, licence, installed or not",
        description="List every registered dataset: its size, splits, which measure its scores are, its "
                    "human consistency (the ceiling) and where that number comes from, its licence, "
                    "whether it is installed ($MEMBENCH_DATA/NAME, default $MEMBENCH_HOME/data/NAME) "
                    "and how to get it. --format csv/json adds the citation and homepage.")
    p.add_argument("--format", choices=FORMATS, default="table")
    p.set_defaults(func=cmd_datasets)


def _sources():
    from membench.commands.data.download import SOURCES

    return SOURCES


def how_to_get(spec) -> str:
    SOURCES = _sources()
    if not spec.needs_path:
        return "built in"
    if spec.name in SOURCES:
        return f"membench data download {spec.name}"
    if spec.manual_download:
        return f"by hand: {spec.manual_download}; then membench data import {spec.name} FILE|DIR"
    return spec.homepage


def installed(spec) -> str:
    from membench.data.datasets import installed_path

    if not spec.needs_path:
        return "built in"
    path = installed_path(spec.name)
    if path is None:
        generic = not (spec.homepage or spec.manual_download or spec.name in _sources())
        return "any folder: --data DIR" if generic else "no"
    return f"{path} -> {path.resolve()}" if path.is_symlink() else str(path)


def rows() -> list[dict]:
    from membench import registry

    out = []
    for name, spec in sorted(registry.datasets().items()):
        consistency = spec.consistency_note or (f"{spec.human_consistency:.2f}"
                                                if spec.human_consistency is not None else "")
        out.append({"dataset": name, "size": spec.size, "splits": spec.split_scheme, "score": spec.score_measure,
                    "human_consistency": consistency, "license": spec.license, "installed": installed(spec),
                    "get": how_to_get(spec), "homepage": spec.homepage, "citation": spec.citation,
                    "summary": spec.summary, "plugin": spec.plugin})
    return out


def cmd_datasets(args) -> int:
    from membench.data.datasets import data_home
    from membench.output import emit

    listed = rows()
    if args.format != "table":
        emit(listed, ALL_COLUMNS, args.format)
        return 0
    # One block per dataset: the descriptions are sentences, which a table folds unreadably.
    labels = {"size": "size", "splits": "splits", "score": "score", "human_consistency": "human consistency",
              "license": "licence", "installed": "installed", "get": "get it"}
    for r in listed:
        print(r["dataset"])
        for key, label in labels.items():
            if r[key]:
                print(f"  {label:18s} {r[key]}")
    print(f"\ninstalled datasets live in {data_home()}/NAME (set MEMBENCH_DATA to move them); "
          "`--dataset NAME` without --data reads them; --format csv or json adds citations")
    return 0
