"""`vitmem` and the `timm/<arch>` family: vision transformers (or any timm model) as
memorability regressors.

ViTMem: Hagen & Espeseth, "Image Memorability Prediction with Vision Transformers",
arXiv:2301.08647, 2023. timm's `vit_base_patch16_224_miil` with one output and a sigmoid;
input Resize(256, 256) -> CenterCrop(224) -> [0, 1], no normalisation (its package's
transform). The layer names follow the package (`vit.*`), so its released checkpoint
`vitmem_base_patch16_224_miil_v1-f580d24a.pth` loads as is. It is declared as the model's
released weights (`RELEASE`): fetched from the address the `vitmem` package downloads it from
(the Hugging Face Hub, brainpriority/vitmem), checked against the sha256 prefix its name
publishes, and installed once (`membench weights fetch vitmem`, or on first use where the
network allows); `--model-option weights=PATH` takes a copy you have.
`--model-option start=imagenet` starts instead from timm's ImageNet-21k MIIL weights (the
starting point of ViTMem's own fine-tuning).

`timm/<arch>` (e.g. `timm/convnext_tiny`, `timm/resnet18.a1_in1k`): `timm.create_model(arch,
num_classes=1)`, a linear output, the preprocessing of timm's pretrained configuration
(input size, crop_pct, mean/std; membench always resamples bilinearly). ImageNet weights come
from the Hugging Face cache, timm's own Hub download (membench.weights.hub) or
`--model-option weights=PATH`; timm replaces the classifier by the new single output.

Evaluation reproduces the `vitmem` package's transform and timm's `create_transform`
pixel for pixel (tests/test_reference.py); remaining differences: docs/models.md#vitmem
and docs/models.md#timmarch.
"""

from __future__ import annotations

import math

from membench import hookimpl
from membench.errors import MembenchError
from membench.options import Option, weights_option
from membench.spec import ModelSpec, Preprocess, ReleasedWeights, Reported, Stage

CITATION = ("Hagen & Espeseth, Image Memorability Prediction with Vision Transformers, "
            "arXiv:2301.08647, 2023")
VITMEM_ARCH = "vit_base_patch16_224_miil"
VITMEM_FILE = "vitmem_base_patch16_224_miil_v1-f580d24a.pth"
# where the `vitmem` package (1.0.1, ViTMem.__init__) downloads it, with torch hub's hash check
VITMEM_URL = f"https://huggingface.co/brainpriority/vitmem/resolve/main/{VITMEM_FILE}"

# ViTMem's fine-tuning hyper-parameters are not in models.md: Adam at a ViT fine-tuning LR,
# membench's choice.
VITMEM_RECIPE = Stage(name="finetune", epochs=10, batch_size=32, lr=1e-5, optimizer="adam",
                      schedule="constant")
# Any timm backbone: a generic fine-tuning recipe chosen by membench.
TIMM_RECIPE = Stage(name="finetune", epochs=20, batch_size=32, lr=1e-4, optimizer="adam",
                    weight_decay=1e-5, schedule="constant")


def vitmem_checkpoint(archive):
    """Yield (None, state_dict, member): the package's checkpoint, a plain state_dict of its
    ViTMem_model (keys `vit.*`; a bare timm state_dict is prefixed)."""
    from pathlib import Path

    from membench.weights.resolve import load_state_dict

    state = load_state_dict(Path(archive))
    if not any(k.startswith("vit.") for k in state):
        state = {f"vit.{k}": v for k, v in state.items()}
    yield None, state, Path(archive).name


RELEASE = ReleasedWeights(
    name="vitmem_v1", convert=vitmem_checkpoint, url=VITMEM_URL, archive=VITMEM_FILE, per_split=False,
    sha256=VITMEM_FILE.rsplit("-", 1)[1].split(".")[0], size="343 MB",
    layout="one state_dict of the vitmem package's ViTMem_model (keys vit.*)",
    source="the vitmem package (PyPI), Hugging Face repository brainpriority/vitmem",
    license="MIT (the vitmem package)", citation=CITATION, dataset="",
    note="The package does not say which images the released checkpoint was trained on (the paper "
         "trains and tests on its own splits of LaMem and other datasets): its numbers on LaMem's test "
         "splits are possibly contaminated.")


def create_timm(arch: str, ctx, weights: str | None):
    """timm.create_model(arch, num_classes=1) with weights from `weights` (a file) if set."""
    import timm

    if weights is None:
        with ctx.on_device():
            return timm.create_model(arch, pretrained=False, num_classes=1)
    if not str(weights).endswith(".npz"):  # timm reads .npz without unpickling
        from membench.weights.resolve import load_state_dict

        # membench's weights-only loader first: a file that would run code, or holds NaN or
        # integer weights, is one line naming it (timm would raise its own traceback)
        load_state_dict(weights)
    return timm.create_model(arch, pretrained=True, num_classes=1,
                             pretrained_cfg_overlay=dict(file=weights, source=None))


# ----------------------------------------------------------------------------- ViTMem

def build_vitmem(ctx):
    import torch
    import torch.nn as nn

    class ViTMem(nn.Module):
        """(B,3,224,224) in [0,1] -> (B,) memorability in [0,1]."""

        def __init__(self, vit):
            super().__init__()
            self.vit = vit

        def forward(self, x):
            return torch.sigmoid(self.vit(x)).squeeze(1)

    start = ctx.options.get("start", "vitmem")
    if start not in ("vitmem", "imagenet"):
        raise MembenchError(f"--model-option start must be vitmem or imagenet, not {start!r}")
    load = ctx.pretrained and not ctx.meta
    explicit = ctx.options.get("weights")
    backbone = None
    if load and start == "imagenet":
        from membench.weights.hub import timm_file

        backbone = timm_file(VITMEM_ARCH, explicit)
    state = None
    if load and start == "vitmem":  # before the slow build: a missing file is said at once
        if explicit:
            from membench.weights.resolve import resolve_file

            state = next(vitmem_checkpoint(resolve_file(VITMEM_FILE, "ViTMem", explicit)))[1]
        else:
            from membench.weights.released import released_state

            state = released_state("vitmem", RELEASE.name)
    with ctx.on_device():
        model = ViTMem(create_timm(VITMEM_ARCH, ctx, backbone))
    if state is not None:
        model.load_state_dict(state)
    return model


# ----------------------------------------------------------------------------- timm/<arch>

def build_timm(arch: str):
    def build(ctx):
        import torch.nn as nn

        class TimmRegressor(nn.Module):
            """A timm model with one linear output: (B,3,H,W) normalised -> (B,)."""

            def __init__(self, net):
                super().__init__()
                self.net = net

            def forward(self, x):
                return self.net(x).squeeze(1)

        weights = None
        if ctx.pretrained and not ctx.meta:
            from membench.weights.hub import timm_file

            weights = timm_file(arch, ctx.options.get("weights"))
        net = create_timm(arch, ctx, weights)
        with ctx.on_device():
            return TimmRegressor(net)

    return build


def timm_preprocess(cfg: dict) -> Preprocess:
    """timm's evaluation transform (`timm.data.create_transform` of the pretrained config):
    the shorter side to floor(input / crop_pct) with the config's interpolation, centre crop
    to the input ("squash" configs resize both sides). Training resizes the square and
    takes a RandomResizedCrop. Non-square inputs and "border" crops are approximated by a
    plain resize to the input (see docs/models.md)."""
    from membench.spec import INTERPOLATIONS

    _, h, w = cfg.get("input_size", (3, 224, 224))
    mean = tuple(cfg.get("mean", (0.485, 0.456, 0.406)))
    std = tuple(cfg.get("std", (0.229, 0.224, 0.225)))
    interpolation = cfg.get("interpolation") if cfg.get("interpolation") in INTERPOLATIONS else "bilinear"
    crop_mode = cfg.get("crop_mode") or "center"
    if h != w or crop_mode not in ("center", "squash"):
        return Preprocess(size=(h, w), mean=mean, std=std, train="none", interpolation=interpolation)
    # timm's own default when a config has none (timm.data.DEFAULT_CROP_PCT)
    crop_pct = cfg.get("crop_pct") or 0.875
    scaled = math.floor(h / crop_pct)
    return Preprocess(size=(scaled, scaled), crop=h, mean=mean, std=std, train="resized-crop",
                      resize="shorter" if crop_mode == "center" else "exact", interpolation=interpolation)


def is_timm_model(arch: str) -> bool:
    import timm

    try:
        if not arch or not timm.is_model(arch):
            return False
        timm.models.get_pretrained_cfg(arch)
        return True
    except RuntimeError:  # a known architecture with an unknown pretrained tag
        return False


def resolve_timm(name: str) -> ModelSpec:
    import difflib

    import timm

    arch = name.split("/", 1)[1]
    if not is_timm_model(arch):
        close = difflib.get_close_matches(arch, timm.list_models() + timm.list_models(pretrained=True), n=3, cutoff=0.6)
        hint = f"; did you mean {', '.join('timm/' + c for c in close)}?" if close else "; see timm.list_models()"
        raise MembenchError(f"unknown timm model {arch!r}{hint}")
    cfg = timm.models.get_pretrained_cfg(arch)
    cfg = cfg.to_dict() if cfg is not None else {}
    paper = cfg.get("paper_name") or cfg.get("paper_ids") or ""
    return ModelSpec(
        name=name,
        build=build_timm(arch),
        summary=f"timm {arch} with one linear output (timm's preprocessing)",
        citation=f"timm (Wightman), {arch}" + (f"; {paper}" if paper else ""),
        preprocess=timm_preprocess(cfg),
        recipe=(TIMM_RECIPE,),
        options=(weights_option(f"{arch}'s pretrained weights"),),
        tags=("timm", "family"),
        license=cfg.get("license", ""),
        notes="ImageNet weights: the Hugging Face cache, timm's own Hub download where the network allows, "
              "or --model-option weights=PATH. Fine-tuning recipe chosen by membench.",
    )


@hookimpl
def register_models(register):
    register(ModelSpec(
        name="vitmem",
        build=build_vitmem,
        summary="ViTMem: ViT-B/16 (timm vit_base_patch16_224_miil) with one sigmoid output",
        citation=CITATION,
        reported=Reported(source="Hagen & Espeseth 2023",
                          note="evaluated on its own splits of several datasets; not on LaMem's official splits"),
        preprocess=Preprocess(size=(256, 256), crop=224, mean=None, std=None, train="crop"),
        recipe=(VITMEM_RECIPE,),
        released_weights=(RELEASE,),
        options=(Option("start", choices=("vitmem", "imagenet"), default="vitmem",
                        help="initial weights: the ViTMem checkpoint, or timm's ImageNet ViT"),
                 weights_option("the ViTMem checkpoint (start=vitmem) or the ImageNet ViT (start=imagenet)")),
        tags=("peer", "transformer"),
        license="apache-2.0 (timm architecture)",
        params_expected={"total": 85_771_777},
        notes=f"Weights: the authors' checkpoint {VITMEM_FILE} (`membench weights fetch vitmem`, or "
              "downloaded on first use where the network allows; offline, the error names the address and "
              "where to put the file), or --model-option weights=PATH; start from ImageNet with "
              "--model-option start=imagenet, or train from scratch with --pretrained none. "
              "timm's vit_base_patch16_224_miil has no qkv biases: 85,771,777 parameters "
              "(85,799,425 would be the biased vit_base_patch16_224).",
    ))


@hookimpl
def register_model_families(register):
    register("timm", resolve_timm)
