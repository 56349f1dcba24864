"""`membench models`, `membench plugins`, `membench params`: what is registered."""

from __future__ import annotations

import json

from membench.output import FORMATS, emit, millions


def add_parser(sub) -> None:
    p = sub.add_parser("models", help="list registered models",
                       description="List registered models with their reported numbers.")
    p.add_argument("pattern", nargs="?", default="all", help="name, comma list, wildcard or 'all'; "
                   "naming models also describes their options (--model-option NAME=VALUE)")
    p.add_argument("--format", choices=FORMATS, default="table")
    p.set_defaults(func=cmd_models)

    p = sub.add_parser("plugins", help="list loaded plugins (JSON)")
    p.set_defaults(func=cmd_plugins)

    p = sub.add_parser("params", help="measured vs reported parameter counts",
                       description="Instantiate models on the meta device (no weights, no memory) and "
                                   "count parameters: total, used in forward, trainable per stage.")
    p.add_argument("models", nargs="*", default=["all"], metavar="MODEL",
                   help="names, comma lists or wildcards (default: all)")
    p.add_argument("--model-option", action="append", default=[], metavar="KEY=VALUE",
                   help="count the configuration with this model option (repeatable; every model "
                        "named must declare it), e.g. width=16")
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
            "options": ", ".join(o.name if o.default is None else f"{o.name}={o.default_text}"
                                 for o in spec.options),
            "tags": ",".join(spec.tags), "license": spec.license,
            "released_weights": ",".join(rw.name for rw in spec.released_weights) or None,
            "summary": spec.summary, "plugin": spec.plugin,
        })
    fams = registry.families()
    columns = list(rows[0]) if rows else ["model"]
    if args.format == "table":  # the terminal view keeps what fits; csv/json carry everything
        columns = [c for c in columns if c not in ("summary", "plugin")]
    emit(rows, columns, args.format, title="membench models (reported numbers are from each model's paper)")
    if fams and args.format == "table":
        print("model families (any name under the prefix): " + ", ".join(f"{f}/<name>" for f in fams))
    if args.format == "table":
        _print_options(registry.select_models(args.pattern), detailed=args.pattern != "all")
    return 0


def _print_options(specs, detailed: bool) -> None:
    """Each named model's declared options (`--model-option NAME=VALUE`): type, default, help."""
    if not detailed:
        print("`membench models NAME` describes a model's options (--model-option NAME=VALUE)")
        return
    for spec in specs:
        if not spec.options:
            print(f"{spec.name}: no model options")
            continue
        print(f"{spec.name} options (--model-option NAME=VALUE):")
        for option in spec.options:
            print(f"  {option.describe()}")


def options_used(spec, given: dict[str, str]) -> str:
    """Every declared option with the value a configuration uses: "width=16" (given),
    "beam=1" (default), "captioner=unset"."""
    return "; ".join(f"{o.name}={given.get(o.name, o.default_text or 'unset')}" for o in spec.options)


def cmd_plugins(args) -> int:
    from membench import plugins

    print(json.dumps(plugins.describe(), indent=2))
    return 0


def cmd_params(args) -> int:
    from membench import registry
    from membench.commands.common import key_values
    from membench.options import check_for_models
    from membench.results import params

    given = key_values(args.model_option, "--model-option")
    specs = []
    seen = set()
    for expr in args.models:
        for spec in registry.select_models(expr):
            if spec.name not in seen:
                seen.add(spec.name)
                specs.append(spec)
    # every error before any counting; each model gets the options it declares
    checked = check_for_models([(spec.name, spec.options) for spec in specs], given)
    rows = []
    for spec in specs:
        c = params.count(spec, checked[spec.name])
        # the spec's expected count is for its default options
        expected = spec.params_expected.get("total") if not checked[spec.name] else None
        rows.append({
            "model": spec.name,
            "options": options_used(spec, checked[spec.name]),
            "params_total": c["total"],
            "params_used": c["used"],
            "params_trainable": "; ".join(f"{k}={v}" for k, v in c["trainable"].items()),
            "params_reported": c["reported"],
            "ratio_to_reported": round(c["total"] / c["reported"], 4) if c["reported"] else None,
            "matches_spec": None if expected is None else expected == c["total"],
        })
    cols = ["model", "options", "params_total", "params_used", "params_trainable", "params_reported",
            "ratio_to_reported", "matches_spec"]
    emit(rows, cols, args.format, title="parameters: measured (meta device) vs reported")
    return 0
