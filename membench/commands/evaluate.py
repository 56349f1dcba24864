"""`membench evaluate`: score a finished run's checkpoints on another dataset (transfer)."""

from __future__ import annotations

from pathlib import Path

from membench.commands.common import add_data_options, membench_home, open_dataset

EPILOG = """examples:
  membench evaluate --from-run RUN_ID --data /data/lnsim --dataset lnsim --out leaderboards/transfer
  membench evaluate --from-run ~/.cache/membench/runs/RUN_ID --data demo --eval-part all
  membench evaluate --from-run RUN_ID --data my_images/ --dataset csv --splits 1,3 --feature-store ~/fs
RUN_ID is the run_id column of results.csv; its jobs live in WORK/RUN_ID (--work-dir), and
`membench runs` says whether their checkpoints were kept. A csv dataset is a folder of
images with one *.csv of scores in it (or --dataset-option csv=FILE; docs/user-guide.md).
Rows record trained_on (the run's dataset) and dataset (the evaluation dataset);
`membench report` renders them as a transfer matrix (transfer.md, transfer.csv).
"""


def add_parser(sub) -> None:
    import argparse

    p = sub.add_parser(
        "evaluate", help="score a finished run's checkpoints on another dataset (cross-dataset transfer)",
        description="Rebuild the model of every split of a finished run (its options and preprocessing), "
                    "load that split's checkpoint (or the released weights of a --train none run) and score "
                    "the test images of the same split of the evaluation dataset (--eval-part test) or every "
                    "image of it (--eval-part all). Writes one leaderboard row per split with trained_on and "
                    "dataset, per-image predictions and provenance naming the source run. Never trains.",
        epilog=EPILOG, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--from-run", required=True, metavar="RUN",
                   help="run id (under --work-dir) or the run's directory WORK/<run_id>")
    add_data_options(p)
    p.add_argument("--eval-part", choices=("test", "all"), default="test",
                   help="test: checkpoint k on test split k of the evaluation data (default); all: every "
                        "checkpoint on every image of it")
    p.add_argument("--out", type=Path, default=Path("leaderboards"), help="leaderboard directory")
    p.add_argument("--work-dir", type=Path, default=None,
                   help="where runs keep their jobs (default: $MEMBENCH_HOME/runs)")
    p.add_argument("--device", default="auto", help="auto, cpu or cuda")
    p.add_argument("--batch-size", type=int, default=32)
    p.add_argument("--on-bad-image", choices=("fail", "skip"), default="fail",
                   help="missing or corrupt images: stop (default) or leave them out, counted")
    p.add_argument("--feature-store", type=Path, default=None, metavar="DIR",
                   help="reuse and keep frozen outputs in DIR across runs (models with the frozen-output "
                        "protocol; exact, see docs/lnsim.md)")
    p.set_defaults(func=cmd_evaluate)


def cmd_evaluate(args) -> int:
    from rich.console import Console
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

    from membench.data.feature_store import activate
    from membench.engine.crosseval import evaluate_run, find_run
    from membench.output import emit

    work_dir = args.work_dir or membench_home() / "runs"
    run_dir = find_run(args.from_run, work_dir)
    dataset = open_dataset(args)
    splits = None
    if args.splits.strip() != "all":
        from membench.commands.compare import _parse_splits

        splits = _parse_splits(args.splits)
    store = activate(args.feature_store) if args.feature_store else None
    console = Console(stderr=True)
    with Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
                  console=console, transient=True) as progress:
        rows = evaluate_run(run_dir, dataset, part=args.eval_part, splits=splits, out=args.out,
                            work_dir=work_dir, device=args.device, batch_size=args.batch_size,
                            on_bad_image=args.on_bad_image, say=progress.console.print,
                            progress=progress)
    emit(rows, ["model", "trained_on", "dataset", "split", "n_test", "rho", "mse", "seconds"], "table",
         title=f"cross-dataset evaluation (leaderboard: {args.out})")
    if store is not None:
        console.print(f"feature store {store.root}: {store.hits} hits, {store.misses} computed")
    return 0
