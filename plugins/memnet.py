"""`memnet`: MemNet, a CaffeNet (Hybrid-CNN) regressor with a single output.

Khosla, Raju, Torralba, Oliva: "Understanding and Predicting Image Memorability at a Large
Scale", ICCV 2015 (LaMem). Layout: Hybrid-CNN (Zhou et al., NIPS 2014), i.e. CaffeNet:
conv1 96@11x11/4 -> ReLU -> pool 3/2 -> LRN; conv2 256@5x5 groups 2 -> ReLU -> pool -> LRN;
conv3 384@3x3; conv4 384@3x3 groups 2; conv5 256@3x3 groups 2 -> pool; fc6 9216->4096,
fc7 4096->4096 (ReLU, dropout 0.5); fc8 4096->1. Caffe's LRN (local size 5, alpha 1e-4,
beta 0.75) is torch.nn.LocalResponseNorm with the same arguments; CaffeNet pools before
normalising, unlike the original AlexNet. Euclidean (MSE) loss, 227x227 crops of 256x256.

Reconstruction: the ICCV paper does not state MemNet's fine-tuning hyper-parameters; the
recipe below is Caffe's usual fine-tuning setting (SGD, momentum 0.9, lr 1e-3, weight
decay 5e-4, batch 256), chosen by membench. No Hybrid-CNN or MemNet weights are reachable
offline: train with `--pretrained none`, or load a state_dict in this module's layout with
`--model-option weights=PATH`.
"""

from __future__ import annotations

from membench import hookimpl
from membench.errors import MembenchError, WeightsUnavailable
from membench.options import weights_option
from membench.spec import ModelSpec, Preprocess, Reported, Stage

CITATION = ("Khosla, Raju, Torralba, Oliva, Understanding and Predicting Image Memorability "
            "at a Large Scale, ICCV 2015")

RECIPE = Stage(name="finetune", epochs=30, batch_size=256, lr=1e-3, optimizer="sgd",
               weight_decay=5e-4, schedule="constant")


def build_memnet(ctx):
    import contextlib

    import torch
    import torch.nn as nn

    def conv(c_in, c_out, k, stride=1, padding=0, groups=1):
        return [nn.Conv2d(c_in, c_out, k, stride=stride, padding=padding, groups=groups), nn.ReLU(inplace=True)]

    def lrn():
        return nn.LocalResponseNorm(5, alpha=1e-4, beta=0.75, k=1.0)

    class MemNet(nn.Module):
        """(B,3,227,227) normalised -> (B,) scores."""

        def __init__(self):
            super().__init__()
            self.features = nn.Sequential(
                *conv(3, 96, 11, stride=4), nn.MaxPool2d(3, 2), lrn(),
                *conv(96, 256, 5, padding=2, groups=2), nn.MaxPool2d(3, 2), lrn(),
                *conv(256, 384, 3, padding=1),
                *conv(384, 384, 3, padding=1, groups=2),
                *conv(384, 256, 3, padding=1, groups=2), nn.MaxPool2d(3, 2),
            )
            self.classifier = nn.Sequential(
                nn.Linear(256 * 6 * 6, 4096), nn.ReLU(inplace=True), nn.Dropout(0.5),
                nn.Linear(4096, 4096), nn.ReLU(inplace=True), nn.Dropout(0.5),
                nn.Linear(4096, 1),
            )

        def forward(self, x):
            f = self.features(x)
            if f.shape[-2:] != (6, 6):
                raise ValueError(f"MemNet needs 227x227 inputs (6x6 conv5 maps), got {tuple(x.shape[-2:])}")
            return self.classifier(f.flatten(1)).squeeze(1)

    with torch.device("meta") if ctx.meta else contextlib.nullcontext():
        model = MemNet()
    if ctx.meta or not ctx.pretrained:
        return model
    explicit = ctx.options.get("weights")
    if not explicit:
        raise WeightsUnavailable(
            "MemNet (Hybrid-CNN) weights are not available offline: pass "
            "--model-option weights=PATH (a state_dict in membench's memnet layout), "
            "or run with --pretrained none to train from random initialisation")
    from membench.weights import load_state_dict, resolve_file

    model.load_state_dict(load_state_dict(resolve_file("memnet.pth", "MemNet", explicit)))
    return model


@hookimpl
def register_models(register):
    register(ModelSpec(
        name="memnet",
        build=build_memnet,
        summary="MemNet: CaffeNet/Hybrid-CNN (LRN, grouped convs) with one regression output",
        citation=CITATION,
        reported=Reported(rho=0.640, params=62_000_000,
                          source="Leonardi et al. 2019, Table 2 (MemNet: Khosla et al. 2015)"),
        preprocess=Preprocess(size=(256, 256), crop=227, train="crop"),
        recipe=(RECIPE,),
        options=(weights_option("a state_dict in membench's memnet layout (Hybrid-CNN)"),),
        tags=("paper", "table2"),
        params_expected={"total": 56_872_321},
        notes="Measured 56,872,321 parameters with one output; the reported 62M is most likely "
              "Hybrid-CNN with its 1,183-way fc8 (61,714,975). Training recipe reconstructed "
              "(the paper gives none); no public weights reachable offline.",
    ))
