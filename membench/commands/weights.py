"""`membench weights list|fetch|import`: the authors' released weights of a model.

    membench weights fetch amnet            download the archive its authors published, install it
    membench weights import amnet FILE      install from an archive (or unpacked folder) you have
    membench run --model amnet --train none --data DIR --splits all     evaluate them
"""

from __future__ import annotations

from pathlib import Path

from membench.errors import MembenchError
from membench.output import FORMATS, emit


def add_parser(sub) -> None:
    p = sub.add_parser("weights", help="the authors' released weights of a model (list, fetch, import)",
                       description="Download or import the weights a model's authors published, checked "
                                   "tensor by tensor against membench's model and installed one checkpoint "
                                   "per split under $MEMBENCH_HOME/weights; `membench run --train none` "
                                   "then evaluates them.")
    wsub = p.add_subparsers(dest="weights_command", metavar="ACTION", required=True)

    q = wsub.add_parser("list", help="models that declare released weights, and what is installed")
    q.add_argument("--format", choices=FORMATS, default="table")
    q.set_defaults(func=cmd_list)

    q = wsub.add_parser("fetch", help="download a model's released weights and install them")
    q.add_argument("model")
    q.add_argument("--release", default=None,
                   help="which release (default: the model's first with a download address)")
    q.add_argument("--url", default=None, help="download from this address instead (a mirror)")
    q.add_argument("--dir", type=Path, default=None,
                   help="where the archive is kept (default: $MEMBENCH_HOME/downloads)")
    q.set_defaults(func=cmd_fetch)

    q = wsub.add_parser("import", help="install released weights from an archive you already have")
    q.add_argument("model")
    q.add_argument("archive", type=Path, help="the archive as published, or the folder it was unpacked into")
    q.add_argument("--release", default=None, help="which release (default: the model's first)")
    q.set_defaults(func=cmd_import)


def cmd_list(args) -> int:
    from membench import registry
    from membench.weights import released

    rows = []
    for spec in registry.select_models("all"):
        found = released.installed(spec) if spec.released_weights else None
        for rw in spec.released_weights:
            mine = found is not None and found.release.name == rw.name
            rows.append({
                "model": spec.name, "release": rw.name, "per_split": rw.per_split,
                "download": rw.url or f"by hand: {rw.source}", "size": rw.size, "license": rw.license,
                "installed": (("splits " + ",".join(map(str, found.splits())) if found.splits() else "all splits")
                              if mine else "no"),
            })
    columns = ["model", "release", "per_split", "size", "installed", "download"]
    if args.format != "table":  # the terminal keeps what fits
        columns.insert(4, "license")
    emit(rows, columns, args.format, title="released weights (the authors' own)")
    return 0


def cmd_fetch(args) -> int:
    from membench import registry
    from membench.weights import released

    spec = registry.get_model(args.model)
    rw = released.find_release(spec, args.release)  # (no release declared: one line)
    if args.release is None:
        rw = released.default_release(spec)  # the first with a download address
    home = released.weights_root().parent
    archive = released.fetch(spec, rw, args.dir or home / "downloads", url=args.url)
    print(f"downloaded {archive}")
    try:
        return _install(spec, archive, rw.name)
    except MembenchError as exc:
        from membench.data.download import discard

        if not discard(archive):  # not membench's own download: the user's file stays
            raise
        raise MembenchError(f"{exc.message} (the downloaded {archive.name} was removed: run again, or pass --url "
                            "with another address)", exc.path, exc.line) from None


def cmd_import(args) -> int:
    from membench import registry

    return _install(registry.get_model(args.model), args.archive, args.release)


def _install(spec, archive: Path, release: str | None) -> int:
    from rich.console import Console

    from membench.weights import released

    console = Console(stderr=True)
    with console.status(f"checking and converting {archive.name} ..."):
        manifest = released.import_archive(spec, archive, release, say=console.print)
    where = released.release_dir(spec, released.find_release(spec, manifest["release"]))
    splits = ", ".join(manifest["checkpoints"])
    print(f"installed {manifest['release']} for {spec.name} ({'splits ' + splits if manifest['per_split'] else 'all splits'}) "
          f"in {where}")
    print(f"evaluate: membench run --model {spec.name} --train none --data DIR --splits all")
    return 0
