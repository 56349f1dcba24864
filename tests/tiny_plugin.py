"""A tiny model plugin for fast harness tests (CPU, 32x32): shaped like any third-party one."""

from membench import BuildContext, ModelSpec, Option, Preprocess, Reported, Stage, hookimpl


def build_tiny(ctx: BuildContext):
    import torch
    import torch.nn as nn

    from membench.weights.resolve import load_state_dict

    width = int(ctx.options.get("width", 8))  # declared by tiny-cnn: --model-option width=16

    class Tiny(nn.Module):
        def __init__(self):
            super().__init__()
            self.features = nn.Sequential(nn.Conv2d(3, width, 3, stride=2, padding=1), nn.BatchNorm2d(width),
                                          nn.ReLU(), nn.AdaptiveAvgPool2d(1), nn.Flatten())
            self.head = nn.Linear(width, 1)

        def forward(self, x):
            return self.head(self.features(x)).squeeze(1)

    with torch.device("meta") if ctx.meta else torch.device("cpu"):
        model = Tiny()
    if "stage1" in ctx.upstream:  # the chained model starts from stage 1's weights
        model.load_state_dict(load_state_dict(ctx.upstream["stage1"]))
    return model


PRE = Preprocess(size=(32, 32), train="paper")


@hookimpl
def register_models(register):
    register(ModelSpec(
        name="tiny-cnn", build=build_tiny, summary="test model", citation="none",
        reported=Reported(rho=0.5, mse=0.01, params=249, source="made up for tests"),
        preprocess=PRE, recipe=(Stage("stage1", epochs=3, batch_size=8, lr=1e-2),),
        options=(Option("width", "int", default=8, help="channels of the convolution"),),
        tags=("test",), params_expected={"total": 249}))
    register(ModelSpec(
        name="tiny-chain", build=build_tiny, summary="test model with a chained stage",
        preprocess=PRE,
        recipe=(Stage("stage1", model="tiny-cnn"),
                Stage("stage2", epochs=2, batch_size=8, lr=1e-2, frozen=("features",))),
        tags=("test",)))
