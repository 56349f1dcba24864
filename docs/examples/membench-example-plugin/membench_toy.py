"""membench-toy: an example third-party membench plugin.

It registers one model, `toy-cnn`: two strided convolutions, a global average pool and a
linear output, reading 64x64 images. It is not from any paper (so it reports no
numbers); it exists to show every part of a model plugin in one screen.
"""

from __future__ import annotations

from membench import ModelSpec, Option, Preprocess, Stage, hookimpl

# conv1 3*8*9+8 + conv2 8*16*9+16 + head 16+1; `membench params toy-cnn` checks it.
TOY_PARAMS = 1409


def build_toy_cnn(ctx):
    """Called by membench with a BuildContext. Imports torch here, not at module level,
    so `membench --help` and `membench models` stay fast."""
    import contextlib

    import torch
    import torch.nn as nn

    class ToyCNN(nn.Module):
        def __init__(self, width: int):
            super().__init__()
            self.features = nn.Sequential(
                nn.Conv2d(3, width, 3, stride=2, padding=1), nn.ReLU(),
                nn.Conv2d(width, 2 * width, 3, stride=2, padding=1), nn.ReLU(),
                nn.AdaptiveAvgPool2d(1),
            )
            self.head = nn.Linear(2 * width, 1)

        def forward(self, x):  # (B, 3, 64, 64) normalised -> (B,) scores
            return self.head(self.features(x).flatten(1)).squeeze(1)

    width = int(ctx.options.get("width", 8))  # --model-option width=16
    # On the meta device (parameter counting) nothing is allocated.
    with torch.device("meta") if ctx.meta else contextlib.nullcontext():
        model = ToyCNN(width)
    # There are no published weights, so ctx.pretrained changes nothing here (the spec says
    # so: pretrained_weights=False). A model with weights would load them with
    # membench.weights.resolve_file(...) when ctx.pretrained and not ctx.meta.
    return model


@hookimpl
def register_models(register):
    register(ModelSpec(
        name="toy-cnn",
        build=build_toy_cnn,
        summary="example plugin: a two-layer CNN at 64x64 (not a published model)",
        citation="membench documentation, docs/plugins.md",
        preprocess=Preprocess(size=(64, 64), train="paper"),
        recipe=(Stage(name="train", epochs=10, batch_size=16, lr=1e-3, optimizer="adam",
                      schedule="constant", patience=3),),
        # Every option the builder reads is declared: membench checks --model-option values
        # against these before any work starts, shows them in `membench models toy-cnn`, and
        # labels runs with non-default values as their own configuration.
        options=(Option("width", "int", default=8, help="channels of the first convolution"),),
        # No pretrained weights: `--pretrained none` is then the same job, not a configuration.
        pretrained_weights=False,
        tags=("example",),
        license="MIT",
        params_expected={"total": TOY_PARAMS},
    ))
