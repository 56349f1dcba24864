"""`membench models`, `membench plugins`, `membench params`: what is registered."""

from __future__ import annotations

import json

from membench.output import FORMATS, emit, millions


def add_parser(sub) -> None:
    p = sub.add_parser("models", help="list registered models",
                       description="List registered models with their reported numbers.")
    p.add_argument("pattern", nargs="?", default="all", help="name, comma list, wildcard or 'all'")
    p.add_argument("--format", choices=FORMATS, default="table")
    p.set_defaults(func=cmd_models)

    p = sub.add_parser("plugins", help="list loaded plugins (JSON)")
    p.set_defaults(func=cmd_plugins)

    p = sub.add_parser("params", help="measured vs reported parameter counts",
                       description="Instantiate models on the meta device (no weights, no memory) and "
                                   "count parameters: total, used in forward, trainable per stage.")
    p.add_argument("models", nargs="*", default=["all"], metavar="MODEL",
                   help="names, comma lists or wildcards (default: all)")
    p.add_argument("--format", choices=FORMATS, default="table")
    p.set_defaults(func=cmd_params)


def cmd_models(args) -> int:
    from membench import registry

    rows = []
    for spec in registry.select_models(args.pattern):
        rep = spec.reported
        rows.append({
            "model": spec.name,
            "rho_reported": rep.rho if rep else None, "mse_reported": rep.mse if rep else None,
            "params_reported": millions(rep.params) if rep and rep.params else None,
            "input": "x".join(map(str, spec.preprocess.input_size)),
            "tags": ",".join(spec.tags), "license": spec.license,
            "summary": spec.summary, "plugin": spec.plugin,
        })
    fams = registry.families()
    columns = list(rows[0]) if rows else ["model"]
    if args.format == "table":  # the terminal view keeps what fits; csv/json carry everything
        columns = [c for c in columns if c not in ("summary", "plugin")]
    emit(rows, columns, args.format, title="membench models (reported numbers are from each model's paper)")
    if fams and args.format == "table":
        print("model families (any name under the prefix): " + ", ".join(f"{f}/<name>" for f in fams))
    return 0


def cmd_plugins(args) -> int:
    from membench import plugins

    print(json.dumps(plugins.describe(), indent=2))
    return 0


def cmd_params(args) -> int:
    from membench import params, registry

    rows = []
    seen = set()
    for expr in args.models:
        for spec in registry.select_models(expr):
            if spec.name in seen:
                continue
            seen.add(spec.name)
            c = params.count(spec)
            expected = spec.params_expected.get("total")
            rows.append({
                "model": spec.name,
                "params_total": c["total"],
                "params_used": c["used"],
                "params_trainable": "; ".join(f"{k}={v}" for k, v in c["trainable"].items()),
                "params_reported": c["reported"],
                "ratio_to_reported": round(c["total"] / c["reported"], 4) if c["reported"] else None,
                "matches_spec": None if expected is None else expected == c["total"],
            })
    cols = ["model", "params_total", "params_used", "params_trainable", "params_reported",
            "ratio_to_reported", "matches_spec"]
    emit(rows, cols, args.format, title="parameters: measured (meta device) vs reported")
    return 0
