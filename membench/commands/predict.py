"""`membench predict`: score images with a model, CSV `image,score` on stdout; `--html DIR`: a
contact sheet (membench.report.contact)."""

from __future__ import annotations

from pathlib import Path

from membench.commands.common import add_image_options, apply_image_options, model_options

EPILOG = """examples:
  membench predict --model resnet50-lamem --checkpoint best.pt photo.jpg other.png
  membench predict --model resmem --recursive photos/ > scores.csv
  membench predict --model resmem --recursive photos/ --html sheet/ --maps    # contact sheet with attention maps
  membench predict --model resmem,resnet50-lamem --checkpoint none --checkpoint best.pt -r photos/ --html sheet/
  membench predict --model amnet photo.jpg      # the authors' weights, once `membench weights fetch amnet`
"""


def add_parser(sub) -> None:
    import argparse

    p = sub.add_parser("predict", help="score images with a model (CSV image,score; --html: a contact sheet)",
                       description="Score images with a model and print CSV image,score (several models: "
                                   "image,<model>,...). --html DIR also writes a contact sheet: the images sorted "
                                   "by predicted memorability, one column per model, with their rank correlation.",
                       epilog=EPILOG, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model", required=True, help="a model, or a comma list to compare several side by side")
    p.add_argument("--checkpoint", action="append", default=[], metavar="FILE",
                   help="trained weights (a run's best.pt or a state_dict); no ImageNet weights are needed "
                        "then; default: the authors' released weights when installed (`membench weights`), "
                        "else the model's own weights. Several models: one per model, in order ('none': that "
                        "model's default weights)")
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
    p.add_argument("--html", type=Path, default=None, metavar="DIR",
                   help="also write DIR/index.html: a contact sheet of the images sorted by predicted "
                        "memorability (thumbnails, scores), beside DIR/scores.csv")
    p.add_argument("--maps", action="store_true",
                   help="with --html: each thumbnail's map of what the model attends to (as `membench explain`)")
    add_image_options(p)
    p.add_argument("images", nargs="+", type=Path, metavar="IMAGE", help="image files (or directories with -r)")
    p.set_defaults(func=cmd_predict)


def checkpoints(given: list[str], specs) -> list[Path | None]:
    """One checkpoint (or None) per model: none given, one per model, or one for a single model."""
    from membench.errors import MembenchError

    if not given:
        return [None] * len(specs)
    if len(given) != len(specs):
        raise MembenchError(f"{len(given)} --checkpoint for {len(specs)} models: give one per model, in the "
                            "order of --model ('none' for a model's own weights)")
    out = [None if c == "none" else Path(c) for c in given]
    for path in out:
        if path is not None and not path.is_file():
            raise MembenchError("checkpoint not found", path)
    return out


def cmd_predict(args) -> int:
    import sys

    from membench import registry
    from membench.commands.predict_inputs import expand, usable
    from membench.engine.device import resolve_device, resolve_precision
    from membench.errors import MembenchError
    from membench.spec import Sample
    from membench.util import owned

    specs = registry.select_models(args.model)
    options = model_options(args.model_option, specs)  # a misspelt option stops before any work
    if args.batch_size < 1:
        raise MembenchError("--batch-size must be positive")
    if args.maps and args.html is None:
        raise MembenchError("--maps draws the maps on the contact sheet: add --html DIR")
    files = checkpoints(args.checkpoint, specs)
    apply_image_options(args)
    paths = expand(args.images, args.recursive)
    samples = usable(tuple(Sample(name=str(p), path=p, score=0.0) for p in paths), args.on_bad_image)
    sheet = html_files(args.html, len(samples), len(specs), args.maps)  # a user's file there stops it now
    device = resolve_device(args.device)
    device.precision = resolve_precision(args.precision, device.type)  # bf16 on the CPU: a one-line refusal
    scores, maps, labels = {}, {}, {}
    for spec, checkpoint in zip(specs, files):
        scores[spec.name], found = score(spec, checkpoint, args, options, samples, device)
        if found:
            maps[spec.name], labels[spec.name] = found
    text = scores_csv(samples, scores)
    sys.stdout.write(text)
    if args.html is not None:
        from membench.report import contact

        try:
            written = contact.write(args.html, [s.name for s in samples], [s.path for s in samples], scores, text,
                                    maps if args.maps else None, labels)
        finally:
            owned.record(args.html, sheet, "predict")
        print(f"membench: wrote {written[-1]} (contact sheet of {len(samples)} images)", file=sys.stderr)
    return 0


def html_files(out, n_images: int, n_models: int, maps: bool) -> list[str]:
    """The contact sheet's files that --html may write: refused when one there is not predict's own."""
    if out is None:
        return []
    from membench.report import contact
    from membench.util import owned

    return owned.check(out, contact.planned(n_images, n_models, maps), "predict")


def score(spec, checkpoint, args, options, samples, device):
    """One model's scores of the samples and, with --maps, its map of each (grids, label)."""
    from membench.engine.inference import predict
    from membench.options import applicable

    model, pre = inference_model(spec, checkpoint, args.pretrained, applicable(spec.name, spec.options, options))
    values = predict(device.prepare(model), samples, pre, device, batch_size=args.batch_size)
    _refuse_non_finite(values, samples, spec.name, checkpoint)
    if not args.maps:
        return [float(v) for v in values], None
    from membench.explain.maps import image_maps

    grids, label = [], ""
    for s in samples:
        found = image_maps(model.eval(), pre, s.path, device.torch)
        grids.append(found.maps.mean(axis=0))
        label = ("Grad-CAM" if found.method == "grad-cam" else "own attention") + (
            f", mean of {len(found.names)} maps ({', '.join(found.names)})" if len(found.names) > 1 else "")
    return [float(v) for v in values], (grids, label)


def scores_csv(samples, scores: dict[str, list[float]]) -> str:
    """image,score for one model; image,<model>,... for several."""
    import csv
    import io

    buf = io.StringIO()
    w = csv.writer(buf, lineterminator="\n")
    w.writerow(["image", *(["score"] if len(scores) == 1 else scores)])
    for i, s in enumerate(samples):
        w.writerow([s.name, *(f"{v[i]:.6f}" for v in scores.values())])
    return buf.getvalue()


def inference_model(spec, checkpoint: Path | None, pretrained: str, options: dict[str, str]):
    """The model `predict` and `explain` use, and its preprocessing: the checkpoint's weights;
    else the weights a trained-weights option names (e.g. amnet's weights=FILE); else the
    authors' released weights when installed (`membench weights`); else the model's own
    weights, with a warning when those are not trained to predict memorability."""
    import sys

    from membench.engine.checkpoints import frozen_sources
    from membench.spec import BuildContext
    from membench.weights import released
    from membench.weights.checkpoint_check import load_into

    if checkpoint:
        # A whole checkpoint replaces every weight, so ImageNet or published weights would only be
        # loaded to be overwritten (and need not be on this machine). A frugal one holds only the
        # trained part: its frozen parts are rebuilt from the files it names, and checked.
        sources = frozen_sources(checkpoint)
        model = spec.builder()(BuildContext(pretrained=pretrained != "none" and sources is not None,
                                            upstream=dict(sources or {}), options=options))
        load_into(model, spec.name, checkpoint)
        return model, spec.preprocess
    trained_option = any(o.trained and o.name in options for o in spec.options)
    authors = None if trained_option or pretrained == "none" else released.installed(spec)
    if authors:  # loaded as `run --train none` loads them, with the options of their test protocol
        split = (authors.splits() or [1])[0]
        options = spec.check_options({**authors.release.options, **options})
        # weights of the whole model replace every tensor (no ImageNet ones needed); a part's
        # (a head) go onto the model's own pretrained rest
        model = _build(spec, BuildContext(pretrained=bool(authors.release.part), options=options))
        authors.load_into(model, split)
        which = f"the checkpoint of split {split}" if authors.splits() else "one checkpoint for every split"
        print(f"membench: scoring with {authors.label}, {which}", file=sys.stderr)
        return model, authors.release.preprocess or spec.preprocess
    model = _build(spec, BuildContext(pretrained=pretrained != "none", options=options))
    if released.loaded_by_builder(spec.name):  # a builder that installs and loads the authors' weights itself
        print(f"membench: scores from the {released.loaded_by_builder(spec.name)}", file=sys.stderr)
    elif spec.trainable and not trained_option and "pretrained-weights" not in spec.tags:
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


def _refuse_non_finite(scores, samples, model: str, checkpoint) -> None:
    """A nan score is never printed: it would read as a number in a spreadsheet."""
    import numpy as np

    from membench.errors import MembenchError

    bad = [s.name for s, v in zip(samples, np.asarray(scores, dtype=float)) if not np.isfinite(v)]
    if bad:
        raise MembenchError(f"{model} gives a score that is not a number (nan or inf) for this image"
                            + (f" and {len(bad) - 1} other(s)" if len(bad) > 1 else "")
                            + f" with the weights of {checkpoint or 'the model itself'}; no scores printed", bad[0])
