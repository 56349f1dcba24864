"""`resnet50-lamem`: one ResNet50 regressor for memorability, the first row of Table 1.

Leonardi, Celona, Napoletano, Bianco, Schettini, Manessi, Rozza: "Image Memorability
Using Diverse Visual Features and Soft Attention", ICIAP 2019, §3.2 (stage 1).
Backbone: He et al., "Deep Residual Learning for Image Recognition", CVPR 2016.

The network is torchvision's ResNet50 whose 1000-way classifier is replaced by a single
linear output. Its `backbone` (everything before the average pool, 2048x8x8 at 256x256)
is what `ours` reuses as backbone A once stage 1 has trained it. Evaluation follows the
paper (256x256, ImageNet mean/std; tests/test_reference.py): docs/models.md#ours.
"""

from __future__ import annotations

from membench import hookimpl
from membench.spec import ModelSpec, Preprocess, Reported, Stage

PAPER = ("Leonardi et al., Image Memorability Using Diverse Visual Features and Soft "
         "Attention, ICIAP 2019")

# Paper §3.2, stage 1: Adam, LR 5e-7 decayed by Eq. 1, 150 epochs, batch 10, MSE.
STAGE1 = Stage(name="stage1", epochs=150, batch_size=10, lr=5e-7, optimizer="adam",
               schedule="paper-poly")


def resnet50_trunk(ctx, *, imagenet: bool):
    """ResNet50 without avgpool/fc: (B,3,H,W) -> (B,2048,H/32,W/32)."""
    import torch.nn as nn
    from torchvision.models import resnet50

    from membench.weights.resolve import torchvision_weights

    with ctx.on_device():
        net = resnet50(weights=None)
    if imagenet and ctx.pretrained and not ctx.meta:
        net.load_state_dict(torchvision_weights("resnet50", "ResNet50 ImageNet"))
    return nn.Sequential(*list(net.children())[:-2])


def build_resnet50_lamem(ctx):
    import torch.nn as nn

    class ResNet50Regressor(nn.Module):
        """ResNet50 trunk -> global average pool -> Linear(2048, 1)."""

        def __init__(self, backbone):
            super().__init__()
            self.backbone = backbone
            self.pool = nn.AdaptiveAvgPool2d(1)
            self.head = nn.Linear(2048, 1)

        def forward(self, x):
            return self.head(self.pool(self.backbone(x)).flatten(1)).squeeze(1)

    backbone = resnet50_trunk(ctx, imagenet=ctx.init == "imagenet")
    with ctx.on_device():
        return ResNet50Regressor(backbone)


@hookimpl
def register_models(register):
    register(ModelSpec(
        name="resnet50-lamem",
        build=build_resnet50_lamem,
        summary="ResNet50 regressor trained on LaMem (stage 1 of the proposed model; Table 1 row 1)",
        citation=PAPER,
        reported=Reported(rho=0.680, mse=0.0083, source="Leonardi et al. 2019, Table 1"),
        preprocess=Preprocess(size=(256, 256), train="paper"),
        recipe=(STAGE1,),
        tags=("paper", "ablation-of:ours", "table1"),
        params_expected={"total": 23_510_081},
        notes="The paper trains it 'from scratch'; membench defaults to ImageNet initialisation "
              "(--init scratch for the literal reading), recorded in every result.",
    ))
