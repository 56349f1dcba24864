"""Spearman's rho (average ranks for ties, exactly scipy's definition) and MSE."""

from __future__ import annotations

import math


def spearman(pred, truth) -> float:
    """Rank correlation; NaN when either side is constant (undefined, never guessed)."""
    import numpy as np
    from scipy.stats import spearmanr

    pred, truth = np.asarray(pred, dtype=np.float64), np.asarray(truth, dtype=np.float64)
    if pred.shape != truth.shape or pred.ndim != 1:
        raise ValueError(f"spearman needs two 1-D arrays of equal length, got {pred.shape} and {truth.shape}")
    if len(pred) < 2 or np.ptp(pred) == 0 or np.ptp(truth) == 0:
        return math.nan
    return float(spearmanr(pred, truth).statistic)


def undefined_reason(pred, truth) -> str | None:
    """Why Spearman's rho of (pred, truth) is undefined ("constant predictions", ...), or
    None when it is defined. The row records it in its notes as `rho_note` writes it."""
    import numpy as np

    pred, truth = np.asarray(pred, dtype=np.float64), np.asarray(truth, dtype=np.float64)
    if len(pred) < 2:
        return "fewer than 2 images"
    if np.ptp(pred) == 0:
        return "constant predictions"
    if np.ptp(truth) == 0:
        return "constant scores"
    return None


def rho_note(pred, truth) -> str:
    """What a row's notes say when its rho is undefined ("" when it is defined)."""
    reason = undefined_reason(pred, truth)
    return f"rho undefined ({reason})" if reason else ""


def spearman_eq2(pred, truth) -> float:
    """The paper's Eq. 2, 1 - 6 sum d^2 / (N (N^2 - 1)), d the difference of the average
    ranks. It equals `spearman` when neither side has ties and differs when they do (Eq. 2
    assumes distinct ranks); membench reports `spearman` and uses this only to measure the
    difference (scripts/reference_measurements.py, docs/models.md)."""
    import numpy as np
    from scipy.stats import rankdata

    pred, truth = np.asarray(pred, dtype=np.float64), np.asarray(truth, dtype=np.float64)
    if pred.shape != truth.shape or pred.ndim != 1:
        raise ValueError(f"spearman_eq2 needs two 1-D arrays of equal length, got {pred.shape} and {truth.shape}")
    n = len(pred)
    if n < 2:
        return math.nan
    d = rankdata(pred) - rankdata(truth)
    return float(1.0 - 6.0 * (d ** 2).sum() / (n * (n * n - 1.0)))


def mse(pred, truth) -> float:
    import numpy as np

    pred, truth = np.asarray(pred, dtype=np.float64), np.asarray(truth, dtype=np.float64)
    if pred.shape != truth.shape:
        raise ValueError(f"mse needs arrays of equal shape, got {pred.shape} and {truth.shape}")
    return float(np.mean((pred - truth) ** 2))


def paper_poly_factor(epoch: int, total_epochs: int, power: float = 0.9) -> float:
    """Eq. 1 of the paper: LR(epoch) = (1 - (epoch / total) ** 0.9) * LR0, epoch 0-based.
    (torch's PolynomialLR computes (1 - epoch / total) ** power: a different curve.)"""
    return 1.0 - (epoch / total_epochs) ** power
