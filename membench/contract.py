"""The model contract: what membench calls on the torch module a builder returns.

Required: a `torch.nn.Module` whose `forward(x)` maps a normalised (B, 3, H, W) batch to
(B,) (or (B, 1)) memorability scores. Everything else is optional and found here, in one
place, instead of with `hasattr` across the engine:

- `loss(pred, target) -> scalar tensor` replaces the default MSE (AMNet adds its attention
  penalty). `pred` and `target` are float32 (B,) tensors.
- The frozen-output protocol, for models whose stages freeze large parts (the proposed
  model's stage 2): `frozen_outputs(x) -> tuple of tensors` (each with the batch as first
  dimension) runs everything the stage freezes, `from_frozen(outputs) -> (B,) scores` runs
  the rest, and `forward(x) == from_frozen(frozen_outputs(x))` must hold. membench then
  computes the frozen outputs of validation images once per stage (exact) and, with
  `--frozen-train-cache K`, of K augmented views of every training image (approximation).
- `fit_frozen(train, train_scores, val, val_scores) -> dict`, for a stage declared
  `Stage(fit="frozen-outputs")` (a head fitted on a frozen backbone, e.g. a closed-form
  ridge regression): the model sets its trainable part from the frozen outputs of every
  training and validation image (tuples of (N, ...) CPU tensors, evaluation transform)
  and their float64 (N,) scores, and returns a JSON-able record of what it chose (the
  stage's history). Called once, after torch.manual_seed of the stage (seeded by run
  seed, split and stage), under no autocast; the model must also implement FrozenOutputs.

- `attention_maps(x) -> (maps, names) or None`: the model's own soft attention, a (B, K, h, w)
  tensor of K maps per image, each summing to 1 over its h x w locations, and the K names
  ("averaged over the caption's words", "LSTM step 1", ...); None when this configuration
  has no attention. `membench explain` overlays them; a model without them gets Grad-CAM.

Options a model accepts (`--model-option key=value`) reach its builder in
`BuildContext.options`; the builder rejects unknown ones with a MembenchError.
"""

from __future__ import annotations

from typing import Any, Protocol, runtime_checkable

from membench.engine.device import unwrap


@runtime_checkable
class MemorabilityModel(Protocol):
    """Every model: a callable module from a normalised image batch to (B,) scores."""

    def __call__(self, x: Any) -> Any: ...

    def parameters(self, recurse: bool = True) -> Any: ...


@runtime_checkable
class OwnLoss(Protocol):
    """Optional: a model's own training loss instead of MSE."""

    def loss(self, pred: Any, target: Any) -> Any: ...


@runtime_checkable
class FrozenOutputs(Protocol):
    """Optional: the frozen-output protocol, forward(x) == from_frozen(frozen_outputs(x))."""

    def frozen_outputs(self, x: Any) -> tuple: ...

    def from_frozen(self, outputs: tuple) -> Any: ...


@runtime_checkable
class OwnAttention(Protocol):
    """Optional: the model's own soft-attention maps (membench explain)."""

    def attention_maps(self, x: Any) -> Any: ...


def attention_maps(model, x):
    """(maps (B, K, h, w), names) from the model's own attention, or None (no attention)."""
    plain = unwrap(model)
    return plain.attention_maps(x) if isinstance(plain, OwnAttention) else None


class FitsFrozen(Protocol):
    """Optional: fits its trainable part on frozen outputs itself (Stage(fit="frozen-outputs"))."""

    def fit_frozen(self, train: tuple, train_scores: Any, val: tuple, val_scores: Any) -> dict: ...


def fits_frozen(model) -> bool:
    """Whether the (possibly wrapped) model can fit a `fit="frozen-outputs"` stage."""
    plain = unwrap(model)
    return has_frozen_outputs(plain) and callable(getattr(plain, "fit_frozen", None))


def has_frozen_outputs(model) -> bool:
    """Whether the (possibly DDP-wrapped or compiled) model implements FrozenOutputs."""
    plain = unwrap(model)
    return callable(getattr(plain, "frozen_outputs", None)) and callable(getattr(plain, "from_frozen", None))


def training_loss(model, pred, target):
    """The model's own `loss` when it has one, else MSE (both on float32 (B,) tensors)."""
    import torch.nn.functional as F

    plain = unwrap(model)
    if isinstance(plain, OwnLoss):
        return plain.loss(pred, target)
    return F.mse_loss(pred.float(), target.float())
