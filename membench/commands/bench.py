"""`membench bench`: images/s of the data pipeline and of models, beside plain references."""

from __future__ import annotations

from pathlib import Path

from membench.commands.common import non_negative

HELP_EPILOG = """examples:
  membench bench --what pipeline                       # decode + transform, 1 thread
  membench bench --what pipeline,loader --workers 4
  membench bench --models resnet50-lamem --size 64 --batch 2 --iters 2
  membench bench --models all --device cuda --dtype bfloat16 --compile
results: <out>/bench-<device>-<dtype>-torch<version>.{json,csv}
"""

WHAT = ("pipeline", "loader", "inference", "train-step")


def add_parser(sub) -> None:
    import argparse

    p = sub.add_parser("bench", help="measure data-pipeline and model throughput",
                       description="Throughput (images/s) of the data pipeline (decode + transform on one "
                                   "thread, generated 400x300 JPEGs), the loader, model inference and one "
                                   "training step, each with its ratio to a plain reference run in the "
                                   "same process.",
                       epilog=HELP_EPILOG, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--what", default="pipeline,inference,train-step",
                   help=f"comma list of {', '.join(WHAT)} (default: pipeline,inference,train-step)")
    p.add_argument("--models", default="resnet50-lamem", help="name, comma list, wildcard or 'all'")
    p.add_argument("--device", default="auto", help="auto, cpu or cuda")
    p.add_argument("--dtype", choices=("float32", "bfloat16"), default=None,
                   help="autocast dtype (default: bfloat16 on cuda, float32 on cpu)")
    p.add_argument("--batch", type=int, default=None, help="model batch (default: the recipe's)")
    p.add_argument("--size", type=int, default=None, help="square model input (default: the model's)")
    p.add_argument("--iters", type=int, default=5, help="timed model iterations per round (default 5)")
    p.add_argument("--rounds", type=int, default=2,
                   help="interleaved rounds per candidate, the fastest kept (default 2)")
    p.add_argument("--warmup", type=int, default=2, help="untimed model iterations (default 2)")
    p.add_argument("--threads", type=int, default=None,
                   help="torch threads for model rows (default: torch's); the pipeline uses 1")
    p.add_argument("--images", type=int, default=64, help="generated JPEGs (default 64)")
    p.add_argument("--image-size", default="400x300", help="WxH of generated JPEGs (default 400x300)")
    p.add_argument("--workers", type=non_negative, default=2, help="loader workers for --what loader (default 2)")
    p.add_argument("--compile", action="store_true",
                   help="torch.compile the models (mode reduce-overhead on cuda: CUDA graphs)")
    p.add_argument("--model-option", action="append", default=[], metavar="KEY=VALUE",
                   help="option for model builders, e.g. captioner=random (repeatable)")
    p.add_argument("--out", type=Path, default=None, help="directory for results (default: leaderboards/bench)")
    p.set_defaults(func=cmd_bench)


def cmd_bench(args) -> int:
    import torch
    from rich.console import Console

    from membench import registry
    from membench.commands.common import model_options
    from membench.errors import MembenchError
    from membench.options import applicable
    from membench.scale import bench
    from membench.util import owned

    what = [w.strip() for w in args.what.split(",") if w.strip()]
    unknown = sorted(set(what) - set(WHAT))
    if unknown:
        raise MembenchError(f"--what takes {', '.join(WHAT)}; unknown: {', '.join(unknown)}")
    from membench.engine.device import resolve_device

    device = resolve_device(args.device).type
    dtype = args.dtype or ("bfloat16" if device == "cuda" else "float32")
    try:
        w, h = (int(v) for v in args.image_size.lower().split("x"))
    except ValueError:
        raise MembenchError(f"--image-size takes WxH, e.g. 400x300, not {args.image_size!r}") from None
    if args.threads:
        torch.set_num_threads(args.threads)
    kinds = [k for k in ("inference", "train-step") if k in what]
    specs = registry.select_models(args.models) if kinds else []
    options = model_options(args.model_option, specs)  # each model gets the ones it declares
    env = bench.environment(device, dtype)
    out = args.out or bench.DEFAULT_OUT
    planned = owned.check(out, bench.result_files(env), "bench")  # a user's file there stops it before measuring
    console = Console(stderr=True)
    rows = _pipeline_rows(args, what, (w, h), console)
    skipped = []
    if kinds:
        runner = bench.ModelBench(device, dtype, compile=args.compile)
        size = (args.size, args.size) if args.size else None
        for spec in specs:
            console.print(f"{spec.name}: {', '.join(kinds)}")
            try:
                rows += bench.bench_model(spec, bench=runner, batch=args.batch, size=size, iters=args.iters, rounds=args.rounds,
                                          warmup=args.warmup, what=kinds,
                                          options=applicable(spec.name, spec.options, options),
                                          threads=torch.get_num_threads())
            except Exception as exc:  # one model that cannot run (input size, options) must not stop the rest
                reason = str(exc) if isinstance(exc, MembenchError) else f"{type(exc).__name__}: {exc}"
                reason = reason.splitlines()[0] if reason else type(exc).__name__
                skipped.append({"model": spec.name, "reason": reason})
                console.print(f"[yellow]{spec.name}: skipped: {reason}[/]")
    try:
        json_path, csv_path = bench.write_results(rows, env, out, skipped=skipped)
    finally:
        owned.record(out, planned, "bench")
    _print_rows(rows, env)
    console.print(f"wrote {json_path} and {csv_path}")
    return 0


def _pipeline_rows(args, what: list[str], size: tuple[int, int], console) -> list:
    """The decode + transform and loader rows, on generated JPEGs of `size` (WxH)."""
    from membench.commands.common import membench_home
    from membench.scale import bench
    from membench.spec import Preprocess

    rows = []
    if {"pipeline", "loader"} & set(what):
        w, h = size
        jpegs = bench.make_jpegs(membench_home() / "bench-jpegs" / f"{w}x{h}", args.images, size)
        pre = Preprocess(size=(256, 256), train="paper")
        if "pipeline" in what:
            console.print(f"pipeline: {len(jpegs)} {w}x{h} JPEGs, decode + transform on 1 thread")
            rows += bench.bench_pipeline(jpegs, pre, rounds=max(2, args.rounds))
        if "loader" in what:
            console.print(f"loader: {args.workers} workers")
            rows.append(bench.bench_loader(jpegs, pre, workers=args.workers))
    return rows


def _print_rows(rows, env) -> None:
    from rich.table import Table

    from membench.output import console

    table = Table(title=f"membench bench ({env.tag})")
    for col in ("benchmark", "name", "impl", "images/s", "per CPU s", "ratio", "batch", "input"):
        table.add_column(col, justify="left" if col in ("benchmark", "name", "impl", "input") else "right")
    for r in rows:
        cpu = "" if r.images_per_cpu_s is None else f"{r.images_per_cpu_s:.1f}"
        table.add_row(r.benchmark, r.name, r.impl, f"{r.images_per_s:.1f}", cpu,
                      "" if r.ratio is None else f"{r.ratio:.2f}x", str(r.batch), r.input)
    console().print(table)
