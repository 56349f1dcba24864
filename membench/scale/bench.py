"""Throughput of the data pipeline and of every model, each beside a plain reference.

Rows are measured side by side in one process, so a ratio compares like with like on
whatever the machine was doing at the time. Results go to
`<out>/bench-<device>-<dtype>-torch<version>.{json,csv}`.

- pipeline: decode + transform of one image at a time on one thread (PIL decode, the
  training transform), against the literal §3.2 implementation (`PaperLiteral`: scale,
  flip, crop, resize in PIL, one resampling per step).
- loader: images/s out of `make_loader` with N workers (decode, transform, collate).
- inference / train-step: images/s of a model at batch B (train-step: forward, MSE,
  backward, Adam step of the parameters the model's last own stage trains), against a
  plainly written reference of the same architecture where one exists.
"""

from __future__ import annotations

import csv
import json
import os
import platform
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

from membench.engine.provenance import cpu_name

DEFAULT_OUT = Path("leaderboards") / "bench"
COLUMNS = ("benchmark", "name", "impl", "images_per_s", "images_per_cpu_s", "ratio", "reference", "device", "dtype",
           "batch", "input", "threads", "iters", "seconds", "note")


@dataclass
class Row:
    benchmark: str  # pipeline | loader | inference | train-step
    name: str  # a model, or the transform
    impl: str  # membench | reference
    images_per_s: float
    device: str
    dtype: str
    batch: int
    input: str  # "HxW"
    threads: int
    iters: int
    seconds: float
    images_per_cpu_s: float | None = None  # images per second of process CPU time
    reference: str = ""  # what the ratio compares with
    ratio: float | None = None  # membench / reference, on the membench row
    note: str = ""


@dataclass
class Env:
    device: str
    device_name: str
    dtype: str
    torch: str
    torchvision: str
    python: str = field(default_factory=platform.python_version)
    machine: str = field(default_factory=platform.platform)
    cpu: str = field(default_factory=lambda: cpu_name())
    cpu_count: int = field(default_factory=lambda: os.cpu_count() or 0)
    load_before: tuple[float, ...] = field(default_factory=lambda: _load())  # other work competing
    load_after: tuple[float, ...] = ()

    @property
    def tag(self) -> str:
        name = "" if self.device == "cpu" else "-" + "-".join(
            "".join(c if c.isalnum() or c == "." else " " for c in self.device_name).split())
        return f"{self.device}{name}-{self.dtype}-torch{self.torch.split('+')[0]}"


def _load() -> tuple[float, ...]:
    try:
        return tuple(round(x, 2) for x in os.getloadavg())
    except OSError:
        return ()


def environment(device: str, dtype: str) -> Env:
    import torch
    import torchvision

    name = torch.cuda.get_device_name() if device == "cuda" else "cpu"
    return Env(device=device, device_name=name, dtype=dtype, torch=torch.__version__,
               torchvision=torchvision.__version__)


# ---------------------------------------------------------------------------- images

def make_jpegs(root: Path, n: int = 64, size: tuple[int, int] = (400, 300), seed: int = 0,
               quality: int = 90) -> list[Path]:
    """Photo-like JPEGs (smooth shapes, mid-frequency texture, sensor noise) of `size` (w, h)."""
    import numpy as np
    from PIL import Image

    root = Path(root)
    root.mkdir(parents=True, exist_ok=True)
    rng = np.random.RandomState(seed)
    w, h = size
    paths = []
    for i in range(n):
        path = root / f"{i:05d}.jpg"
        paths.append(path)
        if path.is_file():
            continue
        base = Image.fromarray(rng.randint(0, 256, (h // 40 + 2, w // 40 + 2, 3)).astype("uint8"))
        tex = Image.fromarray(rng.randint(0, 256, (h // 6 + 1, w // 6 + 1, 3)).astype("uint8"))
        x = (0.8 * np.asarray(base.resize((w, h), Image.BICUBIC), dtype=np.float32)
             + 0.2 * np.asarray(tex.resize((w, h), Image.BILINEAR), dtype=np.float32)
             + rng.normal(0, 4, (h, w, 3)))
        Image.fromarray(np.clip(x, 0, 255).astype("uint8")).save(path, quality=quality)
    return paths


# ---------------------------------------------------------------------------- timing

def _timed(fn, iters: int, warmup: int, sync=None) -> tuple[float, float]:
    """(wall seconds, process CPU seconds) for `iters` calls after `warmup` calls."""
    for _ in range(warmup):
        fn()
    if sync:
        sync()
    t0, c0 = time.perf_counter(), time.process_time()
    for _ in range(iters):
        fn()
    if sync:
        sync()
    return time.perf_counter() - t0, time.process_time() - c0


def _interleaved(fns: dict, rounds: int, iters: int, warmup: int, sync=None) -> dict:
    """Time each function `rounds` times in turn (A B A B ...) so that a change in the
    machine's load hits every candidate alike; per candidate, the round with the least
    wall time: (wall seconds, CPU seconds) for `iters` calls."""
    best = {}
    for r in range(rounds):
        for name, fn in fns.items():
            wall, cpu = _timed(fn, iters, warmup if r == 0 else 0, sync)
            if name not in best or wall < best[name][0]:
                best[name] = (wall, cpu)
    return best


class _threads:
    def __init__(self, n):
        self.n = n

    def __enter__(self):
        import torch

        self.before = torch.get_num_threads()
        torch.set_num_threads(self.n)

    def __exit__(self, *exc):
        import torch

        torch.set_num_threads(self.before)


def bench_pipeline(paths, pre, *, rounds: int = 3, threads: int = 1) -> list[Row]:
    """One image at a time, decode + transform over `paths`, on `threads` torch threads.
    Candidates are interleaved (`rounds` passes each, the fastest kept; a first untimed
    pass warms the page cache). The ratio uses CPU time, which other processes on a
    shared machine disturb far less than wall time (one thread: CPU time ~ busy time)."""
    import torch

    from membench.data.images import open_rgb
    from membench.data.transforms import PaperLiteral, eval_transform, train_transform

    fns = {"decode": lambda p, g: open_rgb(p), "train": _apply(train_transform(pre))}
    if pre.train == "paper":
        fns["train/reference"] = _apply(PaperLiteral(pre.size))
    fns["eval"] = _apply(eval_transform(pre))

    def over_paths(fn):
        gen = torch.Generator().manual_seed(0)
        return lambda: [fn(p, gen) for p in paths]

    with _threads(threads):
        best = _interleaved({k: over_paths(f) for k, f in fns.items()}, rounds, iters=1, warmup=1)
    h, w = pre.input_size
    rows = {name: Row("pipeline", name, "reference" if name.endswith("/reference") else "membench",
                      len(paths) / wall, "cpu", "uint8", 1, f"{h}x{w}", threads, len(paths), wall,
                      images_per_cpu_s=len(paths) / cpu if cpu > 0 else None)
            for name, (wall, cpu) in best.items()}
    rows["train"].note = repr(train_transform(pre))
    if "train/reference" in rows:
        ref = rows["train/reference"]
        rows["train"].reference = f"{PaperLiteral(pre.size)!r}: literal §3.2 in PIL (CPU-time ratio)"
        rows["train"].ratio = rows["train"].images_per_cpu_s / ref.images_per_cpu_s
    return list(rows.values())


def _apply(transform):
    from membench.data.images import open_rgb

    return lambda path, gen: transform(open_rgb(path), generator=gen)


def bench_loader(paths, pre, *, workers: int, batch: int = 10, passes: int = 2) -> Row:
    """Images/s out of the training loader (decode, transform, collate, worker transfer)."""
    from membench.data.loader import make_loader
    from membench.data.transforms import train_transform
    from membench.spec import Sample

    samples = [Sample(name=p.name, path=p, score=0.5) for p in paths]
    loader = make_loader(samples, train_transform(pre), batch_size=batch, shuffle=True,
                         workers=workers, seed=0)
    for _ in loader:  # starts the workers
        pass
    t0 = time.perf_counter()
    n = 0
    for _ in range(passes):
        for x, _y, _i in loader:
            n += len(x)
    seconds = time.perf_counter() - t0
    h, w = pre.input_size
    return Row("loader", "train", "membench", n / seconds, "cpu", "uint8", batch, f"{h}x{w}",
               max(1, workers), passes, seconds, note=f"{workers} workers")


# ---------------------------------------------------------------------------- models

def reference_model(name: str):
    """A plainly written model of the same architecture, or None."""
    import torch.nn as nn

    if name in ("resnet50-lamem", "resnet50-lamem-imagenet"):
        from torchvision.models import resnet50

        class Plain(nn.Module):
            def __init__(self):
                super().__init__()
                self.net = resnet50(weights=None, num_classes=1)

            def forward(self, x):
                return self.net(x).squeeze(1)

        return Plain(), "torchvision resnet50(num_classes=1)"
    if name == "resmem":
        try:
            from resmem import ResMem  # the authors' package, when installed
        except ImportError:
            return None
        # pretrained=True loads the weights shipped in the wheel; the package's False means
        # "download ImageNet ResNet-152 weights", which is impossible offline.
        return ResMem(pretrained=True), "resmem package ResMem"
    return None


def _last_own_stage(spec):
    own = [s for s in spec.recipe if s.model is None]
    return own[-1] if own else None


class ModelBench:
    """Inference and training-step throughput of one model on one device and dtype."""

    def __init__(self, device: str = "cpu", dtype: str = "float32", compile: bool = False,
                 channels_last: bool | None = None):
        import torch

        self.device, self.dtype, self.compile = device, dtype, compile
        self.channels_last = device == "cuda" if channels_last is None else channels_last
        self.torch_dtype = {"float32": torch.float32, "bfloat16": torch.bfloat16}[dtype]

    def _autocast(self):
        import contextlib

        import torch

        if self.dtype == "float32":
            return contextlib.nullcontext()
        return torch.autocast(self.device, dtype=self.torch_dtype)

    def _sync(self):
        import torch

        if self.device == "cuda":
            torch.cuda.synchronize()

    def _prepare(self, model):
        import torch

        model = model.to(self.device)
        if self.channels_last:
            model = model.to(memory_format=torch.channels_last)
        if self.compile:
            mode = "reduce-overhead" if self.device == "cuda" else None
            model = torch.compile(model, mode=mode)
        return model

    def _batch(self, pre, batch: int, size):
        import torch

        from membench.data.transforms import Normalizer

        x = torch.randint(0, 256, (batch, 3, *size), dtype=torch.uint8, device=self.device)
        return Normalizer(pre, channels_last=self.channels_last)(x)

    def inference(self, model, pre, batch: int, size):
        """A callable running one inference batch."""
        import torch

        model = self._prepare(model).eval()
        x = self._batch(pre, batch, size)

        def step():
            with torch.inference_mode(), self._autocast():
                model(x)

        return step

    def train_step(self, model, pre, stage, batch: int, size):
        """A callable running one training step (forward, loss, backward, Adam)."""
        import torch

        from membench.contract import training_loss
        from membench.engine.stage import freeze

        frozen = freeze(model, stage.frozen if stage else ())
        model = self._prepare(model).train()
        for m in frozen:
            m.eval()
        params = [p for p in model.parameters() if p.requires_grad]
        opt = torch.optim.Adam(params, lr=stage.lr if stage else 1e-4)
        x = self._batch(pre, batch, size)
        y = torch.rand(batch, device=self.device)

        def step():
            with self._autocast():
                pred = model(x)
            loss = training_loss(model, pred.float().reshape(-1), y)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()

        return step


def bench_model(spec, *, bench: ModelBench, batch: int | None = None, size=None, iters: int = 3,
                warmup: int = 1, rounds: int = 2, options: dict | None = None,
                what=("inference", "train-step"), threads: int = 0) -> list[Row]:
    """Rows for one model: membench's build and, where one exists, the plain reference,
    interleaved (`rounds` x `iters` steps each, the fastest round kept)."""
    from membench.spec import BuildContext

    stage = _last_own_stage(spec)
    batch = batch or (stage.batch_size if stage else 10)
    size = tuple(size or spec.preprocess.input_size)
    ctx = BuildContext(pretrained=False, options=dict(options or {}), device="cpu")
    ref = reference_model(spec.name)
    rows = []
    for kind in what:
        if kind == "train-step" and not spec.trainable:
            continue
        models = {"membench": spec.builder()(ctx)}
        if ref is not None:
            models["reference"] = reference_model(spec.name)[0]
        if kind == "inference":
            steps = {impl: bench.inference(m, spec.preprocess, batch, size) for impl, m in models.items()}
        else:
            steps = {impl: bench.train_step(m, spec.preprocess, stage if impl == "membench" else None, batch, size)
                     for impl, m in models.items()}
        best = _interleaved(steps, rounds, iters, warmup, bench._sync)
        measured = {impl: Row(kind, spec.name, impl, batch * iters / wall, bench.device, bench.dtype, batch,
                              f"{size[0]}x{size[1]}", threads, iters, wall,
                              note="compiled" if bench.compile else "")
                    for impl, (wall, _cpu) in best.items()}
        if "reference" in measured:
            measured["membench"].reference = ref[1]
            measured["membench"].ratio = measured["membench"].images_per_s / measured["reference"].images_per_s
            if kind == "train-step" and stage and stage.frozen:
                measured["membench"].note = "stage trains only unfrozen parameters; reference trains all"
        rows.extend(measured.values())
        del models, steps
    return rows


# ---------------------------------------------------------------------------- output

def result_files(env: Env) -> list[str]:
    return [f"bench-{env.tag}.json", f"bench-{env.tag}.csv"]


def write_results(rows: list[Row], env: Env, out_dir: Path, skipped: list[dict] = ()) -> tuple[Path, Path]:
    """`bench-<tag>.json` (environment + rows) and `bench-<tag>.csv` (rows), atomically."""
    from membench.util.files import atomic_write_bytes

    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    env.load_after = _load()
    payload = {"environment": asdict(env), "date": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
               "rows": [asdict(r) for r in rows], "skipped": list(skipped)}
    json_path, csv_path = (out_dir / name for name in result_files(env))
    atomic_write_bytes(json_path, (json.dumps(payload, indent=2) + "\n").encode())
    import io

    buf = io.StringIO()
    writer = csv.DictWriter(buf, fieldnames=COLUMNS, lineterminator="\n")
    writer.writeheader()
    for r in rows:
        d = asdict(r)
        d["images_per_s"] = f"{r.images_per_s:.2f}"
        d["seconds"] = f"{r.seconds:.4f}"
        d["ratio"] = "" if r.ratio is None else f"{r.ratio:.3f}"
        d["images_per_cpu_s"] = "" if r.images_per_cpu_s is None else f"{r.images_per_cpu_s:.2f}"
        writer.writerow({k: d[k] for k in COLUMNS})
    atomic_write_bytes(csv_path, buf.getvalue().encode())
    return json_path, csv_path
