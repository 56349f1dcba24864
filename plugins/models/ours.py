"""`ours` (the proposed model) and its ablation `resnet50-lamem-imagenet`.

Leonardi, Celona, Napoletano, Bianco, Schettini, Manessi, Rozza: "Image Memorability
Using Diverse Visual Features and Soft Attention", ICIAP 2019, §3 (Fig. 1, Tables 1-2).
Attention: Xu et al., "Show, Attend and Tell", ICML 2015 (see sat.py).

Two truncated ResNet50s (A: stage-1 `resnet50-lamem`, B: ImageNet), each 2048x8x8 ->
conv1x1 to 1024 -> divided by its L2 norm -> concatenated (2048x8x8) -> weighted by the
captioner's averaged 8x8 attention map -> head. Both ResNets and the captioner are frozen:
they run without autograd and stay in eval mode whatever `train()` is called with.
Reconstruction (the paper only says "two convolution layers preceding the last regressor
module"): conv3x3 2048->512 +BN+ReLU, conv3x3 512->512 +BN+ReLU, Linear(32768,128), ReLU,
Dropout(0.5), Linear(128,1); the convs carry no bias because BN follows. This reaches the
reported 130M with the captioner included.

Model options (`--model-option k=v`): captioner=random|PATH (default: the captioner that
`membench captioner train|import` installed under $MEMBENCH_HOME/captioner/),
decode=beam|greedy (default beam: the reference caption script's beam search), beam=N
(its width, default 5 as caption.py). The captioner runs on the encoder grid it was
trained on (14x14 for the imported shared checkpoint); its averaged map is area-pooled to
the 8x8 feature grid. Deviations from the references: docs/models.md.
"""

from __future__ import annotations

from membench import hookimpl
from membench.errors import MembenchError
from membench.spec import ModelSpec, Option, Preprocess, Reported, Stage

PAPER = ("Leonardi et al., Image Memorability Using Diverse Visual Features and Soft "
         "Attention, ICIAP 2019")
FROZEN = ("backbone_a", "backbone_b", "captioner")
OPTIONS = ("captioner", "decode", "beam")
DECODINGS = ("beam", "greedy")


def _stage2(frozen):
    # Paper §3.2, stage 2: Adam, LR 5e-5 decayed by Eq. 1, 50 epochs, batch 16, MSE.
    return Stage(name="stage2", epochs=50, batch_size=16, lr=5e-5, optimizer="adam",
                 schedule="paper-poly", frozen=frozen)


STAGE1 = Stage(name="stage1", model="resnet50-lamem")


def _make_module(backbone_a, backbone_b, captioner, beam_size: int):
    import torch
    import torch.nn as nn

    class DualResNetAttention(nn.Module):
        """(B,3,256,256) -> (B,) memorability; `captioner=None` is the no-attention ablation."""

        def __init__(self):
            super().__init__()
            self.backbone_a = backbone_a
            self.backbone_b = backbone_b
            self.reduce_a = nn.Conv2d(2048, 1024, kernel_size=1)
            self.reduce_b = nn.Conv2d(2048, 1024, kernel_size=1)
            self.captioner = captioner
            self.beam_size = beam_size
            self.head = nn.Sequential(
                nn.Conv2d(2048, 512, 3, padding=1, bias=False), nn.BatchNorm2d(512), nn.ReLU(inplace=True),
                nn.Conv2d(512, 512, 3, padding=1, bias=False), nn.BatchNorm2d(512), nn.ReLU(inplace=True),
                nn.Flatten(), nn.Linear(512 * 8 * 8, 128), nn.ReLU(inplace=True), nn.Dropout(0.5),
                nn.Linear(128, 1))
            self.train()

        def frozen_modules(self):
            return [m for m in (self.backbone_a, self.backbone_b, self.captioner) if m is not None]

        def train(self, mode: bool = True):
            super().train(mode)
            for m in self.frozen_modules():  # frozen BatchNorm statistics stay fixed
                m.train(False)
            return self

        def frozen_outputs(self, x):
            """What the frozen parts compute: both 2048x8x8 maps and the averaged attention
            map (membench.engine.cache keeps these for validation images: exact, computed once)."""
            with torch.no_grad():
                fa, fb = self.backbone_a(x), self.backbone_b(x)
                if self.captioner is None:
                    return fa, fb
                # the captioner's own grid (14x14 for the shared checkpoint), pooled to 8x8
                return fa, fb, self.captioner.attention_map(x, self.beam_size, grid=fa.shape[-1])

        attention_maps = _attention_maps

        def features(self, x):
            """The attention-weighted 2048x8x8 feature map the head sees."""
            return self.combine(self.frozen_outputs(x))

        def combine(self, outputs):
            fa, fb, *att = outputs
            f = torch.cat([l2_normalise(self.reduce_a(fa)), l2_normalise(self.reduce_b(fb))], dim=1)
            return f * att[0].unsqueeze(1) if att else f

        def from_frozen(self, outputs):
            return self.head(self.combine(outputs)).squeeze(1)

        def forward(self, x):
            return self.from_frozen(self.frozen_outputs(x))

    return DualResNetAttention()


def _attention_maps(model, x):
    """The captioner's averaged map on the feature grid, the very weights forward gives the
    features (membench.contract): (B, 1, 8, 8); None without a captioner (no attention)."""
    if model.captioner is None:
        return None
    return model.frozen_outputs(x)[2].unsqueeze(1), ["averaged over the caption's words"]  # frozen: no grad


def l2_normalise(t, eps: float = 1e-12):
    """Divide each sample's whole C×H×W map by its L2 norm."""
    return t / t.flatten(1).norm(dim=1).clamp_min(eps).reshape(-1, *([1] * (t.dim() - 1)))


def _check_options(ctx) -> int:
    """The decoding beam width: 1 for decode=greedy, else `beam` (default 5, caption.py's)."""
    from membench_plugins.captioner.sat import BEAM_SIZE

    unknown = sorted(set(ctx.options) - set(OPTIONS))
    if unknown:
        raise MembenchError(f"unknown model option(s) {', '.join(unknown)} for ours; known: {', '.join(OPTIONS)}")
    decode = ctx.options.get("decode", "beam")
    if decode not in DECODINGS:
        raise MembenchError(f"model option decode must be one of {', '.join(DECODINGS)}, not {decode!r}")
    beam = ctx.options.get("beam", str(BEAM_SIZE))
    if not str(beam).isdigit() or int(beam) < 1:
        raise MembenchError(f"model option beam must be a positive integer, not {beam!r}")
    if decode == "greedy":
        if "beam" in ctx.options and int(beam) != BEAM_SIZE:
            raise MembenchError("model option beam sets the width of decode=beam; it means nothing with "
                                "decode=greedy")
        return 1
    return int(beam)


def build_captioner(ctx):
    """The frozen captioner `ours` uses (ctx.options['captioner']: random, a path, or the
    installed one). On the meta device only its shape matters, so nothing is read."""
    from membench_plugins.captioner import sat

    choice = ctx.options.get("captioner")
    if ctx.meta or choice == "random":
        with ctx.on_device():
            return sat.Captioner()
    if choice:
        from pathlib import Path

        path = Path(choice).expanduser()
        return sat.load_captioner(path / sat.WEIGHTS_FILE if path.is_dir() else path)
    home = sat.captioner_dir()
    if not (home / sat.WEIGHTS_FILE).is_file():
        raise MembenchError(
            "ours needs a trained Show-Attend-and-Tell captioner and none is installed: train one "
            "with `membench captioner train --coco DIR`, import the shared checkpoint with "
            "`membench captioner import CHECKPOINT --word-map JSON`, or pass "
            "`--model-option captioner=random` (random attention; for smoke runs only)", home)
    return sat.load_captioner(home / sat.WEIGHTS_FILE)


def _stage1_backbone(ctx) -> dict | None:
    """Backbone A's weights: the `backbone.*` part of the stage-1 resnet50-lamem checkpoint.

    The runner always hands stage 1 to stage 2. Without it (`membench predict`/`bench`,
    `run --train none`) backbone A stays random: those callers load a whole trained `ours`
    checkpoint on top, or only time the network."""
    path = None if ctx.meta else ctx.upstream.get("stage1")
    if path is None:
        return None
    from membench.weights.resolve import load_state_dict

    state = {k[len("backbone."):]: v for k, v in load_state_dict(path).items() if k.startswith("backbone.")}
    if not state:
        raise MembenchError("no backbone.* weights: not a resnet50-lamem checkpoint", path)
    return state


def _build(ctx, attention: bool):
    from membench_plugins.models.resnet import resnet50_trunk

    beam = _check_options(ctx) if attention else 1
    captioner = build_captioner(ctx) if attention else None  # the likeliest user error, checked first
    stage1 = _stage1_backbone(ctx)
    backbone_a = resnet50_trunk(ctx, imagenet=False)
    if stage1 is not None:
        try:
            backbone_a.load_state_dict(stage1)
        except RuntimeError as exc:
            raise MembenchError(f"stage-1 weights do not fit a ResNet50 ({str(exc).splitlines()[0]})",
                                ctx.upstream["stage1"]) from None
    backbone_b = resnet50_trunk(ctx, imagenet=True)
    with ctx.on_device():
        return _make_module(backbone_a, backbone_b, captioner, beam)


def build_ours(ctx):
    return _build(ctx, attention=True)


def build_lamem_imagenet(ctx):
    return _build(ctx, attention=False)


@hookimpl
def register_models(register):
    common = dict(citation=PAPER, preprocess=Preprocess(size=(256, 256), train="paper"))
    register(ModelSpec(
        name="ours",
        build=build_ours,
        summary="ResNet50-LaMem + ResNet50-ImageNet features weighted by Show-Attend-and-Tell "
                "attention (the proposed model; Table 1 row 3, Table 2)",
        reported=Reported(rho=0.687, mse=0.0079, params=130_000_000,
                          source="Leonardi et al. 2019, Tables 1-2"),
        recipe=(STAGE1, _stage2(FROZEN)),
        options=(Option("captioner", help="'random' (random attention: smoke runs only) or a captioner "
                                          "checkpoint file or directory; unset: the installed captioner"),
                 Option("decode", default="beam", choices=DECODINGS,
                        help="caption decoding: beam search as the reference caption script, or greedy"),
                 Option("beam", "int", default=5, help="beam width of decode=beam (5: caption.py's default)")),
        tags=("paper", "proposed", "table1", "table2", "soft-attention"),
        params_expected={"total": 130_189_524},
        notes="Needs a trained captioner (`membench captioner train|import`); "
              "--model-option captioner=random is for smoke runs and is recorded in results. "
              "Head layout is a reconstruction that reaches the reported 130M.",
        **common,
    ))
    register(ModelSpec(
        name="resnet50-lamem-imagenet",
        build=build_lamem_imagenet,
        summary="ResNet50-LaMem + ResNet50-ImageNet features without attention (Table 1 row 2)",
        reported=Reported(rho=0.686, mse=0.0080, source="Leonardi et al. 2019, Table 1"),
        recipe=(STAGE1, _stage2(FROZEN[:2])),
        tags=("paper", "ablation-of:ours", "table1"),
        params_expected={"total": 67_205_505},
        notes="`ours` without the captioner; same stage-1 model and stage-2 recipe.",
        **common,
    ))


@hookimpl
def register_commands(subparsers):
    p = subparsers.add_parser(
        "captioner", help="train or import the Show-Attend-and-Tell captioner `ours` needs",
        description="The captioner lives in $MEMBENCH_HOME/captioner/ (default ~/.cache/membench).")
    sub = p.add_subparsers(dest="captioner_command", metavar="ACTION", required=True)
    from membench_plugins.captioner import sat_coco, sat_import

    sat_coco.add_parser(sub)
    sat_import.add_parser(sub)
    info = sub.add_parser("info", help="the installed captioner and the architecture's parameter count")
    info.set_defaults(func=cmd_captioner_info)

    p = subparsers.add_parser(
        "attention", help="overlay a model's averaged attention map on images (paper Fig. 4)",
        description="Decode a caption per image with the frozen captioner and save the image with "
                    "its averaged 8x8 attention map overlaid, one PNG per image.",
        epilog="example: membench attention --model ours photo.jpg --out attention/")
    p.add_argument("images", nargs="+", metavar="IMAGE")
    p.add_argument("--model", default="ours", help="a model with soft attention (default: ours)")
    p.add_argument("--out", required=True, help="directory for the PNGs")
    p.add_argument("--model-option", action="append", default=[], metavar="K=V",
                   help="e.g. captioner=random, decode=greedy or beam=3 (repeatable)")
    p.add_argument("--device", default="cpu")
    p.set_defaults(func=cmd_attention)


def cmd_attention(args) -> int:
    from pathlib import Path

    from membench import registry
    from membench.options import key_values
    from membench.spec import BuildContext
    from membench.util import owned
    from membench_plugins.captioner import sat

    spec = registry.get_model(args.model)
    if "soft-attention" not in spec.tags:
        raise MembenchError(f"model {spec.name!r} has no attention map (models with one: ours)")
    ctx = BuildContext(options=spec.check_options(key_values(args.model_option, "--model-option")),
                       device=args.device)
    beam = _check_options(ctx)
    missing = next((p for p in args.images if not Path(p).is_file()), None)
    if missing is not None:
        raise MembenchError("image not found", missing)
    planned = owned.check(args.out, sat.attention_files(args.images), "attention")  # before any work
    captioner = build_captioner(ctx).to(args.device).eval()
    try:
        for path in sat.render_attention(captioner, args.images, args.out, spec.preprocess, beam,
                                         random=ctx.options.get("captioner") == "random", device=args.device):
            print(path)
    finally:
        owned.record(args.out, planned, "attention")
    return 0


def cmd_captioner_info(args) -> int:
    import json

    import torch

    from membench_plugins.captioner import sat

    with torch.device("meta"):
        m = sat.Captioner()
    n = lambda mod: sum(p.numel() for p in mod.parameters())  # noqa: E731
    print(f"Show-Attend-and-Tell captioner (ResNet-101 encoder, {m.grid}x{m.grid} attention): "
          f"{n(m)} parameters with a {m.decoder.vocab_size}-word vocabulary "
          f"(encoder {n(m.encoder)}, decoder {n(m.decoder)})")
    home = sat.captioner_dir()
    weights = home / sat.WEIGHTS_FILE
    if not weights.is_file():
        print(f"installed: none in {home} (`membench captioner train --coco DIR` or "
              "`membench captioner import CHECKPOINT --word-map JSON`)")
        return 0
    details = json.loads((home / "info.json").read_text()) if (home / "info.json").is_file() else {}
    vocab = len(sat.load_word_map(home / sat.WORD_MAP_FILE))
    extra = ", ".join(f"{k} {details[k]}" for k in ("kind", "epoch", "bleu-4", "source") if k in details)
    print(f"installed: {weights} ({vocab}-word map{', ' + extra if extra else ''})")
    return 0
