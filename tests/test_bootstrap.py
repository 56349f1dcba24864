"""The bootstrap of membench.report.compare against a brute-force reference (issue 12).

One replicate draws, with replacement, |U| images from the union U of all splits' test
images and applies that one draw to every split; with several seeds it also draws seeds
with replacement. The brute force below builds each resampled split explicitly (every
image repeated as often as it was drawn), computes scipy's Spearman on it, and averages
over splits and drawn seeds: it must equal `joint_replicates` to float precision.
"""

from __future__ import annotations

import numpy as np
import pytest
from scipy.stats import spearmanr

from membench.report import compare

# 14 images, three splits that overlap (a, b, c are in every split; d..f in two)
SPLITS = {
    1: ["a", "b", "c", "d", "e", "g", "h", "i"],
    2: ["a", "b", "c", "d", "f", "j", "k", "l"],
    3: ["a", "b", "c", "e", "f", "m", "n", "g"],
}


def constructed_runs(n_seeds, seed=0):
    """Per seed: split -> (names, truth, pred), with ties in truth and predictions."""
    rng = np.random.default_rng(seed)
    union = sorted({n for names in SPLITS.values() for n in names})
    truth_of = {n: round(float(rng.random()), 1) for n in union}
    runs = []
    for _ in range(n_seeds):
        pred_of = {n: round(truth_of[n] + float(rng.normal(0, 0.25)), 1) for n in union}
        runs.append({k: (names, np.array([truth_of[n] for n in names]), np.array([pred_of[n] for n in names]))
                     for k, names in SPLITS.items()})
    return runs


def brute_force(runs, n_boot, seed, statistic):
    """Every replicate built explicitly from the same draws."""
    union = sorted({n for run in runs for names, _, _ in run.values() for n in names})
    position = {n: i for i, n in enumerate(union)}
    out = []
    for images, seeds in compare.draws(len(union), len(runs), n_boot, seed):
        for image_counts, seed_counts in zip(images, seeds):
            per_seed = []
            for s, run in enumerate(runs):
                per_split = []
                for names, truth, pred in run.values():
                    reps = [image_counts[position[n]] for n in names]
                    t, p = np.repeat(truth, reps), np.repeat(pred, reps)
                    if statistic == "rho":
                        constant = len(t) < 2 or np.ptp(t) == 0 or np.ptp(p) == 0
                        per_split.append(np.nan if constant else spearmanr(t, p)[0])
                    else:
                        per_split.append(np.mean((p - t) ** 2) if len(t) else np.nan)
                per_seed += [np.mean(per_split)] * int(seed_counts[s])  # a seed drawn twice counts twice
            out.append(np.mean(per_seed))
    return np.array(out)


@pytest.mark.parametrize("n_seeds", [1, 3])
@pytest.mark.parametrize("statistic", ["rho", "mse"])
def test_joint_replicates_equal_the_brute_force(n_seeds, statistic):
    runs = constructed_runs(n_seeds)
    ours = compare.joint_replicates(runs, n_boot=300, seed=4)[statistic][0]
    reference = brute_force(runs, 300, 4, statistic)
    assert ours.shape == (300,)
    np.testing.assert_array_equal(np.isnan(ours), np.isnan(reference))
    np.testing.assert_allclose(ours[~np.isnan(ours)], reference[~np.isnan(reference)], rtol=0, atol=1e-12)


def test_draws_share_an_image_across_splits_and_resample_seeds():
    images, seeds = next(compare.draws(14, 3, 50, seed=1))
    assert images.shape == (50, 14) and (images.sum(axis=1) == 14).all()
    assert seeds.shape == (50, 3) and (seeds.sum(axis=1) == 3).all()
    assert len({tuple(r) for r in seeds}) > 3  # seeds really are redrawn
    single = next(compare.draws(14, 1, 50, seed=1))[1]
    assert (single == 1).all()
    again = next(compare.draws(14, 3, 50, seed=1))
    assert (again[0] == images).all() and (again[1] == seeds).all()


def test_identical_splits_give_the_interval_of_one_split():
    """Five copies of one test set carry the information of one: the interval of their
    mean must be that of a single split (independent resampling would shrink it ~sqrt(5))."""
    rng = np.random.default_rng(0)
    names = [f"im{i:03d}" for i in range(200)]
    truth = rng.random(200)
    pred = truth + rng.normal(0, 0.3, 200)
    one = compare.rho_interval({1: (names, truth, pred)}, n_boot=400, seed=2)
    five = compare.rho_interval({k: (names, truth, pred) for k in range(1, 6)}, n_boot=400, seed=2)
    assert five == pytest.approx(one, abs=1e-12)
    # the old, independent-per-split interval was about sqrt(5) narrower
    independent = np.mean([compare.joint_replicates([{1: ([f"{k}/{n}" for n in names], truth, pred)}],
                                                    400, seed=10 + k)["rho"][0] for k in range(5)], axis=0)
    lo, hi = compare.interval(independent)
    assert (hi - lo) < 0.6 * (one[1] - one[0])


def test_paired_difference_uses_the_same_draw_for_both_models():
    runs = constructed_runs(1)
    paired = [{k: (names, truth, [pred, pred + 0.01]) for k, (names, truth, pred) in runs[0].items()}]
    reps = compare.joint_replicates(paired, n_boot=100, seed=0)
    # a constant shift keeps every rank: the paired rho difference is exactly 0 in every replicate
    finite = np.isfinite(reps["rho"][0])
    assert np.array_equal(reps["rho"][0][finite], reps["rho"][1][finite])


def test_seed_resampling_widens_the_interval_when_seeds_disagree():
    """Three seeds of very different quality: resampling seeds adds their spread to the
    interval; averaging them with fixed weights (no seed resampling) does not."""
    rng = np.random.default_rng(5)
    names = [f"im{i:03d}" for i in range(120)]
    truth = rng.random(120)
    seeds = [{k: (names[k * 20:k * 20 + 80], truth[k * 20:k * 20 + 80], pred[k * 20:k * 20 + 80])
              for k in range(3)}
             for pred in (truth + rng.normal(0, noise, 120) for noise in (0.02, 0.3, 1.0))]
    resampled = compare.joint_replicates(seeds, n_boot=400, seed=1)["rho"][0]
    fixed = np.mean([compare.joint_replicates([run], n_boot=400, seed=1)["rho"][0] for run in seeds], axis=0)
    spread = lambda r: np.percentile(r, 97.5) - np.percentile(r, 2.5)  # noqa: E731
    assert spread(resampled) > 2 * spread(fixed)
