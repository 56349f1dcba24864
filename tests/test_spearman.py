"""Spearman as membench reports it (scipy, average ranks) and the paper's Eq. 2."""

from __future__ import annotations

import numpy as np
import pytest
from scipy.stats import spearmanr

from membench.results.metrics import spearman, spearman_eq2


def test_eq2_equals_scipy_without_ties():
    rng = np.random.default_rng(0)
    truth = rng.random(300)
    pred = truth + rng.normal(0, 0.2, 300)
    assert spearman_eq2(pred, truth) == pytest.approx(spearmanr(pred, truth)[0], abs=1e-12)


def test_eq2_differs_with_ties_by_hand():
    """truth ranks 1.5 1.5 3 4.5 4.5 (average ranks), pred ranks 1 2 3 4 5:
    d = -0.5 0.5 0 -0.5 0.5, sum d^2 = 1, Eq. 2 = 1 - 6 / (5 * 24) = 0.95; the Pearson
    correlation of the ranks (scipy): 9 / sqrt(9 * 10) = 0.9487."""
    truth = [0.1, 0.1, 0.5, 0.9, 0.9]
    pred = [0.1, 0.2, 0.5, 0.8, 0.9]
    assert spearman_eq2(pred, truth) == pytest.approx(0.95, abs=1e-12)
    assert spearman(pred, truth) == pytest.approx(spearmanr(pred, truth)[0], abs=1e-12)
    assert spearman(pred, truth) == pytest.approx(9 / 90 ** 0.5, abs=1e-12)


def test_eq2_checks_its_input():
    with pytest.raises(ValueError, match="equal length"):
        spearman_eq2([1, 2], [1, 2, 3])
