"""Bootstrap over test images, from stored per-image predictions only (never re-runs a model).

Definition used everywhere in membench (tables and `membench compare`):
  - the unit resampled is a test image, identified by its name: LaMem's five test sets
    overlap (about 1,700 shared images per pair), so each replicate draws, with
    replacement, as many images as the union of all the splits' test images holds, from
    that union, once, and every split uses that one draw: a split's resample is its own
    test images, each taken as many times as it was drawn (so its size varies around n);
  - a replicate's statistic is the mean over splits of the per-split statistic, mirroring
    how the paper averages rho over the five LaMem splits. With several seeds (runs of one
    configuration) the seeds are resampled too (with replacement, once per replicate) and
    the statistic is the mean over the drawn seeds of their means over splits;
  - the 95% interval is the 2.5th and 97.5th percentile of the replicates (percentile
    bootstrap). For a comparison the statistic is the difference A - B on the same
    resampled images (paired bootstrap).
Resampling splits independently (membench before issue 12) treats the overlapping test
sets as independent samples and gives too narrow an interval for the mean over splits.
Spearman uses average ranks for ties, as scipy does; ties appear in every resample, so
this matters. A resample is held as the number of times each image was drawn (counts),
and the ranks of the resampled multiset are computed from the counts without sorting.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from membench.errors import MembenchError
from membench.results import leaderboard

CHUNK = 256  # replicates per block: bounds memory at CHUNK x n floats


def read_predictions(path: Path, row: dict | None = None) -> tuple[list[str], np.ndarray, np.ndarray]:
    """Read predictions/<run_id>/split<k>.csv: image names, true scores, predictions;
    checked line by line and, given its results.csv row, against the row's n_test and the
    sha256 recorded when it was written (membench.results.leaderboard.read_predictions)."""
    return leaderboard.read_predictions(path, row)


def union_index(names_by_part) -> tuple[list[str], list[np.ndarray]]:
    """The sorted union of the image names of every part (a split of one run), and for
    each part the positions of its images in that union."""
    union = sorted({n for names in names_by_part for n in names})
    where = {n: i for i, n in enumerate(union)}
    return union, [np.fromiter((where[n] for n in names), dtype=np.intp, count=len(names))
                   for names in names_by_part]


def draws(n_images: int, n_seeds: int, n_boot: int, seed: int):
    """Yield blocks (image_counts (b, n_images), seed_counts (b, n_seeds)): row r is
    replicate r's draw of n_images images from the union and of n_seeds seeds, both with
    replacement (seed_counts is all ones when there is one seed). One generator, seeded
    by `seed`, so every model and every split sees the same draws."""
    rng = np.random.default_rng([seed, n_images])
    block = max(1, min(CHUNK, 4_000_000 // max(n_images, 1)))  # bounds memory at ~32 MB
    done = 0
    while done < n_boot:
        b = min(block, n_boot - done)
        idx = rng.integers(0, n_images, size=(b, n_images))
        flat = (idx + n_images * np.arange(b)[:, None]).ravel()
        images = np.bincount(flat, minlength=b * n_images).reshape(b, n_images)
        if n_seeds > 1:
            s_idx = rng.integers(0, n_seeds, size=(b, n_seeds))
            seeds = np.stack([np.bincount(row, minlength=n_seeds) for row in s_idx])
        else:
            seeds = np.ones((b, 1), dtype=np.int64)
        yield images, seeds
        done += b


def weighted_ranks(values: np.ndarray, counts: np.ndarray) -> np.ndarray:
    """Average ranks (1-based) that each value takes in the multiset where value i
    appears counts[r, i] times, for every row r; equal values share one rank."""
    order = np.argsort(values, kind="stable")
    sorted_values = values[order]
    is_start = np.ones(len(values), dtype=bool)
    is_start[1:] = sorted_values[1:] != sorted_values[:-1]
    starts = np.flatnonzero(is_start)
    group = np.empty(len(values), dtype=np.intp)
    group[order] = np.cumsum(is_start) - 1
    per_group = np.add.reduceat(counts[:, order], starts, axis=1).astype(float)
    below = np.cumsum(per_group, axis=1) - per_group
    return (below + (per_group + 1.0) / 2.0)[:, group]


def spearman_counts(x: np.ndarray, y: np.ndarray, counts: np.ndarray) -> np.ndarray:
    """Spearman's rho of each resample (row of counts); NaN where a side is constant."""
    w = counts.astype(float)
    total = w.sum(axis=1, keepdims=True)
    rx, ry = weighted_ranks(x, counts), weighted_ranks(y, counts)
    dx = rx - (w * rx).sum(axis=1, keepdims=True) / total
    dy = ry - (w * ry).sum(axis=1, keepdims=True) / total
    cov = (w * dx * dy).sum(axis=1)
    var = (w * dx * dx).sum(axis=1) * (w * dy * dy).sum(axis=1)
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(var > 0, cov / np.sqrt(var), np.nan)


def mse_counts(truth: np.ndarray, pred: np.ndarray, counts: np.ndarray) -> np.ndarray:
    return counts @ ((pred - truth) ** 2) / counts.sum(axis=1)


def joint_replicates(runs: list[dict[int, tuple]], n_boot: int, seed: int) -> dict[str, np.ndarray]:
    """Bootstrap replicates of the mean over splits (and over seeds) of rho and MSE.

    `runs`: one dict per seed, split -> (names, truth, preds) where preds is one prediction
    vector or a list of them (models compared on the same images: paired). Returns
    {"rho": (n_models, n_boot), "mse": (n_models, n_boot)}; a replicate in which some
    split's statistic is undefined (e.g. fewer than two distinct images drawn) is NaN."""
    parts = [(s, k, part[0], part[1], part[2] if isinstance(part[2], (list, tuple)) else [part[2]])
             for s, run in enumerate(runs) for k, part in sorted(run.items())]
    if not parts:
        raise ValueError("no predictions to resample")
    n_models = len(parts[0][4])
    union, positions = union_index([names for _, _, names, _, _ in parts])
    out = {"rho": [], "mse": []}
    for images, seeds in draws(len(union), len(runs), n_boot, seed):
        b = len(images)
        sums = {key: np.zeros((len(runs), n_models, b)) for key in out}
        n_splits = np.zeros(len(runs))
        for (s, _k, _names, truth, preds), pos in zip(parts, positions):
            counts = images[:, pos]
            n_splits[s] += 1
            for m, pred in enumerate(preds):
                sums["rho"][s, m] += spearman_counts(truth, pred, counts)
                with np.errstate(invalid="ignore", divide="ignore"):
                    sums["mse"][s, m] += mse_counts(truth, pred, counts)
        weights = seeds.T[:, None, :] / seeds.sum(axis=1)  # (seeds, 1, b): each drawn seed's share
        for key in out:
            per_seed = sums[key] / n_splits[:, None, None]  # mean over that seed's splits
            # a seed drawn 0 times must not bring its NaN in: 0 * NaN is NaN
            out[key].append(np.where(weights > 0, per_seed * weights, 0.0).sum(axis=0))
    return {key: np.concatenate(v, axis=1) for key, v in out.items()}


def interval(replicates: np.ndarray) -> tuple[float, float] | None:
    """Percentile 95% interval; None when no replicate is defined."""
    finite = replicates[np.isfinite(replicates)]
    if finite.size == 0:
        return None
    low, high = np.percentile(finite, [2.5, 97.5])
    return float(low), float(high)


def rho_interval(runs, n_boot: int = 2000, seed: int = 0) -> tuple[float, float] | None:
    """95% bootstrap interval of the mean-over-splits rho (see the module docstring).
    `runs`: split -> (names, truth, pred) for one run, or a list of those (one per seed)."""
    runs = [runs] if isinstance(runs, dict) else list(runs)
    if not runs or not any(runs) or n_boot <= 0:
        return None
    return interval(joint_replicates(runs, n_boot, seed)["rho"][0])


@dataclass
class Comparison:
    """Paired bootstrap of model a minus model b over the matched test images."""

    a: str
    b: str
    dataset: str
    splits: list[int]
    n_images: dict[int, int]
    n_boot: int
    seed: int
    rho_a: float
    rho_b: float
    mse_a: float
    mse_b: float
    d_rho_ci: tuple[float, float] | None
    d_mse_ci: tuple[float, float] | None
    undefined: list[str] = field(default_factory=list)  # "A on split 1, 2 (constant predictions)": rho not compared

    @property
    def d_rho(self) -> float:
        return self.rho_a - self.rho_b

    @property
    def d_mse(self) -> float:
        return self.mse_a - self.mse_b

    def rho_verdict(self) -> str:
        if self.undefined:
            return (f"rho not compared: Spearman's rho is undefined for {', '.join(self.undefined)} (choose other "
                    "splits with --splits)")
        rho_says = _direction(self.d_rho_ci, f"{self.a} better than {self.b}",
                              f"{self.b} better than {self.a}", "no significant difference in rho")
        r = _digits(self.d_rho, self.d_rho_ci, 3)
        return f"{rho_says}: Δrho = {self.d_rho:+.{r}f} {_ci(self.d_rho_ci, r)}"

    def verdict(self) -> str:
        """One line: significant when the 95% interval of the difference excludes 0."""
        mse_says = _direction(self.d_mse_ci, f"{self.b} lower MSE", f"{self.a} lower MSE",
                              "no significant difference in MSE")
        m = _digits(self.d_mse, self.d_mse_ci, 5)
        return f"{self.rho_verdict()}; {mse_says}: ΔMSE = {self.d_mse:+.{m}f} {_ci(self.d_mse_ci, m)}"

    def render(self) -> str:
        r, m = _digits(self.d_rho, self.d_rho_ci, 3), _digits(self.d_mse, self.d_mse_ci, 5)
        sizes = sorted(set(self.n_images.values()))
        size_text = str(sizes[0]) if len(sizes) == 1 else f"{min(sizes)}-{max(sizes)}"
        rho_line = (f"  rho  {self.a} {_rho(self.rho_a)}  {self.b} {_rho(self.rho_b)}  not compared (undefined)"
                    if self.undefined else
                    f"  rho  {self.a} {self.rho_a:.3f}  {self.b} {self.rho_b:.3f}  "
                    f"Δ(a-b) {self.d_rho:+.{r}f}  95% CI {_ci(self.d_rho_ci, r)}")
        return "\n".join([
            f"{self.a} vs {self.b} on {self.dataset}: splits {','.join(map(str, self.splits))}, "
            f"{size_text} matched test images per split",
            rho_line,
            f"  MSE  {self.a} {self.mse_a:.5f}  {self.b} {self.mse_b:.5f}  "
            f"Δ(a-b) {self.d_mse:+.{m}f}  95% CI {_ci(self.d_mse_ci, m)}",
            f"  paired bootstrap over test images: {self.n_boot} resamples of the union of the splits' "
            f"test images (one draw for every split), seed {self.seed}, per-split statistics averaged over splits",
            f"verdict: {self.verdict()}",
        ])


def _rho(value: float) -> str:
    return "undefined" if np.isnan(value) else f"{value:.3f}"


def _direction(ci, above: str, below: str, neither: str) -> str:
    if ci is None:
        return neither
    if ci[0] > 0:
        return above
    if ci[1] < 0:
        return below
    return neither


def _digits(value: float, ci, base: int) -> int:
    """Decimals that show a difference and its interval with two significant digits: `base`,
    or more (up to base + 4) when all are smaller than the base precision shows, so that a
    tiny but significant difference never prints as "+0.000 [+0.000, +0.000]"."""
    import math

    largest = max(abs(x) for x in (value, *(ci or ())))
    if largest == 0 or largest >= 10 ** -(base - 1) or not math.isfinite(largest):
        return base
    return min(base + 4, 1 - math.floor(math.log10(largest)))


def _ci(ci, digits: int) -> str:
    if ci is None:
        return "[—]"
    return f"[{ci[0]:+.{digits}f}, {ci[1]:+.{digits}f}]"


def parse_side(text: str) -> tuple[str, str | None]:
    """"model" or "model[CONFIGURATION]" (a configuration's label as the tables print it,
    e.g. "ours [captioner=random]", its id, or "protocol") -> (model, configuration or None)."""
    model, bracket, rest = text.strip().partition("[")
    model = model.strip()
    if not bracket:
        return model, None
    if not model or not rest.endswith("]") or not rest[:-1].strip():
        raise MembenchError(f"expected MODEL or MODEL[CONFIGURATION] (a label or id from the report), not {text!r}")
    return model, rest[:-1].strip()


def _matches(group, wanted: str) -> bool:
    def norm(label: str) -> str:
        return "; ".join(part.strip() for part in label.split(";"))

    return (wanted == group.config_id or (group.configuration and norm(wanted) == norm(group.configuration))
            or (wanted == "protocol" and group.is_protocol))


def _listing(groups) -> str:
    return ", ".join(f"{g.label} (configuration {g.config_id}, {g.dataset}/{g.preset})"
                     for g in sorted(groups, key=lambda g: (g.dataset, g.preset, g.configuration)))


def pick_runs(runs, a: str, b: str, dataset: str | None = None, preset: str | None = None, specs=None):
    """The run of a and of b to compare, per (model, dataset, configuration) as the report
    groups them: `a`/`b` are "model" or "model[CONFIGURATION]" (label or id). Both sides
    must share one (dataset, preset) (else choose with dataset/preset); within it, a model
    with several configurations uses the one named, else its protocol configuration, else
    it is an error listing them. Never the latest run of another configuration. Returns
    (group_a, group_b): RunGroup with the latest run of each seed."""
    from membench.results.grouping import group_runs

    groups = list(group_runs(runs, specs).values())
    sides = {}
    for text in (a, b):
        model, wanted = parse_side(text)
        mine = [g for g in groups if g.model == model]
        if not mine:
            raise MembenchError(f"no run of model {model!r} in results.csv")
        if wanted is not None:
            named = [g for g in mine if _matches(g, wanted)]
            if not named:
                raise MembenchError(f"no configuration {wanted!r} of {model} in results.csv "
                                    f"(its configurations: {_listing(mine)})")
            mine = named
        sides[text] = (model, wanted, mine)
    have = {t: {(g.dataset, g.preset) for g in side[2]} for t, side in sides.items()}
    common = sorted(pair for pair in have[a] & have[b]
                    if (dataset is None or pair[0] == dataset) and (preset is None or pair[1] == preset))
    if not common:
        def listing(t):
            return ", ".join(f"{d}/{p}" for d, p in sorted(have[t]))
        wanted = "/".join(x for x in (dataset, preset) if x)
        raise MembenchError(f"{a} and {b} have no runs on the same dataset and preset"
                            + (f" matching {wanted}" if wanted else "")
                            + f" ({a}: {listing(a)}; {b}: {listing(b)})")
    if len({d for d, _ in common}) > 1:
        raise MembenchError(f"both models have runs on {', '.join(sorted({d for d, _ in common}))}; "
                            "choose one with --dataset")
    if len(common) > 1:
        raise MembenchError(f"both models have runs with presets {', '.join(p for _, p in common)}; "
                            "choose one with --preset")
    picked = []
    for text in (a, b):
        model, wanted, mine = sides[text]
        there = [g for g in mine if (g.dataset, g.preset) == common[0]]
        if len(there) > 1:
            protocol = [g for g in there if g.is_protocol]
            if wanted is not None or not protocol:
                raise MembenchError(f"{model} has {len(there)} configurations on {common[0][0]}: "
                                    f"{_listing(there)}; name one as {model}[LABEL or ID]")
            there = protocol
        picked.append(there[0])
    return picked[0], picked[1]


def latest_of(group):
    """The newest run of a configuration (of its seeds, the one recorded last)."""
    return max(group.runs, key=lambda r: (r.timestamp, r.run_id))


def match_split(path_a: Path, path_b: Path, split: int,
                rows: tuple[dict | None, dict | None] = (None, None)) -> tuple[list[str], np.ndarray, np.ndarray,
                                                                             np.ndarray]:
    """Names, truth, a's and b's predictions on the images both files hold, matched by name;
    `rows`: the files' results.csv rows, which they are checked against."""
    names_a, truth_a, pred_a = read_predictions(path_a, rows[0])
    names_b, truth_b, pred_b = read_predictions(path_b, rows[1])
    index_b = {n: i for i, n in enumerate(names_b)}
    ia = [i for i, n in enumerate(names_a) if n in index_b]
    ib = [index_b[names_a[i]] for i in ia]
    if not ia:
        raise MembenchError(f"split {split}: the two runs share no test image", path_a)
    truth = truth_a[ia]
    differs = np.flatnonzero(np.abs(truth - truth_b[ib]) > 1e-9)
    if differs.size:
        name = names_a[ia[differs[0]]]
        raise MembenchError(f"split {split}: image {name} has score {truth_a[ia[differs[0]]]} here and "
                            f"{truth_b[ib[differs[0]]]} in {path_b}: the runs used different data", path_a)
    return [names_a[i] for i in ia], truth, pred_a[ia], pred_b[ib]


def compare_predictions(a: str, b: str, dataset: str, files: dict[int, tuple[Path, Path]], n_boot: int = 2000,
                        seed: int = 0, rows: dict[int, tuple[dict, dict]] | None = None) -> Comparison:
    """Paired bootstrap of a - b; `files` maps split -> (a's, b's predictions file), `rows`
    split -> (a's, b's results.csv row), which the files are checked against. Where rho is
    undefined for a side on a split (constant predictions) rho is not compared; MSE is."""
    from membench.results.metrics import undefined_reason

    if not files:
        raise MembenchError(f"{a} and {b} have no split in common on {dataset}")
    if n_boot < 1:
        raise MembenchError("--n-boot must be at least 1")
    stats = {key: [] for key in ("rho_a", "rho_b", "mse_a", "mse_b")}
    n_images, matched, undefined = {}, {}, {a: [], b: []}
    for k, (path_a, path_b) in sorted(files.items()):
        names, truth, pa, pb = match_split(path_a, path_b, k, (rows or {}).get(k, (None, None)))
        n_images[k] = len(truth)
        matched[k] = (names, truth, [pa, pb])
        for side, pred in ((a, pa), (b, pb)):
            why = undefined_reason(pred, truth)
            if why:
                undefined[side].append((k, why))
        ones = np.ones((1, len(truth)), dtype=np.int64)
        stats["rho_a"].append(spearman_counts(truth, pa, ones)[0])
        stats["rho_b"].append(spearman_counts(truth, pb, ones)[0])
        stats["mse_a"].append(float(np.mean((pa - truth) ** 2)))
        stats["mse_b"].append(float(np.mean((pb - truth) ** 2)))
    reps = joint_replicates([matched], n_boot, seed)
    return Comparison(
        a=a, b=b, dataset=dataset, splits=sorted(files), n_images=n_images, n_boot=n_boot, seed=seed,
        rho_a=float(np.mean(stats["rho_a"])), rho_b=float(np.mean(stats["rho_b"])),
        mse_a=float(np.mean(stats["mse_a"])), mse_b=float(np.mean(stats["mse_b"])),
        d_rho_ci=interval(reps["rho"][0] - reps["rho"][1]),
        d_mse_ci=interval(reps["mse"][0] - reps["mse"][1]),
        undefined=[f"{side} on split {', '.join(str(k) for k, _ in found)} ({', '.join(sorted({w for _, w in found}))})"
                   for side, found in undefined.items() if found],
    )


def runs_rho_interval(group, n_boot: int, seed: int) -> tuple[float, float] | None:
    """None when any split's predictions are missing: an interval over fewer splits than
    the mean it accompanies would be misleading. The bootstrap of membench.report.compare: the
    union of the test images drawn once per replicate for every split, and several seeds
    resampled too. Splits whose rho is undefined (constant predictions) are left out, as
    from the mean; every file read is checked against its row (a damaged one is an error)."""
    runs = getattr(group, "runs", [group])
    defined = {run.run_id: [k for k in run.splits if k not in run.undefined("rho")] for run in runs}
    pairs = [(run, k) for run in runs for k in defined[run.run_id]]
    if n_boot <= 0 or not pairs or not all(run.predictions(k).is_file() for run, k in pairs):
        return None
    data = [{k: run.read_predictions(k) for k in defined[run.run_id]} for run in runs]  # checked every time
    # `membench report` asks for the same row's interval in its tables, the every-run tables and
    # the HTML site: the bootstrap is remembered per (files as they are on disk, n_boot, seed)
    key = (tuple((run.run_id, k, _stamp(run.predictions(k))) for run, k in pairs), n_boot, seed)
    if key not in _INTERVALS:
        if len(_INTERVALS) >= 256:
            _INTERVALS.clear()
        _INTERVALS[key] = rho_interval([d for d in data if d], n_boot=n_boot, seed=seed)
    return _INTERVALS[key]


_INTERVALS: dict[tuple, tuple[float, float] | None] = {}


def _stamp(path: Path) -> tuple[int, int]:
    stat = path.stat()
    return stat.st_mtime_ns, stat.st_size
