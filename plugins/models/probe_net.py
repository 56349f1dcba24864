"""The probe network and its fits (torch imported at module level: loaded only when a probe
is built); the family, its options and docs are in plugins/models/probe.py.

A probe is a frozen backbone giving one pooled embedding per image and a head on it. The
head is fitted by `fit_frozen` (membench.contract.FitsFrozen) on the embeddings of the
training images, computed once by the harness:

- ridge (default): closed-form ridge regression with an unpenalised intercept, the penalty
  chosen on the validation images by Spearman's rho from a grid relative to the scale of
  the features (`ALPHAS` x the mean eigenvalue of the centred Gram matrix). All penalties
  come from one SVD of the centred training features: w = V diag(s / (s^2 + alpha)) U^T y_c.
- mlp: Linear(D, hidden) -> ReLU -> Linear(hidden, 1) on standardised features, full-batch
  Adam (lr 1e-3, weight decay 1e-4) on MSE for up to `MLP_STEPS` steps, validation rho every
  `MLP_EVERY` steps, the best step kept (stops after `MLP_PATIENCE` checks without a gain).
"""

from __future__ import annotations

import math

import torch
import torch.nn as nn

ALPHAS = tuple(10.0 ** (k / 2) for k in range(-10, 11))  # 1e-5 .. 1e5, half-decades
MLP_STEPS, MLP_EVERY, MLP_PATIENCE, MLP_LR, MLP_WEIGHT_DECAY = 2000, 20, 10, 1e-3, 1e-4


def _rho(pred, truth) -> float:
    from membench.results.metrics import spearman

    value = spearman(pred.detach().double().cpu().numpy(), truth.double().cpu().numpy())
    return value if math.isfinite(value) else -math.inf


def ridge_path(x, y, alphas):
    """(alpha, weights (D,), intercept) for every alpha: ridge regression of y on x (float64)
    with an unpenalised intercept, min |y - x w - b|^2 + alpha |w|^2."""
    mean_x, mean_y = x.mean(0), y.mean()
    xc, yc = x - mean_x, y - mean_y
    u, s, vh = torch.linalg.svd(xc, full_matrices=False)
    uty = u.T @ yc
    for alpha in alphas:
        w = vh.T @ (s / (s * s + alpha) * uty)
        yield alpha, w, mean_y - mean_x @ w


def fit_ridge(head: nn.Linear, train, y, val, y_val) -> dict:
    """Ridge on `train` (N, D) with the penalty that gives the best validation rho (ties: the
    larger penalty); sets `head` and returns the record of the choice."""
    x, xv = train.double(), val.double()
    scale = float(((x - x.mean(0)) ** 2).sum() / x.shape[1]) or 1.0  # mean eigenvalue of the centred Gram
    best, rhos = None, []
    for alpha, w, b in ridge_path(x, y.double(), [a * scale for a in ALPHAS]):
        rho = _rho(xv @ w + b, y_val)
        rhos.append(rho)
        if best is None or rho >= best[0]:
            best = (rho, alpha, w, b)
    _, alpha, w, b = best
    with torch.no_grad():
        head.weight.copy_(w.to(head.weight.dtype).reshape(1, -1))
        head.bias.copy_(b.to(head.bias.dtype).reshape(1))
    return {"head": "ridge", "alpha": alpha, "alpha_relative": alpha / scale, "feature_scale": scale,
            "alphas_relative": list(ALPHAS), "val_rho_by_alpha": [r if math.isfinite(r) else None for r in rhos],
            "n_train": int(x.shape[0]), "dim": int(x.shape[1])}


def fit_mlp(probe: "Probe", train, y, val, y_val) -> dict:
    """The MLP head on standardised features (the global RNG, seeded by the harness, draws
    its initialisation); keeps the step with the best validation rho."""
    x, xv = train.float().clone(), val.float().clone()
    mean, std = x.mean(0), x.std(0).clamp_min(1e-6)
    probe.feature_mean.copy_(mean)
    probe.feature_scale.copy_(std)
    for layer in probe.head:
        if isinstance(layer, nn.Linear):
            layer.reset_parameters()
    z, zv, target = (x - mean) / std, (xv - mean) / std, y.float()
    opt = torch.optim.Adam(probe.head.parameters(), lr=MLP_LR, weight_decay=MLP_WEIGHT_DECAY)
    best, stale = (-math.inf, 0, None), 0
    with torch.enable_grad():
        for step in range(1, MLP_STEPS + 1):
            loss = nn.functional.mse_loss(probe.head(z).squeeze(1), target)
            opt.zero_grad()
            loss.backward()
            opt.step()
            if step % MLP_EVERY:
                continue
            with torch.no_grad():
                rho = _rho(probe.head(zv).squeeze(1), y_val)
            if rho > best[0]:
                best, stale = (rho, step, {k: v.clone() for k, v in probe.head.state_dict().items()}), 0
            elif (stale := stale + 1) >= MLP_PATIENCE:
                break
    if best[2] is not None:
        probe.head.load_state_dict(best[2])
    return {"head": "mlp", "hidden": probe.hidden, "steps": best[1], "lr": MLP_LR, "weight_decay": MLP_WEIGHT_DECAY,
            "n_train": int(x.shape[0]), "dim": int(x.shape[1])}


class Probe(nn.Module):
    """A frozen `backbone` ((B,3,H,W) -> (B, dim) embedding) and a head fitted on it."""

    frozen_output_modules = ("backbone",)  # what frozen_outputs depends on (feature store key)

    def __init__(self, backbone: nn.Module, dim: int, head: str = "ridge", hidden: int = 256):
        super().__init__()
        self.backbone, self.kind, self.hidden = backbone, head, hidden
        if head == "ridge":
            self.head = nn.Linear(dim, 1)
        else:
            self.head = nn.Sequential(nn.Linear(dim, hidden), nn.ReLU(), nn.Linear(hidden, 1))
            self.register_buffer("feature_mean", torch.zeros(dim))
            self.register_buffer("feature_scale", torch.ones(dim))

    def frozen_outputs(self, x):
        return (self.backbone(x).float().flatten(1),)

    def from_frozen(self, outputs):
        (e,) = outputs
        if self.kind != "ridge":
            e = (e - self.feature_mean) / self.feature_scale
        return self.head(e).squeeze(1)

    def forward(self, x):
        return self.from_frozen(self.frozen_outputs(x))

    def fit_frozen(self, train, train_scores, val, val_scores) -> dict:
        (x,), (xv,) = train, val
        if self.kind == "ridge":
            return fit_ridge(self.head, x, train_scores, xv, val_scores)
        return fit_mlp(self, x, train_scores, xv, val_scores)


# ------------------------------------------------------------------------------ backbones

class Normalized(nn.Module):
    """`net` on (x - mean) / std: a normalisation the spec's preprocessing does not apply
    (the ImageNet option of the ResMem trunk); the buffers are part of the backbone's key."""

    def __init__(self, net: nn.Module, mean, std):
        super().__init__()
        self.net = net
        self.register_buffer("mean", torch.tensor(mean).reshape(1, 3, 1, 1))
        self.register_buffer("std", torch.tensor(std).reshape(1, 3, 1, 1))

    def forward(self, x):
        return self.net((x - self.mean) / self.std)


class ResMemPenultimate(nn.Module):
    """ResMem (both branches and its fc stack) up to the 256 features its fc12 reads."""

    def __init__(self, resmem: nn.Module):
        super().__init__()
        del resmem.fc12  # unused: the probe's head replaces it
        self.resmem = resmem

    def forward(self, x):
        return self.resmem.penultimate(self.resmem.frozen_outputs(x))


class OpenClipImage(nn.Module):
    """open_clip's image tower: `encode_image` without normalisation (its pooled, projected
    embedding)."""

    def __init__(self, visual: nn.Module):
        super().__init__()
        self.visual = visual

    def forward(self, x):
        return self.visual(x)


class MemCoach(nn.Module):
    """MemCoach's predictor: SigLIP image features -> fc1 -> ReLU -> fc2, clipped to [0, 1] (its
    `MemBenchMemorabilityPredictor.predict`; the reference skips the clip for a batch of one)."""

    frozen_output_modules = ("backbone",)

    def __init__(self, backbone: nn.Module, head: nn.Module):
        super().__init__()
        self.backbone, self.head = backbone, head

    def frozen_outputs(self, x):
        return (self.backbone(x).float(),)

    def from_frozen(self, outputs):
        (e,) = outputs
        return self.head.fc2(torch.relu(self.head.fc1(e))).squeeze(1).clamp(0.0, 1.0)

    def forward(self, x):
        return self.from_frozen(self.frozen_outputs(x))
