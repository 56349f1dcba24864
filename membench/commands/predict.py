"""`membench predict`: score images with a model, CSV `image,score` on stdout."""

from __future__ import annotations

from pathlib import Path

from membench.commands.common import add_image_options, apply_image_options, model_options

EPILOG = """examples:
  membench predict --model resnet50-lamem --checkpoint best.pt photo.jpg other.png
  membench predict --model resmem --recursive photos/ > scores.csv
"""


def add_parser(sub) -> None:
    import argparse

    p = sub.add_parser("predict", help="score images with a model (CSV image,score)",
                       description="Score images with a model and print CSV image,score.",
                       epilog=EPILOG, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model", required=True)
    p.add_argument("--checkpoint", type=Path, default=None,
                   help="trained weights (a run's best.pt or a state_dict); no ImageNet weights are needed "
                        "then; default: the model's own weights")
    p.add_argument("--pretrained", choices=("auto", "none"), default="auto",
                   help="without --checkpoint: none scores with random weights (plumbing checks only)")
    p.add_argument("--model-option", action="append", default=[], metavar="KEY=VALUE")
    p.add_argument("--device", default="auto")
    p.add_argument("--precision", choices=("fp32", "bf16"), default="fp32",
                   help="fp32 (default, every device): matches a reference implementation; bf16: autocast on "
                        "CUDA, faster (scores are written in fp32 either way)")
    p.add_argument("--batch-size", type=int, default=16)
    p.add_argument("--recursive", "-r", action="store_true",
                   help="score every image under the directories given")
    p.add_argument("--on-bad-image", choices=("fail", "skip"), default="fail",
                   help="missing or unreadable images: stop (default) or leave them out, named on stderr")
    add_image_options(p)
    p.add_argument("images", nargs="+", type=Path, metavar="IMAGE", help="image files (or directories with -r)")
    p.set_defaults(func=cmd_predict)


def cmd_predict(args) -> int:
    import csv
    import sys

    from membench import registry
    from membench.weights.checkpoint_check import frozen_sources, load_into
    from membench.commands.predict_inputs import expand, usable
    from membench.engine.device import resolve_device
    from membench.engine.inference import predict
    from membench.errors import MembenchError
    from membench.spec import BuildContext, Sample

    spec = registry.get_model(args.model)
    options = model_options(args.model_option, [spec])  # a misspelt option stops before any work
    if args.batch_size < 1:
        raise MembenchError("--batch-size must be positive")
    if args.checkpoint is not None and not args.checkpoint.is_file():
        raise MembenchError("checkpoint not found", args.checkpoint)
    apply_image_options(args)
    paths = expand(args.images, args.recursive)
    samples = usable(tuple(Sample(name=str(p), path=p, score=0.0) for p in paths), args.on_bad_image)
    device = resolve_device(args.device)
    from membench.engine.device import resolve_precision

    device.precision = resolve_precision(args.precision, device.type)  # bf16 on the CPU: a one-line refusal
    # A whole checkpoint replaces every weight, so ImageNet or published weights would only be
    # loaded to be overwritten (and need not be on this machine). A frugal one holds only the
    # trained part: its frozen parts are rebuilt from the files it names, and checked.
    sources = frozen_sources(args.checkpoint) if args.checkpoint else None
    ctx = BuildContext(pretrained=args.pretrained != "none" and (args.checkpoint is None or sources is not None),
                       upstream=dict(sources or {}), options=options)
    model = spec.builder()(ctx)
    from membench.weights.released import loaded_by_builder

    if args.checkpoint:
        load_into(model, spec.name, args.checkpoint)
    elif loaded_by_builder(spec.name):
        print(f"membench: scores from the {loaded_by_builder(spec.name)}", file=sys.stderr)
    elif spec.trainable:
        print(f"membench: warning: no --checkpoint: {spec.name} scores come from its untrained or "
              "pretrained-only weights", file=sys.stderr)
    scores = predict(device.prepare(model), samples, spec.preprocess, device, batch_size=args.batch_size)
    w = csv.writer(sys.stdout, lineterminator="\n")
    w.writerow(["image", "score"])
    for s, v in zip(samples, scores):
        w.writerow([s.name, f"{v:.6f}"])
    return 0
