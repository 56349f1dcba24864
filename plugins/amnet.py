"""`amnet`: AMNet, soft attention over ResNet50 features driving a 3-step LSTM.

Fajtl, Argyriou, Monekosso, Remagnino: "AMNet: Memorability Estimation with Attention",
CVPR 2018 (official code: github.com/ok1zjf/AMNet, MIT licence).

Layout of the official code: a frozen ImageNet ResNet50 run up to layer3 (1024x14x14 at
224x224) -> conv1x1 1024->1024 + BN + ReLU + Dropout(0.8) gives a = 196 annotation
vectors; h0 = tanh(Linear(mean a)), c0 likewise; e = Dropout(ReLU(Linear_nobias(a)))
once; each of 3 steps adds Linear(h)->196 as a per-location bias, ReLU, Dropout,
Linear_nobias->1, softmax over the 196 locations -> alpha; z = sum alpha*a feeds one
LSTM step; Dropout(h) -> Linear 1024->512 -> ReLU -> Dropout -> Linear 512->1. The score
is the mean over the steps /2 + 0.754 (targets are trained as (y - 0.754) * 2); the loss
adds the attention penalty gamma * sum_L (sum_t (0.2 - alpha_t))^2 / B, gamma = 1e-5.

The module keeps the whole torchvision ResNet50 (its layer4 and fc are never run) so that
the total matches the reported 39M: 38,880,493 parameters, 21,866,757 used in forward.
"""

from __future__ import annotations

from membench import hookimpl
from membench.options import weights_option
from membench.spec import ModelSpec, Preprocess, Reported, Stage

CITATION = ("Fajtl, Argyriou, Monekosso, Remagnino, AMNet: Memorability Estimation with "
            "Attention, CVPR 2018")

STEPS = 3
LOCATIONS = 14 * 14
TARGET_MEAN = 0.754  # the official code centres LaMem scores on this before scaling by 2
ATTENTION_TARGET = 0.2
GAMMA = 1e-5

# Official recipe: Adam lr 1e-4, weight decay 1e-6, batch 222, 55 epochs, constant LR;
# the ResNet50 stays frozen.
RECIPE = Stage(name="train", epochs=55, batch_size=222, lr=1e-4, weight_decay=1e-6,
               optimizer="adam", schedule="constant", frozen=("backbone",))


def build_amnet(ctx):
    import contextlib

    import torch
    import torch.nn as nn
    from torchvision.models import resnet50

    class AMNet(nn.Module):
        """(B,3,224,224) normalised -> (B,) scores; `last_alphas` (B, steps, 196) of the
        latest forward feed the attention penalty in `loss`."""

        def __init__(self, d=1024, hidden=1024):
            super().__init__()
            self.backbone = resnet50(weights=None)
            self.inconv = nn.Conv2d(1024, d, kernel_size=1)
            self.bn1 = nn.BatchNorm2d(d)
            self.hs1 = nn.Linear(d, hidden)
            self.hc1 = nn.Linear(d, hidden)
            self.e1 = nn.Linear(d, d, bias=False)
            self.eh1 = nn.Linear(hidden, LOCATIONS)
            self.eh3 = nn.Linear(d, 1, bias=False)
            self.rnn = nn.LSTM(d, hidden, num_layers=1, batch_first=True)
            self.regnet1 = nn.Linear(hidden, 512)
            self.regnet4 = nn.Linear(512, 1)
            self.relu = nn.ReLU()
            self.drop50 = nn.Dropout(0.5)
            self.drop80 = nn.Dropout(0.8)
            self.last_alphas = None

        def trunk(self, x):
            b = self.backbone
            x = b.maxpool(b.relu(b.bn1(b.conv1(x))))
            return b.layer3(b.layer2(b.layer1(x)))

        def forward(self, x):
            f = self.drop80(self.relu(self.bn1(self.inconv(self.trunk(x)))))
            a = f.flatten(2).transpose(1, 2)  # (B, L, D)
            if a.shape[1] != LOCATIONS:
                raise ValueError(f"AMNet needs 224x224 inputs (14x14 features), got {tuple(x.shape[-2:])}")
            mean = a.mean(1)
            state = (torch.tanh(self.hs1(mean)).unsqueeze(0), torch.tanh(self.hc1(mean)).unsqueeze(0))
            h = state[0][0]
            e = self.drop50(self.relu(self.e1(a)))  # (B, L, D), fixed over the steps
            outs, alphas = [], []
            for _ in range(STEPS):
                scores = self.eh3(self.drop50(self.relu(e + self.eh1(h).unsqueeze(2)))).squeeze(2)
                alpha = torch.softmax(scores, dim=1)  # (B, L)
                z = torch.bmm(alpha.unsqueeze(1), a)  # (B, 1, D)
                out, state = self.rnn(z, state)
                h = out[:, 0]
                outs.append(self.regnet4(self.drop50(self.relu(self.regnet1(self.drop50(h))))))
                alphas.append(alpha)
            self.last_alphas = torch.stack(alphas, 1)
            return torch.cat(outs, 1).mean(1) / 2 + TARGET_MEAN

        def loss(self, pred, target):
            """MSE in the official scaled space plus the attention penalty."""
            dtype = torch.promote_types(pred.dtype, torch.float32)  # no half-precision sums
            pred, target = pred.to(dtype), target.to(dtype)
            scaled = ((pred - TARGET_MEAN) * 2 - (target - TARGET_MEAN) * 2).pow(2).mean()
            alphas = self.last_alphas
            if alphas is None:
                return scaled
            alphas = alphas.to(dtype)
            penalty = (ATTENTION_TARGET - alphas).sum(1).pow(2).sum() / alphas.shape[0]
            return scaled + GAMMA * penalty

    with torch.device("meta") if ctx.meta else contextlib.nullcontext():
        model = AMNet()
    if ctx.meta:
        return model
    explicit = ctx.options.get("weights")
    if explicit:
        model.load_state_dict(_official_keys(_load(explicit)))
    elif ctx.pretrained and ctx.init == "imagenet":
        from membench.weights import torchvision_weights

        model.backbone.load_state_dict(torchvision_weights("resnet50", "ResNet50 ImageNet (AMNet backbone)"))
    return model


def _load(path):
    from membench.weights import load_state_dict, resolve_file

    return load_state_dict(resolve_file("amnet.pth", "AMNet", path))


def _official_keys(state: dict) -> dict:
    """Accept the official code's layout too (its ResNet50 sits at core_cnn.core_cnn)."""
    return {k.replace("core_cnn.core_cnn.", "backbone.", 1): v for k, v in state.items()}


@hookimpl
def register_models(register):
    register(ModelSpec(
        name="amnet",
        build=build_amnet,
        summary="AMNet: frozen ResNet50 (to layer3), 14x14 soft attention, 3-step LSTM",
        citation=CITATION,
        reported=Reported(rho=0.677, mse=0.0082, params=39_000_000,
                          source="Leonardi et al. 2019, Table 2 (AMNet: Fajtl et al. 2018)"),
        # As the official code: evaluation is Resize(224, 224) (the centre crop of 224 is a
        # no-op); training resizes to 264x264, then RandomResizedCrop(224) and a flip.
        preprocess=Preprocess(size=(224, 224), train_size=(264, 264), crop=224, train="resized-crop"),
        recipe=(RECIPE,),
        options=(weights_option("a trained AMNet state_dict (membench or official key layout)"),),
        tags=("paper", "table2", "attention"),
        license="MIT",
        params_expected={"total": 38_880_493, "used": 21_866_757},
        notes="Total includes ResNet50's layer4 and fc, carried but never run (the reported "
              "39M counts them); 21,866,757 parameters are used in forward. The official model "
              "selects the epoch with the best validation Spearman (membench's default); seed "
              "12345 in the original. --model-option weights=PATH loads a trained AMNet "
              "state_dict (membench or official key layout).",
    ))
