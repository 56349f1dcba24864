"""`membench predict`: score images with a model, CSV `image,score` on stdout."""

from __future__ import annotations

from pathlib import Path

from membench.commands.common import add_image_options, apply_image_options, model_options

EPILOG = """examples:
  membench predict --model resnet50-lamem --checkpoint best.pt photo.jpg other.png
  membench predict --model resmem --recursive photos/ > scores.csv
  membench predict --model amnet photo.jpg      # the authors' weights, once `membench weights fetch amnet`
"""


def add_parser(sub) -> None:
    import argparse

    p = sub.add_parser("predict", help="score images with a model (CSV image,score)",
                       description="Score images with a model and print CSV image,score.",
                       epilog=EPILOG, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model", required=True)
    p.add_argument("--checkpoint", type=Path, default=None,
                   help="trained weights (a run's best.pt or a state_dict); no ImageNet weights are needed "
                        "then; default: the authors' released weights when installed (`membench weights`), "
                        "else the model's own weights")
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
    from membench.commands.predict_inputs import expand, usable
    from membench.engine.device import resolve_device
    from membench.engine.inference import predict
    from membench.errors import MembenchError
    from membench.spec import Sample

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
    model, pre = scoring_model(spec, args, options)
    scores = predict(device.prepare(model), samples, pre, device, batch_size=args.batch_size)
    w = csv.writer(sys.stdout, lineterminator="\n")
    w.writerow(["image", "score"])
    for s, v in zip(samples, scores):
        w.writerow([s.name, f"{v:.6f}"])
    return 0


def scoring_model(spec, args, options: dict[str, str]):
    """The model predict scores with and its preprocessing: the --checkpoint; else the
    weights a trained-weights option names (e.g. amnet's weights=FILE); else the authors'
    released weights when installed (`membench weights`); else the model's own weights,
    with a warning when those are not trained to predict memorability."""
    import sys

    from membench.spec import BuildContext
    from membench.weights import released
    from membench.weights.checkpoint_check import frozen_sources, load_into

    if args.checkpoint:
        # A whole checkpoint replaces every weight, so ImageNet or published weights would only be
        # loaded to be overwritten (and need not be on this machine). A frugal one holds only the
        # trained part: its frozen parts are rebuilt from the files it names, and checked.
        sources = frozen_sources(args.checkpoint)
        model = spec.builder()(BuildContext(pretrained=args.pretrained != "none" and sources is not None,
                                            upstream=dict(sources or {}), options=options))
        load_into(model, spec.name, args.checkpoint)
        return model, spec.preprocess
    trained_option = any(o.trained and o.name in options for o in spec.options)
    authors = None if trained_option or args.pretrained == "none" else released.installed(spec)
    if authors:  # they replace every tensor: no ImageNet weights needed
        split = (authors.splits() or [1])[0]
        model = _build(spec, BuildContext(pretrained=False, options=options))
        model.load_state_dict(authors.state_dict(split))
        which = f"the checkpoint of split {split}" if authors.splits() else "one checkpoint for every split"
        print(f"membench: scoring with {authors.label}, {which}", file=sys.stderr)
        return model, authors.release.preprocess or spec.preprocess
    model = _build(spec, BuildContext(pretrained=args.pretrained != "none", options=options))
    if spec.trainable and not trained_option and "pretrained-weights" not in spec.tags:
        print(f"membench: warning: no --checkpoint: {spec.name} scores come from its untrained or "
              f"pretrained-only weights{_trained_weights_hint(spec)}", file=sys.stderr)
    return model, spec.preprocess


def _build(spec, ctx):
    """The builder, with advice for scoring: `--pretrained none` (random weights) is no way
    out here, trained weights are."""
    import re

    from membench.errors import WeightsUnavailable

    try:
        return spec.builder()(ctx)
    except WeightsUnavailable as exc:
        reason = re.sub(r",? or (run )?with --pretrained none[^;.)]*", "", exc.message)
        raise WeightsUnavailable(f"no trained weights of {spec.name} to score images with: give --checkpoint FILE "
                                 f"(a trained model, e.g. a run's best.pt: see `membench runs`)"
                                 f"{_trained_weights_hint(spec)}. Its own weights are not here either: {reason}",
                                 exc.path, exc.line) from None


def _trained_weights_hint(spec) -> str:
    if spec.released_weights:
        return f" or install its authors' weights (`membench weights fetch {spec.name}` or `weights import`)"
    names = [o.name for o in spec.options if o.trained]
    return f" or pass --model-option {names[0]}=FILE (trained weights)" if names else ""
