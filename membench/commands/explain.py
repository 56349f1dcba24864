"""`membench explain`: what a model attends to, overlaid on images (membench.explain)."""

from __future__ import annotations

from pathlib import Path

from membench.commands.common import add_image_options, apply_image_options, model_options

EPILOG = """examples:
  membench explain --model ours --model-option captioner=random --pretrained none photo.jpg --out maps/
  membench explain --model amnet --checkpoint best.pt photo.jpg --out maps/       # one map per LSTM step
  membench explain --model resnet50-lamem --checkpoint best.pt -r photos/ --out maps/   # Grad-CAM
"""


def add_parser(sub) -> None:
    import argparse

    from membench.explain.maps import METHODS

    p = sub.add_parser("explain", help="overlay what a model attends to on images (its own attention or Grad-CAM)",
                       description="Write, per image, OUT/<image>_<model>_<method>.png (the image as the model sees "
                                   "it, then "
                                   "each map over it) and .npy (the maps). Models with soft attention of their own "
                                   "(ours: the captioner's averaged map; amnet: one map per LSTM step) show it; any "
                                   "other CNN or ViT gets Grad-CAM of its score (pytorch_grad_cam, pip install "
                                   "'membench[explain]').",
                       epilog=EPILOG, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model", required=True)
    p.add_argument("--checkpoint", type=Path, default=None,
                   help="trained weights (a run's best.pt or a state_dict); default: the model's own weights")
    p.add_argument("--pretrained", choices=("auto", "none"), default="auto",
                   help="without --checkpoint: none uses random weights (plumbing checks only)")
    p.add_argument("--model-option", action="append", default=[], metavar="KEY=VALUE")
    p.add_argument("--method", choices=METHODS, default="auto",
                   help="auto (default): the model's own attention when it has one, else Grad-CAM")
    p.add_argument("--layer", metavar="MODULE", default=None,
                   help="Grad-CAM: the module to read (a name from model.named_modules(); default: the last "
                        "spatial feature map, or a ViT's last block)")
    p.add_argument("--device", default="cpu")
    p.add_argument("--out", type=Path, required=True, metavar="DIR", help="directory for the PNG and .npy files")
    p.add_argument("--recursive", "-r", action="store_true", help="every image under the directories given")
    add_image_options(p)
    p.add_argument("images", nargs="+", type=Path, metavar="IMAGE")
    p.set_defaults(func=cmd_explain)


def cmd_explain(args) -> int:
    import torch

    from membench import registry
    from membench.commands.predict import inference_model
    from membench.commands.predict_inputs import expand, usable
    from membench.engine.device import resolve_device
    from membench.errors import MembenchError
    from membench.explain import overlay
    from membench.explain.maps import METHODS
    from membench.spec import Sample
    from membench.util import owned

    spec = registry.get_model(args.model)
    options = model_options(args.model_option, [spec])
    if args.checkpoint is not None and not args.checkpoint.is_file():
        raise MembenchError("checkpoint not found", args.checkpoint)
    apply_image_options(args)
    samples = usable(tuple(Sample(name=str(p), path=p, score=0.0) for p in expand(args.images, args.recursive)),
                     "fail")
    images = [s.path for s in samples]
    methods = [m for m in METHODS if m != "auto"] if args.method == "auto" else [args.method]
    planned = owned.check(args.out, overlay.planned(images, spec.name, methods), "explain")  # before any work
    device = resolve_device(args.device)
    torch.manual_seed(0)  # random weights (--pretrained none) are the same on every call
    model, pre = inference_model(spec, args.checkpoint, args.pretrained, options)
    model = model.to(device.torch).eval()
    try:
        for path in explain_images(model, spec, images, args.out, device.torch, args.method, args.layer,
                                   preprocess=pre):
            print(f"wrote {path}")
    finally:
        owned.record(args.out, planned, "explain")
    return 0


def explain_images(model, spec, images, out: Path, device, method: str = "auto", layer: str | None = None,
                   preprocess=None) -> list[Path]:
    """The maps of each image, saved by membench.explain.overlay; returns the written paths.
    `preprocess`: the weights' own (the authors' released weights may bring theirs)."""
    import torch

    from membench.explain import overlay
    from membench.explain.maps import explain, prepare

    written, seen = [], {}
    for i, image in enumerate(images):
        u8, x = prepare(preprocess or spec.preprocess, image, device)
        with torch.no_grad():
            score = float(model(x).reshape(-1)[0])
        maps = explain(model, x, method, layer)
        rgb = u8.permute(1, 2, 0).cpu().numpy()
        title = f"{spec.name}: predicted memorability {score:.3f} — {Path(image).name}"
        written += overlay.save(out, overlay.stem(image, i, seen), spec.name, rgb, maps, title)
    return written
