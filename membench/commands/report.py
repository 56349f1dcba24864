"""`membench report`: Tables 1 and 2 and Fig. 3 from a leaderboard directory."""

from __future__ import annotations

from membench.commands.common import non_negative

EPILOG = """examples:
  membench report --leaderboard runs/demo
  membench report --leaderboard leaderboards --out leaderboards --count-params
  membench report --leaderboard runs/lamem --dataset lamem --n-boot 500
"""


def add_parser(sub) -> None:
    import argparse

    p = sub.add_parser(
        "report", help="render Tables 1-2 (Markdown, LaTeX, CSV), Fig. 3 and an HTML site from a leaderboard",
        description="Render the paper's Table 1 (ablations), Table 2 (all models) and Fig. 3 from "
                    "DIR/results.csv and the stored predictions, one set per dataset, measured numbers "
                    "beside the numbers each model's paper reported. Writes OUT/README.md and a static HTML "
                    "site (OUT/index.html, a page per run in OUT/site/; self-contained, works offline) too.",
        epilog=EPILOG, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--leaderboard", default="leaderboards", metavar="DIR",
                   help="directory holding results.csv and predictions/ (default: leaderboards)")
    p.add_argument("--out", metavar="DIR", help="where to write (default: the leaderboard directory)")
    p.add_argument("--dataset", metavar="NAME", help="only this dataset (default: every dataset with runs)")
    p.add_argument("--preset", metavar="NAME", help="only runs of this preset")
    p.add_argument("--n-boot", type=int, default=2000, metavar="N",
                   help="bootstrap resamples for the rho 95%% CI; 0 skips it (default: 2000)")
    p.add_argument("--seed", type=non_negative, default=0, help="bootstrap seed (default: 0)")
    p.add_argument("--no-figure", action="store_true", help="skip Fig. 3")
    p.add_argument("--no-site", action="store_true",
                   help="skip the HTML site (OUT/index.html and a page per run in OUT/site/)")
    p.add_argument("--count-params", action="store_true",
                   help="also count the parameters of every registered model (meta device) into OUT/params.csv")
    p.set_defaults(func=cmd_report)


def cmd_report(args) -> int:
    from pathlib import Path

    from membench.errors import MembenchError
    from membench.report import outputs, site
    from membench.report import tables as report

    if args.n_boot < 0:
        raise MembenchError("--n-boot must be 0 or more")
    leaderboard = Path(args.leaderboard)
    out = Path(args.out) if args.out else leaderboard
    runs = report.load_runs(leaderboard)
    specs = report.registry_specs(sorted({r.model for r in runs}))
    # only files membench wrote are replaced: checked before anything is written
    planned = outputs.check(out, {"lamem", *(r.dataset for r in runs), *([args.dataset] if args.dataset else [])},
                            params=args.count_params, site_runs=None if args.no_site else [r.run_id for r in runs])
    written = []
    try:
        if args.count_params:
            written.append(report.write_params_csv(specs, out / "params.csv"))
        if not runs:
            print(f"membench: no results.csv in {leaderboard}: tables show reported numbers only")
        written += report.make_report(leaderboard, out, specs, dataset=args.dataset, preset=args.preset,
                                      n_boot=args.n_boot, seed=args.seed, figure=not args.no_figure,
                                      site=None if args.no_site else site.write)
    finally:
        outputs.record(out, planned)
    for path in written:
        print(f"wrote {path}")
    return 0
