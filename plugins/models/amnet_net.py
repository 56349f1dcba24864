"""The AMNet network (torch imported at module level: loaded only when a model is built).
Layout and every constant follow the official code; see plugins/models/amnet.py for the
description, the recipe and the import of the authors' weights."""

from __future__ import annotations

import torch
import torch.nn as nn
from torchvision.models import resnet50

STEPS = 3
LOCATIONS = 14 * 14
TARGET_MEAN = 0.754  # the official code centres LaMem scores on this before scaling by 2
ATTENTION_TARGET = 0.2
GAMMA = 1e-5


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
            # As the official code: one dropout mask on h feeds both the regressor and the
            # next step's attention; the LSTM's own (h, c) state goes on undropped.
            h = self.drop50(out[:, 0])
            outs.append(self.regnet4(self.drop50(self.relu(self.regnet1(h)))))
            alphas.append(alpha)
        self.last_alphas = torch.stack(alphas, 1)
        return torch.cat(outs, 1).mean(1) / 2 + TARGET_MEAN

    def attention_maps(self, x):
        """The soft attention of each LSTM step over the 14x14 grid (membench.contract):
        (B, steps, 14, 14), each step's map a softmax over the 196 locations."""
        with torch.no_grad():
            self(x)
        maps = self.last_alphas.reshape(x.shape[0], STEPS, 14, 14)
        return maps, [f"LSTM step {i + 1}" for i in range(STEPS)]

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
