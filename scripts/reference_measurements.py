"""The measurements behind docs/models.md (issue 12), on real and demo data, CPU float32.

With ResMem's released weights (zero-shot, membench's evaluation path = the package's
`transformer`), predictions stored as 6 decimals as the leaderboard stores them:
  1. LNSIM split 1: the effect of the torch resize membench used before issue 12 (max
     |diff| per image, rho of both paths);
  2. Eq. 2 without tie correction (membench.results.metrics.spearman_eq2) minus scipy's Spearman,
     per split of LNSIM and of the demo data;
  3. LNSIM's 5 splits: the bootstrap interval of the mean rho over splits, union-drawn
     (membench) vs each split resampled independently (before issue 12).

    python scripts/reference_measurements.py --lnsim /work/data/lnsim --cache /tmp/refcache
    python scripts/reference_measurements.py --demo

Each result is one JSON line on stdout. LNSIM predictions (~1,760 images) take a while on
a CPU; --cache keeps them between runs.
"""

from __future__ import annotations

import argparse
import json
import os
import tempfile
from pathlib import Path

import numpy as np


def emit(**fields):
    print(json.dumps(fields), flush=True)


def resmem():
    from membench import registry
    from membench.spec import BuildContext

    spec = registry.get_model("resmem")
    return spec, spec.builder()(BuildContext()).eval()


def scores(model, spec, samples, cache: Path | None, name: str, transform=None) -> dict[str, float]:
    """name -> prediction (6 decimals), through membench's evaluation path or `transform`."""
    from membench.engine.device import resolve_device
    from membench.engine.inference import infer

    path = cache / f"{name}.json" if cache else None
    if path and path.is_file():
        return json.loads(path.read_text())
    from membench.data.transforms import eval_transform

    out: dict[str, float] = {}

    def keep(_epoch, idx, pred):
        for i, v in zip(idx.tolist(), pred.float().reshape(-1).tolist()):
            out[samples[i].name] = round(v, 6)

    infer(model, tuple(samples), transform or eval_transform(spec.preprocess), spec.preprocess,
          resolve_device("cpu"), batch_size=16, on_batch=keep, module=model)
    if path:
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(out))
    return out


class TorchResize:
    """membench's evaluation before issue 12: torch's antialiased uint8 resize, centre crop."""

    def __init__(self, size, crop):
        self.size, self.crop = size, crop

    def __call__(self, img, generator=None):
        from membench.data.transforms import chw, resize, to_hwc

        x = resize(to_hwc(img), self.size)
        top, left = int(round((self.size[0] - self.crop) / 2)), int(round((self.size[1] - self.crop) / 2))
        return chw(x[top:top + self.crop, left:left + self.crop].contiguous())


def eq2_rows(label, splits, pred):
    from membench.results.metrics import spearman, spearman_eq2

    for k, sp in splits.items():
        t = np.array([s.score for s in sp.test])
        p = np.array([pred[s.name] for s in sp.test])
        rho = spearman(p, t)
        emit(measure="eq2_minus_scipy", data=label, split=k, n=len(t), distinct_truth=int(len(np.unique(t))),
             distinct_pred=int(len(np.unique(p))), scipy=rho, eq2_minus_scipy=spearman_eq2(p, t) - rho)


def lnsim(root: Path, cache: Path | None, n_boot: int, run_predictions: Path | None):
    from scipy.stats import spearmanr

    from membench import registry
    from membench.report import compare

    layout = registry.get_dataset("lnsim").opener()(root, {})
    splits = {k: layout.load_split(k) for k in layout.splits}
    spec, model = resmem()
    if run_predictions:  # a `membench run --model resmem --train none` on LNSIM: its split<k>.csv
        pred = {}
        splits = {k: sp for k, sp in splits.items() if (run_predictions / f"split{k}.csv").is_file()}
        for k in splits:
            names, _, values = compare.read_predictions(run_predictions / f"split{k}.csv")
            pred.update({n: round(float(v), 6) for n, v in zip(names, values)})
    else:
        union = {}
        for sp in splits.values():
            for s in sp.test:
                union.setdefault(s.name, s)
        pred = scores(model, spec, [union[n] for n in sorted(union)], cache, "lnsim_resmem")
    test1 = splits[1].test
    old = scores(model, spec, test1, cache, "lnsim_split1_resmem_torch_resize",
                 TorchResize(spec.preprocess.size, spec.preprocess.crop))
    t1 = np.array([s.score for s in test1])
    new1, old1 = np.array([pred[s.name] for s in test1]), np.array([old[s.name] for s in test1])
    emit(measure="resmem_torch_resize_vs_reference", data="lnsim split 1", n=len(test1),
         max_abs_diff=float(np.abs(new1 - old1).max()), rho_reference=spearmanr(t1, new1)[0],
         rho_torch_resize=spearmanr(t1, old1)[0])
    eq2_rows("lnsim", splits, pred)
    data = {k: ([s.name for s in sp.test], np.array([s.score for s in sp.test]),
                np.array([pred[s.name] for s in sp.test])) for k, sp in splits.items()}
    union_ci = compare.rho_interval(data, n_boot=n_boot, seed=0)
    # before issue 12: every split resampled on its own (distinct names make the union disjoint)
    independent = compare.joint_replicates([{k: ([f"{k}/{n}" for n in v[0]], v[1], v[2]) for k, v in data.items()}],
                                           n_boot, seed=0)["rho"][0]
    old_ci = compare.interval(independent)
    shared = [len(set(data[a][0]) & set(data[b][0])) for a in data for b in data if a < b] or [0]
    emit(measure="bootstrap_mean_rho_over_splits", data="lnsim", n_boot=n_boot,
         mean_rho=float(np.mean([spearmanr(v[1], v[2])[0] for v in data.values()])),
         union_ci=union_ci, independent_ci=old_ci, union_width=union_ci[1] - union_ci[0],
         independent_width=old_ci[1] - old_ci[0], shared_images_per_pair=[min(shared), max(shared)])


def demo(cache: Path | None, which: list[int]):
    from membench import registry

    layout = registry.get_dataset("demo").opener()(None, {})  # generated on first use
    splits = {k: layout.load_split(k) for k in which}
    union = {}
    for sp in splits.values():
        for s in sp.test:
            union.setdefault(s.name, s)
    spec, model = resmem()
    pred = scores(model, spec, [union[n] for n in sorted(union)], cache, "demo_resmem")
    eq2_rows("demo", splits, pred)


def main():
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--lnsim", type=Path, help="the LNSIM release (Image_data/, Random_splits/)")
    p.add_argument("--resmem-run", type=Path, default=None,
                   help="predictions/<run_id>/ of a ResMem --train none run on LNSIM, instead of predicting")
    p.add_argument("--demo", action="store_true", help="the built-in demo data")
    p.add_argument("--cache", type=Path, default=None, help="keep predictions here between runs")
    p.add_argument("--demo-splits", default="1", help="comma-separated demo splits (default 1)")
    p.add_argument("--n-boot", type=int, default=2000)
    args = p.parse_args()
    os.environ.setdefault("MEMBENCH_HOME", tempfile.mkdtemp())
    import torch

    torch.set_num_threads(min(4, os.cpu_count() or 1))
    if args.lnsim:
        lnsim(args.lnsim, args.cache, args.n_boot, args.resmem_run)
    if args.demo:
        demo(args.cache, [int(k) for k in args.demo_splits.split(",")])


if __name__ == "__main__":
    main()
