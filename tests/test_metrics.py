import math

import numpy as np
import pytest
from scipy.stats import spearmanr

from membench.results.metrics import mse, paper_poly_factor, spearman


def test_spearman_matches_scipy_with_ties():
    rng = np.random.default_rng(0)
    a = rng.integers(0, 5, size=200).astype(float)  # many ties
    b = a + rng.normal(0, 2, size=200)
    assert spearman(a, b) == pytest.approx(spearmanr(a, b).statistic, abs=1e-12)


def test_spearman_differs_from_tie_free_formula_when_ties_exist():
    a = np.array([1, 1, 2, 3, 3, 3, 4.0])
    b = np.array([1, 2, 2, 3, 4, 5, 6.0])
    ra, rb = spearmanr(a, b).statistic, spearman(a, b)
    n = len(a)
    d2 = ((np.argsort(np.argsort(a)) - np.argsort(np.argsort(b))) ** 2).sum()
    naive = 1 - 6 * d2 / (n * (n * n - 1))
    assert rb == pytest.approx(ra)
    assert rb != pytest.approx(naive)


def test_spearman_constant_is_nan_and_shapes_checked():
    assert math.isnan(spearman([0.5, 0.5, 0.5], [0.1, 0.2, 0.3]))
    with pytest.raises(ValueError):
        spearman([1, 2], [1, 2, 3])


def test_mse():
    assert mse([0.5, 0.7], [0.4, 0.9]) == pytest.approx((0.01 + 0.04) / 2)


def test_paper_lr_schedule_is_eq1_not_polynomiallr():
    import torch

    total, lr0 = 10, 5e-5
    ours = [paper_poly_factor(e, total) * lr0 for e in range(total)]
    assert ours[0] == lr0
    assert ours[5] == pytest.approx((1 - 0.5 ** 0.9) * lr0)
    opt = torch.optim.Adam([torch.nn.Parameter(torch.zeros(1))], lr=lr0)
    poly = torch.optim.lr_scheduler.PolynomialLR(opt, total_iters=total, power=0.9)
    theirs = []
    for _ in range(total):
        theirs.append(opt.param_groups[0]["lr"])
        opt.step()
        poly.step()
    assert theirs[5] != pytest.approx(ours[5], rel=1e-3)
