"""`membench predict`: score images with a model, CSV `image,score` on stdout."""

from __future__ import annotations

from pathlib import Path

from membench.commands.common import model_options


def add_parser(sub) -> None:
    p = sub.add_parser("predict", help="score images with a model (CSV image,score)")
    p.add_argument("--model", required=True)
    p.add_argument("--checkpoint", type=Path, default=None,
                   help="trained weights (a run's best.pt or a state_dict); default: the model's own weights")
    p.add_argument("--pretrained", choices=("auto", "none"), default="auto")
    p.add_argument("--model-option", action="append", default=[], metavar="KEY=VALUE")
    p.add_argument("--device", default="auto")
    p.add_argument("--batch-size", type=int, default=16)
    p.add_argument("images", nargs="+", type=Path, metavar="IMAGE")
    p.set_defaults(func=cmd_predict)


def cmd_predict(args) -> int:
    import csv
    import sys

    from membench import registry
    from membench.errors import MembenchError
    from membench.images import apply_policy, check_images
    from membench.spec import BuildContext, Sample
    from membench.engine.device import resolve_device
    from membench.engine.inference import predict
    from membench.weights import load_state_dict

    spec = registry.get_model(args.model)
    options = model_options(args.model_option, [spec])  # a misspelt option stops before any work
    samples = tuple(Sample(name=str(p), path=p, score=0.0) for p in args.images)
    apply_policy(check_images(samples), "fail")
    device = resolve_device(args.device)
    ctx = BuildContext(pretrained=args.pretrained != "none",
                       options=options)
    model = spec.builder()(ctx)
    if args.checkpoint:
        model.load_state_dict(load_state_dict(args.checkpoint))
    elif spec.trainable:
        print(f"membench: warning: no --checkpoint: {spec.name} scores come from its untrained or "
              "pretrained-only weights", file=sys.stderr)
    if args.batch_size < 1:
        raise MembenchError("--batch-size must be positive")
    scores = predict(device.prepare(model), samples, spec.preprocess, device, batch_size=args.batch_size)
    w = csv.writer(sys.stdout, lineterminator="\n")
    w.writerow(["image", "score"])
    for s, v in zip(samples, scores):
        w.writerow([s.name, f"{v:.6f}"])
    return 0
