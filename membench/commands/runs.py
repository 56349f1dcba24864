"""`membench runs`: the job directories under the work directory, with status and size;
`membench runs clean` removes the finished and orphaned ones."""

from __future__ import annotations

from pathlib import Path

EPILOG = """examples:
  membench runs                       # every job under $MEMBENCH_HOME/runs: status, checkpoints, size
  membench runs clean --dry-run       # what clean would remove
  membench runs clean                 # remove finished and orphaned jobs (never running or interrupted)
"""


def add_parser(sub) -> None:
    import argparse

    from membench.output import FORMATS

    p = sub.add_parser("runs", help="list job directories (status, checkpoints, size); `runs clean` removes "
                                    "finished ones",
                       description="List the job directories under the work directory with their status "
                                   "(running, finished, unrecorded: finished but its row never reached the "
                                   "leaderboard, interrupted: resumable with --resume, orphaned: nothing to "
                                   "resume), whether its checkpoints were kept (kept; removed: smoke and quick "
                                   "jobs drop theirs unless run with --keep-checkpoints, so `evaluate --from-run` "
                                   "cannot use them; none) and disk size. `clean` removes finished and orphaned "
                                   "jobs; their leaderboard rows stay. Symbolic links there are never followed.",
                       epilog=EPILOG, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("action", nargs="?", choices=("list", "clean"), default="list")
    p.add_argument("--work-dir", type=Path, default=None, help="default: $MEMBENCH_HOME/runs")
    p.add_argument("--dry-run", action="store_true", help="clean: only say what would be removed")
    p.add_argument("--format", choices=FORMATS, default="table")
    p.set_defaults(func=cmd_runs)


def cmd_runs(args) -> int:
    from membench.output import emit
    from membench.results import runs
    from membench.util.files import membench_home

    work_dir = args.work_dir or membench_home() / "runs"
    if args.work_dir is None and not work_dir.exists():  # a fresh machine: nothing has run yet
        print(f"no runs yet in {work_dir}")
        return 0
    columns = ["run", "split", "status", "checkpoints", "size"]
    found = runs.scan(work_dir)
    if args.action == "list":
        emit([r.row() for r in found], columns if args.format == "table" else [*columns, "bytes", "path"],
             args.format, title=f"runs in {work_dir}")
        if args.format == "table":
            print(f"{len(found)} job(s), {runs.human(sum(r.bytes for r in found))}")
        _notes(runs, work_dir, found)
        return 0
    removed = runs.clean(work_dir, dry_run=args.dry_run, found=found)
    _notes(runs, work_dir, found)
    verb = "would remove" if args.dry_run else "removed"
    for r in removed:
        print(f"{verb} {r.path} ({r.status}, {runs.human(r.bytes)})")
    print(f"{verb} {len(removed)} job(s), {runs.human(sum(r.bytes for r in removed))}")
    return 0


def _notes(runs, work_dir: Path, found) -> None:
    """What `clean` never removes and why (on stderr: --format csv/json stay parseable)."""
    import sys

    for path in runs.links(work_dir):
        print(f"membench: note: {path} is a symbolic link: never followed nor removed (delete the link "
              "itself if it is stale)", file=sys.stderr)
    for r in found:
        if r.status == "unrecorded":
            print(f"membench: note: {r.path} finished, but its row is missing from "
                  f"{runs.leaderboard_of(r.path)}/results.csv (killed before it was written?): kept; the same "
                  "command again (`membench run` with --resume) adds the row from its result.json without "
                  "recomputing", file=sys.stderr)
