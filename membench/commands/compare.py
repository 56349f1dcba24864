"""`membench compare A B`: paired bootstrap of two models (each in one configuration) on
their stored predictions."""

from __future__ import annotations

from membench.commands.common import non_negative

EPILOG = """examples:
  membench compare resnet50-lamem amnet --leaderboard runs/demo
  membench compare ours squalli --leaderboard runs/lamem --splits 1,3 --n-boot 5000
  membench compare "ours[captioner=random]" ours --leaderboard runs/lamem   # two configurations of one model
  membench compare ours[1a2b3c4d] resnet50-lamem                             # a configuration by its id
"""


def add_parser(sub) -> None:
    import argparse

    p = sub.add_parser(
        "compare", help="paired bootstrap of the difference between two models",
        description="Paired bootstrap over test images (membench/report/compare.py): each replicate draws, "
                    "with replacement, from the union of the common splits' test images once and applies "
                    "that one draw to every split and to both models (images matched by name; the splits' "
                    "test sets overlap, so resampling each split on its own would understate the spread); "
                    "its difference is the mean over splits of the per-split difference A - B in rho and "
                    "MSE. Prints the 95% percentile interval of the differences and a verdict (whether it "
                    "excludes 0). Runs are picked per (model, dataset, configuration), as the report's rows: "
                    "name a configuration as MODEL[LABEL or ID] (the label or id the report prints, or "
                    "'protocol'); without one, a model with several configurations uses its protocol "
                    "configuration, or is an error listing them. Uses the stored per-image predictions of "
                    "the configuration's latest run; never re-runs a model.",
        epilog=EPILOG, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("a", metavar="A", help="model name, or MODEL[CONFIGURATION] (label or id)")
    p.add_argument("b", metavar="B", help="model name, or MODEL[CONFIGURATION] (label or id)")
    p.add_argument("--leaderboard", default="leaderboards", metavar="DIR",
                   help="directory holding results.csv and predictions/ (default: leaderboards)")
    p.add_argument("--dataset", metavar="NAME", help="needed when both models have runs on several datasets")
    p.add_argument("--preset", metavar="NAME", help="use runs of this preset (needed when both models have several)")
    p.add_argument("--splits", default="all", metavar="K,K", help="splits to use, e.g. 1,3 (default: all in common)")
    p.add_argument("--n-boot", type=non_negative, default=2000, metavar="N",
                   help="bootstrap replicates, each one draw from the union of the splits' test images "
                        "(default: 2000)")
    p.add_argument("--seed", type=non_negative, default=0, help="bootstrap seed (default: 0)")
    p.set_defaults(func=cmd_compare)


def cmd_compare(args) -> int:
    from pathlib import Path

    from membench import registry
    from membench.errors import MembenchError
    from membench.report import compare
    from membench.report import tables as report

    runs = report.load_runs(Path(args.leaderboard))
    if not runs:
        raise MembenchError("no results.csv here: run `membench run` first", args.leaderboard)
    groups = compare.pick_runs(runs, args.a, args.b, args.dataset, args.preset, specs=registry.models())
    run_a, run_b = (compare.latest_of(g) for g in groups)
    # the verdict names the models; two configurations of one model are named by their labels
    label_a, label_b = (g.model for g in groups) if groups[0].model != groups[1].model \
        else (g.label for g in groups)
    if label_a == label_b:
        label_a, label_b = f"A: {label_a}", f"B: {label_b}"
    dataset = run_a.dataset
    in_both = [k for k in run_a.splits if k in run_b.splits]
    wanted = in_both if args.splits == "all" else _parse_splits(args.splits)
    absent = [str(k) for k in wanted if k not in in_both]
    if absent:
        raise MembenchError(f"split(s) {','.join(absent)} not run by both {args.a} and {args.b} "
                            f"(common: {','.join(map(str, in_both)) or 'none'})")
    common = sorted(set(wanted))
    files = {k: (run_a.predictions(k), run_b.predictions(k)) for k in common}
    rows = {k: (run_a.row(k), run_b.row(k)) for k in common}  # each file is checked against its row
    result = compare.compare_predictions(label_a, label_b, dataset, files, n_boot=args.n_boot, seed=args.seed,
                                         rows=rows)
    for run, group in zip((run_a, run_b), groups):
        print(f"{run.model}: run {run.run_id} (preset {run.preset or '?'}, {len(run.splits)} split(s))")
        others = f"; latest of its {len(group.runs)} seeds" if len(group.runs) > 1 else ""
        print(f"  configuration: {group.label} ({group.config_id}{others})")
    print(result.render())
    return 0


def _parse_splits(text: str) -> list[int]:
    from membench.errors import MembenchError

    try:
        splits = [int(s) for s in text.split(",") if s.strip()]
    except ValueError:
        raise MembenchError(f"--splits expects 'all' or a comma list of integers, not {text!r}") from None
    if not splits:
        raise MembenchError("--splits is empty")
    return splits
