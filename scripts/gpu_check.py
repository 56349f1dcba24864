#!/usr/bin/env python
"""One-shot GPU check for membench: run once on a machine with a GPU, keep the JSON.

    python scripts/gpu_check.py --out gpu_check.json            # ~3-5 min on one GPU
    python scripts/gpu_check.py --device cpu --size 64 --steps 2 --jobs 1 --no-compile   # plumbing

Checks, each recorded with ok/error so one failure does not hide the others:
  environment   torch/CUDA versions, device name, bf16 support
  bf16          resnet50-lamem forward under bf16 autocast vs fp32 (relative difference)
  channels_last the same forward with channels_last weights and input vs contiguous
  ddp           DistributedDataParallel with one process (nccl on cuda, gloo on cpu): one step
  train         stage-1 training throughput at the protocol's batch (10) and input (256):
                fp32 eager, bf16+channels_last eager, bf16+channels_last torch.compile
                (reduce-overhead: CUDA graphs)
  concurrent    aggregate throughput of K independent training processes on one device
  loader        membench's training loader (decode + §3.2 transform + collate) with W workers
  stage2        `ours` stage-2 training step (frozen backbones and captioner), batch 16

fp32 is membench's default precision on every device and bf16 autocast the opt-in speed
option (`--precision bf16`), so every timing is taken in both (--precisions; fp32 only on
the CPU). bf16's effect on rho is measured with `membench run` (docs/performance.md).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import tempfile
import time
import traceback
from pathlib import Path


def check(report: dict, name: str):
    """Decorator-ish runner: report[name] = {"ok": ..., **result or "error"}."""

    def run(fn, *args, **kwargs):
        t0 = time.perf_counter()
        try:
            result = fn(*args, **kwargs)
            report[name] = {"ok": True, **(result or {})}
        except Exception as exc:  # record and go on
            report[name] = {"ok": False, "error": f"{type(exc).__name__}: {exc}",
                            "traceback": traceback.format_exc(limit=4)}
        report[name]["seconds"] = round(time.perf_counter() - t0, 2)
        print(f"[gpu_check] {name}: {'ok' if report[name]['ok'] else report[name]['error']}", flush=True)
        return report[name]

    return run


def build_resnet(device):
    from membench.registry import get_model
    from membench.spec import BuildContext

    return get_model("resnet50-lamem").builder()(BuildContext(pretrained=False)).to(device)


def environment(args):
    import torch
    import torchvision

    out = {"torch": torch.__version__, "torchvision": torchvision.__version__, "python": platform.python_version(),
           "cuda_available": torch.cuda.is_available(), "device": args.device, "cpu_count": os.cpu_count()}
    if args.device == "cuda":
        if not torch.cuda.is_available():
            raise RuntimeError("CUDA is not available")
        p = torch.cuda.get_device_properties(0)
        out.update(name=p.name, capability=f"{p.major}.{p.minor}", memory_gib=round(p.total_memory / 2**30, 1),
                   cuda=torch.version.cuda, cudnn=torch.backends.cudnn.version(),
                   bf16_supported=torch.cuda.is_bf16_supported(), device_count=torch.cuda.device_count())
    return out


def bf16_forward(args):
    import torch

    torch.manual_seed(0)
    model = build_resnet(args.device).eval()
    x = torch.randn(4, 3, args.size, args.size, device=args.device)
    with torch.inference_mode():
        ref = model(x).float()
        with torch.autocast(args.device, dtype=torch.bfloat16):
            out = model(x)
    rel = ((out.float() - ref).norm() / ref.norm().clamp_min(1e-12)).item()
    return {"out_dtype": str(out.dtype), "finite": bool(torch.isfinite(out).all()), "rel_diff_vs_fp32": rel}


def channels_last(args):
    import torch

    torch.manual_seed(0)
    model = build_resnet(args.device).eval()
    x = torch.randn(4, 3, args.size, args.size, device=args.device)
    with torch.inference_mode():
        ref = model(x)
        cl = model.to(memory_format=torch.channels_last)(x.contiguous(memory_format=torch.channels_last))
    conv = next(p for p in model.parameters() if p.dim() == 4)
    return {"max_abs_diff": (cl - ref).abs().max().item(),
            "weights_channels_last": conv.is_contiguous(memory_format=torch.channels_last)}


def ddp_one_process(args):
    import socket

    import torch
    import torch.distributed as dist
    from torch.nn.parallel import DistributedDataParallel as DDP

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    backend = "nccl" if args.device == "cuda" else "gloo"
    dist.init_process_group(backend, init_method=f"tcp://127.0.0.1:{port}", rank=0, world_size=1)
    try:
        model = build_resnet(args.device)
        ddp = DDP(model, device_ids=[0] if args.device == "cuda" else None)
        opt = torch.optim.Adam(ddp.parameters(), lr=1e-4)
        x = torch.randn(2, 3, args.size, args.size, device=args.device)
        loss = torch.nn.functional.mse_loss(ddp(x), torch.rand(2, device=args.device))
        loss.backward()
        opt.step()
        return {"backend": backend, "loss": loss.item()}
    finally:
        dist.destroy_process_group()


def train_throughput(args, dtype: str, compile: bool, steps: int | None = None) -> dict:
    from membench.registry import get_model
    from membench.scale.bench import ModelBench, _timed

    spec = get_model("resnet50-lamem")
    mb = ModelBench(args.device, dtype, compile=compile, channels_last=dtype == "bfloat16" and args.device == "cuda")
    step = mb.train_step(build_resnet("cpu"), spec.preprocess, spec.recipe[-1], args.batch, (args.size, args.size))
    t0 = time.perf_counter()
    step()  # compilation happens here
    first = time.perf_counter() - t0
    steps = steps or args.steps
    wall, _ = _timed(step, steps, args.warmup, mb._sync)
    return {"dtype": dtype, "compile": compile, "channels_last": mb.channels_last, "batch": args.batch,
            "size": args.size, "steps": steps, "images_per_s": args.batch * steps / wall,
            "first_step_s": round(first, 2)}


def train_variants(args):
    out = {"fp32_eager": train_throughput(args, "float32", False),
           "bf16_cl_eager": train_throughput(args, "bfloat16", False)}
    if args.compile:
        try:
            out["bf16_cl_compiled"] = train_throughput(args, "bfloat16", True)
        except Exception as exc:
            out["bf16_cl_compiled"] = {"error": f"{type(exc).__name__}: {exc}"}
    return out


def dtypes(args) -> list[str]:
    """The precisions to time: fp32 (membench's default) and bf16 (opt-in), fp32 only on the CPU."""
    names = {"fp32": "float32", "bf16": "bfloat16"}
    return [names[p] for p in args.precisions if args.device == "cuda" or p == "fp32"]


def concurrent(args):
    """K processes, each training for --seconds at batch 10; aggregate images/s, per precision."""
    out = {}
    for dtype, k in [(d, k) for d in dtypes(args) for k in args.jobs]:
        with tempfile.TemporaryDirectory() as tmp:
            cmd = [sys.executable, __file__, "--worker", "--device", args.device, "--size", str(args.size),
                   "--batch", str(args.batch), "--seconds", str(args.seconds), "--warmup", str(args.warmup),
                   "--worker-dtype", dtype]
            if args.compile_workers:
                cmd.append("--worker-compile")
            procs = [subprocess.Popen(cmd + ["--out", f"{tmp}/{i}.json"]) for i in range(k)]
            codes = [p.wait() for p in procs]
            results = [json.loads(Path(f"{tmp}/{i}.json").read_text()) for i in range(k) if codes[i] == 0]
        out[f"{dtype} jobs={k}"] = {"exit_codes": codes, "per_job": [r["images_per_s"] for r in results],
                            "aggregate_images_per_s": sum(r["images_per_s"] for r in results)}
    return out


def worker(args):
    """Train for --seconds (after warm-up) and write images/s: one of `concurrent`'s jobs."""
    from membench.registry import get_model
    from membench.scale.bench import ModelBench

    spec = get_model("resnet50-lamem")
    mb = ModelBench(args.device, args.worker_dtype, compile=args.worker_compile)
    step = mb.train_step(build_resnet("cpu"), spec.preprocess, spec.recipe[-1], args.batch, (args.size, args.size))
    for _ in range(max(1, args.warmup)):
        step()
    mb._sync()
    n, t0 = 0, time.perf_counter()
    while time.perf_counter() - t0 < args.seconds:
        step()
        n += 1
    mb._sync()
    Path(args.out).write_text(json.dumps({"images_per_s": args.batch * n / (time.perf_counter() - t0)}))


def loader(args):
    from membench.scale.bench import bench_loader, make_jpegs
    from membench.spec import Preprocess

    with tempfile.TemporaryDirectory() as tmp:
        paths = make_jpegs(Path(tmp), args.loader_images, (400, 300))
        out = {}
        for w in args.loader_workers:
            row = bench_loader(paths, Preprocess(size=(args.size, args.size)), workers=w, batch=args.batch)
            out[f"workers={w}"] = row.images_per_s
    return out


def stage2(args):
    from membench.registry import get_model
    from membench.scale.bench import ModelBench, _timed
    from membench.spec import BuildContext

    spec = get_model("ours")
    stage = [s for s in spec.recipe if s.model is None][-1]
    model = spec.builder()(BuildContext(pretrained=False, options={"captioner": "random"}))
    out = {}
    for dtype in dtypes(args):
        mb = ModelBench(args.device, dtype)
        step = mb.train_step(model, spec.preprocess, stage, stage.batch_size, (args.size, args.size))
        wall, _ = _timed(step, args.steps, args.warmup, mb._sync)
        out[dtype] = {"batch": stage.batch_size, "images_per_s": stage.batch_size * args.steps / wall}
    return out


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--out", default="gpu_check.json")
    p.add_argument("--device", default="cuda")
    p.add_argument("--size", type=int, default=256)
    p.add_argument("--batch", type=int, default=10)
    p.add_argument("--steps", type=int, default=40)
    p.add_argument("--warmup", type=int, default=5)
    p.add_argument("--seconds", type=float, default=20.0, help="per concurrent job")
    p.add_argument("--jobs", default="1,2,4", help="concurrent job counts")
    p.add_argument("--loader-workers", default="4,8,16")
    p.add_argument("--loader-images", type=int, default=400)
    p.add_argument("--no-compile", dest="compile", action="store_false")
    p.add_argument("--compile-workers", action="store_true", help="torch.compile inside concurrent jobs too")
    p.add_argument("--skip", default="", help="comma list of checks to skip")
    p.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    p.add_argument("--worker-compile", action="store_true", help=argparse.SUPPRESS)
    p.add_argument("--worker-dtype", default="float32", help=argparse.SUPPRESS)
    p.add_argument("--precisions", default="fp32,bf16", help="precisions to time (fp32 only on the CPU)")
    args = p.parse_args(argv)
    args.jobs = [int(j) for j in args.jobs.split(",") if j]
    args.loader_workers = [int(w) for w in args.loader_workers.split(",") if w]
    args.precisions = [p for p in args.precisions.split(",") if p]
    if not args.precisions or set(args.precisions) - {"fp32", "bf16"}:
        p.error("--precisions takes fp32 and/or bf16, comma-separated")
    if args.worker:
        worker(args)
        return 0
    skip = set(args.skip.split(","))
    report: dict = {"started": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()), "args": vars(args)}
    checks = [("environment", environment), ("bf16", bf16_forward), ("channels_last", channels_last),
              ("ddp", ddp_one_process), ("train", train_variants), ("concurrent", concurrent),
              ("loader", loader), ("stage2", stage2)]
    for name, fn in checks:
        if name in skip:
            continue
        check(report, name)(fn, args)
        Path(args.out).write_text(json.dumps(report, indent=2, default=str) + "\n")  # partial results survive
        if name == "environment" and not report[name]["ok"]:
            break
    print(f"[gpu_check] wrote {args.out}")
    return 0 if all(v.get("ok") for k, v in report.items() if isinstance(v, dict) and "ok" in v) else 1


if __name__ == "__main__":
    sys.exit(main())
