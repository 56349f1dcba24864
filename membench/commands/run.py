"""`membench run`: train and evaluate models on dataset splits, write leaderboard rows."""

from __future__ import annotations

from pathlib import Path

from membench.commands.common import (
    add_data_options,
    add_image_options,
    apply_image_options,
    key_values,
    membench_home,
    model_options,
    non_negative,
    open_dataset,
)

HELP_EPILOG = """examples:
  membench run --model resnet50-lamem --data demo --preset smoke --pretrained none --splits 1   # works anywhere, offline
  membench run --model ours --splits all --data demo --preset smoke --pretrained none --model-option captioner=random
  membench run --model ours --splits all --data /data/lamem --device cuda   # the paper protocol
  membench run --model resnet50-lamem --data demo --preset quick --pretrained none
  membench run --model 'resnet50*,amnet' --data /data/lamem --splits 1,3 --device cuda
  membench run --model resmem --data /data/lamem --train none   # evaluate only
  membench run --model all --data /data/lamem --launcher slurm --slurm-partition gpu   # one Slurm job each
  membench run --model resnet50-lamem --data demo --preset quick --pretrained none --log tensorboard
"""


def add_parser(sub) -> None:
    import argparse

    p = sub.add_parser("run", help="train + evaluate models, write leaderboard rows",
                       description="Execute each model's training recipe on each split and record test "
                                   "metrics (Spearman's rho, MSE) in the leaderboard directory.",
                       epilog=HELP_EPILOG, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model", required=True, help="name, comma list, wildcard or 'all'")
    add_data_options(p)
    _add_storage_options(p)
    from membench.engine.job import PRESETS

    p.add_argument("--preset", default="paper", choices=tuple(PRESETS),
                   help="paper: the recipe exactly (default); smoke: a handful of images, one epoch per "
                        "stage; quick: a CPU-sized learning check at 64x64; cpu: every image at 64x64, "
                        "12 epochs per stage (the largest CPU-sized recipe)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--device", default="auto", help="auto, cpu or cuda")
    p.add_argument("--workers", type=non_negative, default=None, help="data loader workers (default: 0 on CPU)")
    p.add_argument("--patience", type=int, default=10,
                   help="early stopping: epochs without a better validation rho (default 10)")
    p.add_argument("--pretrained", choices=("auto", "none"), default="auto",
                   help="none: random initialisation instead of published/ImageNet weights")
    p.add_argument("--init", choices=("imagenet", "scratch"), default="imagenet",
                   help="stage-1 initialisation (the paper says 'from scratch'; see docs)")
    p.add_argument("--train", choices=("full", "none"), default="full",
                   help="none: evaluate only (needs --checkpoint or the model's own weights)")
    p.add_argument("--checkpoint", type=Path, default=None, help="weights to evaluate with --train none")
    p.add_argument("--model-option", action="append", default=[], metavar="KEY=VALUE",
                   help="option for model builders, e.g. captioner=random (repeatable)")
    p.add_argument("--on-bad-image", choices=("fail", "skip"), default="fail",
                   help="missing or corrupt images: stop (default) or leave them out, counted")
    p.add_argument("--precision", choices=("fp32", "bf16"), default="fp32",
                   help="fp32 (default, every device): the exact protocol; bf16: autocast on CUDA, faster, its "
                        "effect on rho not measured yet. The output head and predictions are fp32 either way; "
                        "bf16 runs are labelled [precision=bf16] as their own configuration (docs/performance.md)")
    p.add_argument("--compile", action="store_true",
                   help="torch.compile the model (CUDA graphs on cuda; speed only, same protocol)")
    p.add_argument("--frozen-train-cache", type=int, default=0, metavar="K",
                   help="stages that freeze their large parts: run the frozen nets once on K augmented views "
                        "per training image and train on view (epoch mod K); an approximation, recorded as "
                        "such (default 0: exact, frozen nets on every augmented image)")
    p.add_argument("--feature-store", type=Path, default=None, metavar="DIR",
                   help="keep the frozen parts' outputs of models with the frozen-output protocol in DIR and reuse "
                        "them across splits and runs (exact: keyed by the frozen weights and the exact input "
                        "tensor; recorded in provenance; see docs/lnsim.md)")
    p.add_argument("--jobs-per-gpu", type=int, default=None, metavar="N",
                   help="run the (model, split) jobs as separate processes, N at a time on each GPU, "
                        "each with the protocol's batch size (see docs/performance.md)")
    p.add_argument("--gpus", default=None, metavar="all|K|0,2",
                   help="GPUs for --jobs-per-gpu (default: all visible)")
    add_image_options(p)
    from membench.scale.launch import add_launcher_options

    add_launcher_options(p)
    p.set_defaults(func=cmd_run)


def _add_storage_options(p) -> None:
    """Where results and job state go, and how much of the job state stays on disk."""
    p.add_argument("--out", type=Path, default=Path("leaderboards"), help="leaderboard directory")
    p.add_argument("--work-dir", type=Path, default=None,
                   help="checkpoints and job state (default: $MEMBENCH_HOME/runs)")
    p.add_argument("--resume", action="store_true",
                   help="reuse finished jobs and continue unfinished ones from their last checkpoint")
    p.add_argument("--keep-last", action="store_true",
                   help="keep each finished stage's last.pt (optimizer state; default: removed, best.pt stays)")
    p.add_argument("--keep-checkpoints", action="store_true",
                   help="smoke/quick presets: keep the checkpoints after success (default: removed; see "
                        "`membench runs`)")
    p.add_argument("--log", action="append", default=[], metavar="TRACKER[=WHERE]",
                   help="also log per-epoch loss, validation rho/MSE, learning rate and the configuration to "
                        "tensorboard[=DIR] (default DIR ./tensorboard) or mlflow[=TRACKING_URI] (default: "
                        "MLflow's own, ./mlflow.db); repeatable; needs pip install 'membench[tracking]'")


def cmd_run(args) -> int:
    from rich.console import Console

    from membench import registry
    from membench.data.layout import parse_splits
    from membench.engine.job import RunConfig
    from membench.engine.runner import resolve_precision, run_all
    from membench.output import emit

    specs = registry.select_models(args.model)
    apply_image_options(args)  # before any job key or worker: decoding is part of both
    if args.feature_store:
        from membench.data.feature_store import activate

        activate(args.feature_store)
    cfg = RunConfig(
        out=args.out, work_dir=args.work_dir or membench_home() / "runs", preset=args.preset,
        seed=args.seed, device=args.device, workers=args.workers, resume=args.resume,
        patience=args.patience, pretrained=args.pretrained != "none", init=args.init,
        train=args.train, checkpoint=args.checkpoint, on_bad_image=args.on_bad_image,
        options=model_options(args.model_option, specs), compile=args.compile,
        frozen_train_cache=args.frozen_train_cache, keep_last=args.keep_last,
        keep_checkpoints=args.keep_checkpoints, precision=args.precision,
        dataset_options=key_values(args.dataset_option, "--dataset-option"), log=tuple(args.log))
    from membench.results.trackers import check_installed, parse
    from membench.scale.launch import launch, options_from_args

    check_installed(parse(cfg.log))  # every launcher: before any job starts
    cluster = options_from_args(args)
    if cluster is None:  # a cluster's jobs get --precision for the nodes' device (membench.scale.launch)
        cfg = resolve_precision(cfg)  # before any job key: bf16 and fp32 jobs never share a work dir
    dataset = open_dataset(args)
    splits = parse_splits(args.splits, dataset.splits, dataset.root or args.data)
    console = Console(stderr=True)
    for line in notices(specs, dataset, splits, args):
        console.print(line, markup=False, highlight=False)
    if cluster is not None:  # each (model, split) job a Slurm (or submitit-local) job
        data = {"data": args.data, "dataset": args.dataset, "dataset_option": args.dataset_option}
        rows = launch(specs, dataset, splits, cfg, data, args.launcher, cluster, wait=args.wait, say=console.print)
        if rows is None:
            return 0
    elif args.jobs_per_gpu is not None or args.gpus is not None:
        from membench.scale.parallel import run_grid

        data = {"data": args.data, "dataset": args.dataset, "dataset_option": args.dataset_option}
        run_grid(specs, splits, cfg, data, gpus=args.gpus, jobs_per_gpu=args.jobs_per_gpu or 1, say=console.print)
        print(f"all jobs finished. {report_hint(args.out)}")
        return 0
    else:
        rows = run_all(specs, dataset, splits, cfg, console=console)
    emit(_summary(rows), ["model", "dataset", "configuration", "splits", "rho_mean", "rho_sd", "mse_mean", "mse_sd"],
         "table", title=f"test results (leaderboard: {args.out})")
    print(report_hint(args.out))
    for line in tracking_hints(cfg.log):
        print(line)
    if args.preset in PLUMBING_ONLY:
        import shlex

        print(PLUMBING_ONLY[args.preset].format(model=shlex.quote(args.model)))
    return 0


def report_hint(out: Path) -> str:
    """The line that ends a run: how to see its results (tables, figures, the HTML site)."""
    import shlex

    quoted = shlex.quote(str(out))
    return (f"next: membench report --leaderboard {quoted}   (Tables 1-2, Fig. 3 and the HTML leaderboard "
            f"{Path(out) / 'index.html'})")


def tracking_hints(log: tuple[str, ...]) -> list[str]:
    """Where --log wrote the training curves, and the command that shows them."""
    from membench.results.trackers import parse

    return [tracker.hint() for tracker in parse(log)]


def notices(specs, dataset, splits: list[int], args) -> list[str]:
    """What a user should know before a run starts: that the demo data are synthetic (and
    how much the preset will train on them), and when `--pretrained none` changes nothing."""
    out = []
    if dataset.name == "demo":
        recipes = "; ".join(f"{spec.name}: {recipe_summary(spec, args.preset)}" for spec in specs)
        quick = "" if args.preset != "paper" else " For a look in minutes: --preset smoke (plumbing) or quick."
        out.append(f"note: --data {args.data} is membench's synthetic demo data (generated images: a red disc whose "
                   "size sets the score), not LaMem: its numbers say nothing about real memorability. Preset "
                   f"{args.preset} trains {recipes} (at most: early stopping may end a stage sooner), on "
                   f"{len(splits)} split(s); each stage prints its estimated time after its first epoch.{quick}")
    if args.pretrained == "none":
        for spec in specs:
            if not spec.pretrained_weights:
                out.append(f"note: {spec.name} has no pretrained weights: --pretrained none changes nothing "
                           "(the same job and configuration as without it)")
    return out


def recipe_summary(spec, preset: str) -> str:
    """"stage1 = resnet50-lamem (stage1 150 epochs) + stage2 50 epochs": the epochs each
    stage of `preset` runs at most (early stopping may end a stage sooner)."""
    from membench import registry
    from membench.engine.job import effective

    parts = []
    for stage in effective(spec, preset)[0]:
        if stage.model:
            parts.append(f"{stage.name} = {stage.model} ({recipe_summary(registry.get_model(stage.model), preset)})")
        else:
            parts.append(f"{stage.name} {stage.epochs} epoch{'s' * (stage.epochs != 1)}")
    return " + ".join(parts)


# The last line after a run whose numbers mean nothing about the models: what to run next.
PLUMBING_ONLY = {
    "smoke": "note: preset smoke trains on a handful of images for one epoch: these numbers only test the "
             "plumbing. Next: membench data download lamem --to DIR, then membench run --model {model} --data DIR "
             "--device cuda (the paper protocol)",
    "quick": "note: preset quick is a CPU-sized learning check at 64x64, not the paper protocol; its numbers are "
             "not comparable to published ones. Next: membench run --model {model} --data DIR --device cuda "
             "(the paper protocol) on LaMem (membench data download lamem --to DIR)",
    "cpu": "note: preset cpu trains at 64x64 for 12 epochs, not the paper protocol; its numbers are not "
           "comparable to published ones. Next: membench run --model {model} --data DIR --device cuda "
           "(the paper protocol)",
}


def _summary(rows: list[dict]) -> list[dict]:
    from membench.results.leaderboard import summarise

    out = []
    for s in summarise(rows):
        out.append({**s, "splits": s["n_splits"], "configuration": s["configuration"] or "protocol"})
        undefined, n = s["rho_undefined"], s["n_splits"]
        if undefined:  # constant predictions: Spearman's rho has no value (results.csv: nan)
            out[-1]["rho_mean"] = "undefined" if undefined == n else f"{s['rho_mean']:.4g} ({n - undefined} of {n} splits)"
    return out
