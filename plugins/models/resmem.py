"""`resmem`: ResMem, an AlexNet-like branch beside a ResNet-152, regressing memorability.

Needell & Bainbridge, "Embracing New Techniques in Deep Learning for Estimating Image
Memorability", Computational Brain & Behavior 5, 2022 (first shown at VSS 2021; code and
weights: PyPI package `resmem`, github.com/Brain-Bridge-Lab/resmem).

membench rebuilds the architecture itself (same layer names, so the package's state_dict
loads as is): conv1 48@11x11/4 -> pool -> LRN -> conv2 256@5x5 g2 -> pool -> LRN ->
conv3/conv4 384@3x3 g2 -> conv5 256@3x3 g2 -> pool gives 9216 features, concatenated with
the 1000 logits of a full ResNet-152; fc 10216->4096->4096->2048->1024->512->256->1,
sigmoid. Input: Resize(256, 256) -> CenterCrop(227) -> [0, 1], no normalisation (the
ResNet-152 also sees unnormalised pixels, as in the package).

Weights come from the installed `resmem` package (`pip install 'membench[resmem]'`; the
file ships inside its wheel, so it works offline) or from `--model-option weights=PATH`.
The package's licence is non-commercial. ResMem was trained on random LaMem+MemCat
splits, so its numbers on LaMem's official test splits are possibly contaminated.

Evaluation reproduces the package's `transformer` pixel for pixel (PIL resize; predictions
within 1e-5 of the package's, tests/test_reference.py). Every remaining difference from
the package, with its reason and measured effect: docs/models.md#resmem.
"""

from __future__ import annotations

from membench import hookimpl
from membench.errors import WeightsUnavailable
from membench.options import weights_option
from membench.spec import ModelSpec, Preprocess, Reported, Stage

CITATION = ("Needell & Bainbridge, Embracing New Techniques in Deep Learning for Estimating "
            "Image Memorability, Computational Brain & Behavior 5, 2022")

# The package's own training defaults (ResMem.__init__: SGD, lr 1e-5, momentum 0.9, the
# ResNet-152 frozen). Epochs and batch size are membench's choice for fine-tuning.
FINETUNE = Stage(name="finetune", epochs=10, batch_size=32, lr=1e-5, optimizer="sgd",
                 schedule="constant", frozen=("features",))


def package_weights_file():
    """model.pt inside the installed `resmem` package, found without importing it."""
    import importlib.util
    from pathlib import Path

    found = importlib.util.find_spec("resmem")
    if found is None or not found.submodule_search_locations:
        return None
    path = Path(list(found.submodule_search_locations)[0]) / "model.pt"
    return path if path.is_file() else None


def build_resmem(ctx):
    import torch

    from membench_plugins.models.resmem_net import ResMem

    with ctx.on_device():
        model = ResMem().to(memory_format=torch.channels_last)
    if ctx.pretrained and not ctx.meta:
        model.load_state_dict(resmem_state(ctx))
    return model


def resmem_state(ctx) -> dict:
    """ResMem's state_dict: `--model-option weights=PATH`, else the installed package's
    (also what the `probe/resmem...` backbones load)."""
    from membench.weights.resolve import load_state_dict, resolve_file

    explicit = ctx.options.get("weights")
    if explicit:
        return load_state_dict(resolve_file("model.pt", "ResMem", explicit))
    path = package_weights_file()
    if path is None:
        raise WeightsUnavailable(
            "ResMem weights come with the `resmem` package, which is not installed: "
            "pip install 'membench[resmem]' (or `pip install --no-deps resmem`), "
            "or pass --model-option weights=PATH, or run with --pretrained none")
    return load_state_dict(path)


@hookimpl
def register_models(register):
    register(ModelSpec(
        name="resmem",
        build=build_resmem,
        summary="ResMem: AlexNet-like branch + ResNet-152, fc stack, sigmoid (weights from the resmem package)",
        citation=CITATION,
        reported=Reported(rho=0.67, source="resmem package README (Needell & Bainbridge)",
                          dataset="lamem+memcat",
                          note="peak of a hyper-parameter sweep (0.66-0.67) on its own random "
                               "LaMem+MemCat split, not LaMem's official splits"),
        preprocess=Preprocess(size=(256, 256), crop=227, mean=None, std=None, train="crop"),
        recipe=(FINETUNE,),
        options=(weights_option("a ResMem state_dict (the package's model.pt layout)", trained=True),),
        tags=("peer", "pretrained-weights", "possibly-contaminated-on-lamem"),
        license="non-commercial (ResMem licence)",
        params_expected={"total": 131_688_809},
        notes="Trained on random LaMem+MemCat splits, so LaMem's official test images overlap "
              "its training data: its LaMem numbers are possibly contaminated. Evaluate as "
              "released with --train none; fine-tuning keeps the ResNet-152 frozen as the "
              "package does. Weights: the installed resmem package (optional extra "
              "membench[resmem]) or --model-option weights=PATH.",
    ))
