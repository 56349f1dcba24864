"""`probe/<backbone>`: a frozen pretrained backbone and a head fitted on its pooled embedding,
the yardstick of the foundation-model literature on memorability; and `memcoach`, MemCoach's
memorability predictor (a released MLP head on frozen SigLIP features).

Backbones:
  probe/<timm arch>                      any timm model (`timm.create_model(arch, num_classes=0)`),
                                         timm's evaluation transform for its pretrained config
  probe/open_clip/<model>/<pretrained>   an open_clip image tower (CLIP, SigLIP; `pip install
                                         'membench[probe]'`), open_clip's evaluation transform
  probe/resmem-resnet152                 the `resmem` wheel's frozen ImageNet-initialised ResNet-152
                                         trunk (`features.*`, 2048-d pooled), with the transform its
                                         BatchNorm statistics were adapted to (ResMem's: [0, 1] pixels,
                                         227 crop of 256x256); `normalize=imagenet` puts ImageNet's
                                         mean/std in front of it instead
  probe/resmem                           ResMem's penultimate features: both branches and its fc
                                         stack up to the 256 features fc12 reads

The head (`--model-option head=ridge|mlp`) is fitted by the recipe's single stage,
`Stage(fit="frozen-outputs")`: every training and validation image is embedded once (the
evaluation transform; through the feature store with `--feature-store`, so across splits and
runs too) and the probe fits itself on the embeddings (plugins/models/probe_net.py): ridge
regression in closed form with the penalty chosen on the validation split by rho (default),
or a small MLP. docs/models.md#probebackbone says what is and is not the backbones'
reference preprocessing.
"""

from __future__ import annotations

from membench import hookimpl
from membench.errors import MembenchError, WeightsUnavailable
from membench.options import Option, weights_option
from membench.spec import IMAGENET_MEAN, IMAGENET_STD, ModelSpec, Preprocess, ReleasedWeights, Stage

RECIPE = (Stage(name="fit", fit="frozen-outputs", frozen=("backbone",), batch_size=32),)
HEAD_OPTIONS = (
    Option("head", choices=("ridge", "mlp"), default="ridge",
           help="ridge: closed-form ridge regression, penalty chosen on the validation split by rho; "
                "mlp: Linear-ReLU-Linear trained full-batch, best validation step kept"),
    Option("hidden", "int", default=256, help="hidden units of the MLP head (head=mlp)"),
)
# ResMem's own transform (the resmem package's `transformer`): resize 256x256, centre 227, [0, 1]
RESMEM_PREPROCESS = Preprocess(size=(256, 256), crop=227, mean=None, std=None, train="none")
RESMEM_CITATION = ("Needell & Bainbridge, Embracing New Techniques in Deep Learning for Estimating Image "
                   "Memorability, Computational Brain & Behavior 5, 2022 (the resmem package)")
PROBE_NOTE = ("A frozen backbone and a head fitted on its pooled embedding (docs/models.md#probebackbone); "
              "the recipe's stage fits the head on the embeddings of the training images, computed once.")


def resolve_probe(name: str) -> ModelSpec:
    backbone = name.split("/", 1)[1]
    if backbone == "resmem-resnet152":
        return _spec(name, ("resmem-resnet152",), RESMEM_PREPROCESS,
                     summary="ridge/MLP probe on the resmem package's frozen ResNet-152 trunk (2048-d pooled)",
                     citation=RESMEM_CITATION + "; He et al., ResNet, CVPR 2016", license="non-commercial (ResMem)",
                     options=(Option("normalize", choices=("none", "imagenet"), default="none",
                                     help="none: ResMem's [0, 1] pixels, what the trunk's BatchNorm adapted to; "
                                          "imagenet: ImageNet mean/std first"),
                              weights_option("a ResMem state_dict (its features.* are the trunk)")))
    if backbone == "resmem":
        return _spec(name, ("resmem",), RESMEM_PREPROCESS,
                     summary="ridge/MLP probe on ResMem's penultimate features (256-d, the input of its fc12)",
                     citation=RESMEM_CITATION, license="non-commercial (ResMem)",
                     options=(weights_option("a ResMem state_dict (the package's model.pt layout)"),))
    if backbone.startswith("open_clip/"):
        return _open_clip_spec(name, backbone[len("open_clip/"):])
    return _timm_spec(name, backbone)


def _spec(name: str, backbone: tuple, pre: Preprocess, *, summary: str, citation: str, license: str,
          options: tuple) -> ModelSpec:
    return ModelSpec(name=name, build=build_probe(backbone), summary=summary, citation=citation,
                     preprocess=pre, recipe=RECIPE, options=HEAD_OPTIONS + options, tags=("probe", "family"),
                     license=license, notes=PROBE_NOTE)


def _timm_spec(name: str, arch: str) -> ModelSpec:
    import dataclasses
    import difflib

    import timm

    from membench_plugins.models.vitmem import is_timm_model, timm_preprocess

    if not is_timm_model(arch):
        close = difflib.get_close_matches(arch, timm.list_models() + timm.list_models(pretrained=True), n=3, cutoff=0.6)
        hint = f"; did you mean {', '.join('probe/' + c for c in close)}?" if close else \
            "; a timm model (timm.list_models()), open_clip/MODEL/PRETRAINED, resmem-resnet152 or resmem"
        raise MembenchError(f"unknown probe backbone {arch!r}{hint}")
    cfg = timm.models.get_pretrained_cfg(arch)
    cfg = cfg.to_dict() if cfg is not None else {}
    return _spec(name, ("timm", arch), dataclasses.replace(timm_preprocess(cfg), train="none"),
                 summary=f"ridge/MLP probe on timm {arch}'s pooled embedding (frozen)",
                 citation=f"timm (Wightman), {arch}", license=cfg.get("license", ""),
                 options=(weights_option(f"{arch}'s pretrained weights"),))


def _open_clip_spec(name: str, rest: str) -> ModelSpec:
    model, _, tag = rest.partition("/")
    try:
        import open_clip
    except ImportError:
        raise MembenchError("open_clip backbones need open-clip-torch: pip install 'membench[probe]'") from None
    if model not in open_clip.list_models():
        import difflib

        close = difflib.get_close_matches(model, open_clip.list_models(), n=3, cutoff=0.6)
        raise MembenchError(f"unknown open_clip model {model!r}"
                            + (f"; did you mean {', '.join(close)}?" if close else "; see open_clip.list_models()"))
    tags = [t for m, t in open_clip.list_pretrained() if m == model]
    if tag and tag not in tags:
        raise MembenchError(f"open_clip has no pretrained weights {tag!r} for {model} (it has: {', '.join(tags) or 'none'})")
    return _spec(name, ("open_clip", model, tag), open_clip_preprocess(model, tag),
                 summary=f"ridge/MLP probe on open_clip {model} ({tag or 'random init'}) image embeddings (frozen)",
                 citation=f"open_clip (Ilharco et al.), {model}" + (f", pretrained {tag}" if tag else ""),
                 license="see open_clip's model card", options=(weights_option(f"{model}'s open_clip weights"),))


def open_clip_preprocess(model: str, tag: str) -> Preprocess:
    """open_clip's evaluation transform (image_transform_v2): 'squash' resizes both sides,
    'shortest' the shorter one then centre-crops; the interpolation, mean and std of the
    model's and the pretrained weights' configurations."""
    import open_clip

    cfg = {"mean": open_clip.OPENAI_DATASET_MEAN, "std": open_clip.OPENAI_DATASET_STD,
           "interpolation": "bicubic", "resize_mode": "shortest"}
    model_cfg = open_clip.get_model_config(model) or {}
    cfg.update(model_cfg.get("preprocess_cfg") or {})
    cfg.update({k: v for k, v in (open_clip.get_pretrained_cfg(model, tag) if tag else {}).items() if k in cfg})
    size = model_cfg.get("vision_cfg", {}).get("image_size", 224)
    size = size if isinstance(size, int) else size[0]
    interpolation = cfg["interpolation"] if cfg["interpolation"] in ("bilinear", "bicubic") else "bicubic"
    common = dict(mean=tuple(cfg["mean"]), std=tuple(cfg["std"]), train="none", interpolation=interpolation)
    if cfg["resize_mode"] == "shortest":
        return Preprocess(size=(size, size), crop=size, resize="shorter", **common)
    return Preprocess(size=(size, size), **common)  # squash (and "longest", approximated: docs/models.md)


# ------------------------------------------------------------------------------ building

def build_probe(backbone: tuple):
    def build(ctx):
        from membench_plugins.models.probe_net import Probe

        net, dim = BACKBONES[backbone[0]](ctx, *backbone[1:])
        with ctx.on_device():
            return Probe(net, dim, ctx.options.get("head", "ridge"), int(ctx.options.get("hidden", 256)))

    return build


def _load(ctx) -> bool:
    return ctx.pretrained and not ctx.meta


def timm_backbone(ctx, arch: str):
    import timm

    if not _load(ctx):
        with ctx.on_device():
            net = timm.create_model(arch, pretrained=False, num_classes=0)
    else:
        from membench.weights.files_loaded import note_loaded
        from membench.weights.hub import timm_file

        weights = timm_file(arch, ctx.options.get("weights"))
        net = timm.create_model(arch, pretrained=True, num_classes=0,
                                pretrained_cfg_overlay=dict(file=weights, source=None))
        note_loaded(weights)
    return net, getattr(net, "head_hidden_size", None) or net.num_features


def open_clip_image(ctx, model: str, tag: str):
    """open_clip's image tower, with its pretrained weights `tag` (found in or downloaded to the
    Hugging Face cache by open_clip's own download, or --model-option weights=PATH)."""
    import logging

    import open_clip

    from membench_plugins.models.probe_net import OpenClipImage

    explicit = ctx.options.get("weights")
    if _load(ctx) and not tag and not explicit:
        raise WeightsUnavailable(f"name open_clip's pretrained weights: probe/open_clip/{model}/TAG (its tags: "
                                 + ", ".join(t for m, t in open_clip.list_pretrained() if m == model)
                                 + "), or run with --pretrained none")
    pretrained = None
    if _load(ctx):
        from membench.weights.files_loaded import note_loaded
        from membench.weights.hub import open_clip_file

        path = open_clip_file(model, tag, explicit)
        note_loaded(path)
        pretrained = path if explicit else tag  # open_clip loads its own tags (quick_gelu etc. included)
    quiet = logging.getLogger().level
    logging.getLogger().setLevel(logging.ERROR)  # open_clip logs a warning for every random init
    try:
        clip = open_clip.create_model(model, pretrained=pretrained, device="meta" if ctx.meta else "cpu")
    finally:
        logging.getLogger().setLevel(quiet)
    return OpenClipImage(clip.visual), _embed_dim(model)


def _embed_dim(model: str) -> int:
    import open_clip

    return int(open_clip.get_model_config(model)["embed_dim"])


def resmem_trunk(ctx):
    import torch
    import torch.nn as nn
    from torchvision.models import resnet152

    from membench_plugins.models.probe_net import Normalized

    with ctx.on_device():
        net = resnet152(weights=None)
        net.fc = nn.Identity()  # the pooled 2048-d embedding
    if _load(ctx):
        from membench_plugins.models.resmem import resmem_state

        state = resmem_state(ctx)
        net.load_state_dict({k[len("features."):]: v for k, v in state.items()
                             if k.startswith("features.") and not k.startswith("features.fc.")})
    net = net.to(memory_format=torch.channels_last)  # ~9% faster convolutions on CPU, as ResMem
    if ctx.options.get("normalize", "none") == "imagenet":
        with ctx.on_device():
            net = Normalized(net, IMAGENET_MEAN, IMAGENET_STD)
    return net, 2048


def resmem_penultimate(ctx):
    import torch

    from membench_plugins.models.probe_net import ResMemPenultimate
    from membench_plugins.models.resmem_net import ResMem

    with ctx.on_device():
        net = ResMem().to(memory_format=torch.channels_last)
    if _load(ctx):
        from membench_plugins.models.resmem import resmem_state

        net.load_state_dict(resmem_state(ctx))
    return ResMemPenultimate(net), 256


# ------------------------------------------------------------------------------ MemCoach

MEMCOACH_CITATION = ("Laiti, Talon, Staiano, Ricci, How to Take a Memorable Picture? Empowering Users with "
                     "Actionable Feedback, CVPR 2026 (github.com/laitifranz/MemCoach)")
MEMCOACH_BACKBONE = ("ViT-SO400M-14-SigLIP-384", "webli")  # its metadata.json: backbone_model, pretrained_backbone_model
MEMCOACH_COMMIT = "64a2e1f4fbe2d97d04fee6d94c5e4acf8c2aa4d9"
MEMCOACH_HEAD = ReleasedWeights(
    name="memcoach_head", convert="membench_plugins.models.probe:memcoach_checkpoint",
    url=f"https://raw.githubusercontent.com/laitifranz/MemCoach/{MEMCOACH_COMMIT}/ckpt/target_predictor/memorability/"
        "ours/model_weights.pth",
    archive="model_weights.pth", per_split=False, part="head", size="1.2 MB",
    sha256="2ac0b0eb89311b409f64b13648c7214b21efa45da14c38672480958e53317517",
    layout="torch.save({'model': {fc1.*, fc2.*}, 'input_dim': 1152, 'hidden_dim': 256, 'backbone_model': ..., "
           "'pretrained_backbone_model': ...})",
    source="github.com/laitifranz/MemCoach, ckpt/target_predictor/memorability/ours/", license="Apache-2.0",
    citation=MEMCOACH_CITATION, dataset="",
    note="The repository does not say which images the head was trained on (its metadata.json reports a test "
         "Spearman of 0.826 on unnamed data): a LaMem or LNSIM number may be contaminated.")


def memcoach_checkpoint(archive):
    """Yield (None, state_dict, member): the head's tensors (the checkpoint's 'model', read
    weights-only) under `head.`; the shared import checks every shape against 1152-256-1."""
    from pathlib import Path

    from membench.weights.resolve import load_state_dict

    state = load_state_dict(Path(archive))  # the "model" entry of the authors' dict
    yield None, {f"head.{k}": v for k, v in state.items()}, Path(archive).name


def build_memcoach(ctx):
    import torch.nn as nn

    from membench_plugins.models.probe_net import MemCoach

    backbone, dim = open_clip_image(ctx, *MEMCOACH_BACKBONE)
    with ctx.on_device():
        head = nn.Module()
        head.fc1, head.fc2 = nn.Linear(dim, 256), nn.Linear(256, 1)
        model = MemCoach(backbone, head)
    if _load(ctx):
        from membench.weights.released import released_state

        state = released_state("memcoach", MEMCOACH_HEAD.name)
        model.head.load_state_dict({k[len("head."):]: v for k, v in state.items()})
    return model


@hookimpl
def register_models(register):
    register(ModelSpec(
        name="memcoach",
        build=build_memcoach,
        summary="MemCoach's memorability predictor: open_clip SigLIP SO400M/14@384 image features + its released "
                "MLP head (1152-256-1), clipped to [0, 1]",
        citation=MEMCOACH_CITATION,
        preprocess=open_clip_preprocess_static(),
        trainable=False,
        released_weights=(MEMCOACH_HEAD,),
        options=(weights_option("the SigLIP backbone's open_clip weights"),),
        tags=("peer", "pretrained-weights", "foundation-model"),
        params_expected={"total": 428_521_025},
        license="Apache-2.0 (MemCoach); SigLIP weights: see their model card",
        notes="Evaluation only (--train none): the backbone from open_clip (Hugging Face Hub, timm/"
              "ViT-SO400M-14-SigLIP-384, ~1.7 GB), the head from the MemCoach repository (`membench weights fetch "
              "memcoach`, or on first use). Training data of the head not stated by its authors.",
    ))


def open_clip_preprocess_static() -> Preprocess:
    """SigLIP's evaluation transform (open_clip's pretrained config of MemCoach's backbone: squash
    to 384x384, bicubic, mean = std = 0.5), without importing open_clip at registration."""
    return Preprocess(size=(384, 384), mean=(0.5, 0.5, 0.5), std=(0.5, 0.5, 0.5), train="none",
                      interpolation="bicubic")


BACKBONES = {"timm": timm_backbone, "open_clip": lambda ctx, model, tag: open_clip_image(ctx, model, tag),
             "resmem-resnet152": resmem_trunk, "resmem": resmem_penultimate}


@hookimpl
def register_model_families(register):
    register("probe", resolve_probe)
