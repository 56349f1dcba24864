#!/usr/bin/env python
"""Stage-2 training throughput per epoch: exact (frozen nets on every augmented image) vs
the K-view cache (`membench run --frozen-train-cache K`), on demo data.

    python scripts/stage2_view_cache_speed.py --model resnet50-lamem-imagenet --train 48 --k 2

Weights are random (`--pretrained none`, or --stage1 FILE): speed does not depend on them.
Prints images/s of each epoch's training loop (validation excluded: it is cached exactly in
both modes) and of building the K views once.
"""

from __future__ import annotations

import argparse
import tempfile
import time
from argparse import Namespace
from dataclasses import replace
from pathlib import Path


class Timer:
    """A stand-in for rich's Progress that times each task."""

    def __init__(self):
        self.tasks = []

    def add_task(self, desc, total=None):
        self.tasks.append([desc, total, time.perf_counter()])
        return len(self.tasks) - 1

    def advance(self, *_):
        pass

    def remove_task(self, i):
        self.tasks[i][2] = time.perf_counter() - self.tasks[i][2]


def main() -> None:
    import torch

    from membench import registry
    from membench.commands.common import open_dataset
    from membench.engine.device import resolve_device
    from membench.engine.runner import effective, hardware
    from membench.engine.stage import train_stage
    from membench.spec import BuildContext, Split

    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", default="resnet50-lamem-imagenet")
    ap.add_argument("--train", type=int, default=48, help="training images (demo split 1)")
    ap.add_argument("--epochs", type=int, default=3)
    ap.add_argument("--k", type=int, default=2)
    ap.add_argument("--device", default="auto")
    ap.add_argument("--stage1", type=Path, default=None, help="stage-1 best.pt (default: random weights)")
    args = ap.parse_args()

    device = resolve_device(args.device)
    spec = registry.get_model(args.model)
    stages, pre = effective(spec, "paper")
    stage = replace(next(s for s in stages if s.model is None and s.frozen), epochs=args.epochs)
    split = open_dataset(Namespace(data="demo", dataset=None, dataset_option=[])).load_split(1)
    split = Split(1, split.train[:args.train], split.val[:8], split.test)
    print(f"{args.model} {stage.name}: {len(split.train)} train images, input {pre.size}, batch "
          f"{stage.batch_size}, {device.type} ({hardware(device.type)}), {torch.get_num_threads()} threads")
    upstream = {"stage1": args.stage1} if args.stage1 else {}
    for k in (0, args.k):
        torch.manual_seed(0)
        model = device.prepare(spec.builder()(BuildContext(pretrained=False, upstream=upstream)))
        timer = Timer()
        with tempfile.TemporaryDirectory() as tmp:
            train_stage(model, stage, split.train, split.val, pre, device, Path(tmp), seed=1, patience=99,
                        resume=False, progress=timer, frozen_train_cache=k)
        for desc, total, sec in timer.tasks:
            if "validation" not in desc:
                print(f"K={k} {desc}: {total} images in {sec:.2f} s = {total / sec:.1f} images/s")


if __name__ == "__main__":
    main()
