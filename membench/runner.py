"""The protocol runner: a model's recipe on each requested split, results to the leaderboard.

A job is (model, dataset, split, configuration). Its working directory holds one folder
per stage (checkpoints) and `result.json` once the test metrics exist, so `--resume`
retrains nothing that finished and continues a stage from its last finished epoch.
Chained stages (Stage.model) run, or reuse, the upstream model's job on the same split.
"""

from __future__ import annotations

import contextlib
import copy
import hashlib
import json
import math
import os
import shutil
import time
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path

from membench import __version__, registry
from membench.errors import MembenchError, WeightsUnavailable
from membench.images import apply_policy, check_images
from membench.leaderboard import add_result, atomic_write_json, check_writable, valid_rows
from membench.metrics import mse, spearman
from membench.spec import BuildContext, ModelSpec, Preprocess, Split, Stage
from membench.testhooks import kill_point

PRESETS = {
    "paper": "the recipe exactly: epochs, batch sizes and learning rates of the model's paper",
    "smoke": "16 train / 8 val / 16 test images per split, one epoch per stage: checks the plumbing, "
             "its numbers mean nothing",
    "quick": "CPU-sized learning check: 64x64 inputs, up to 600 train images, 4 epochs per stage at "
             "LR 1e-3 and batch 32; NOT the paper protocol (models with fixed input sizes cannot use it)",
}
SMOKE_SIZES = {"train": 16, "val": 8, "test": 16}
QUICK_SIZES = {"train": 600, "val": 64, "test": 200}
DEFAULT_PATIENCE = 10


@dataclass
class RunConfig:
    out: Path
    work_dir: Path
    preset: str = "paper"
    seed: int = 0
    device: str = "auto"
    workers: int | None = None
    resume: bool = False
    patience: int = DEFAULT_PATIENCE
    pretrained: bool = True
    init: str = "imagenet"
    train: str = "full"  # "none": evaluate only, with --checkpoint or the model's own weights
    checkpoint: Path | None = None
    on_bad_image: str = "fail"
    options: dict[str, str] = field(default_factory=dict)
    compile: bool = False  # torch.compile the model (speed only: not part of the job key)
    frozen_train_cache: int = 0  # K > 0: K cached views per training image in frozen stages (approximation)

    def __post_init__(self):
        if self.preset not in PRESETS:
            raise MembenchError(f"unknown preset {self.preset!r}; choose from {', '.join(PRESETS)}")
        if self.init not in ("imagenet", "scratch"):
            raise MembenchError("--init must be imagenet or scratch")
        if self.train not in ("full", "none"):
            raise MembenchError("--train must be full or none")
        if self.patience < 1:
            raise MembenchError("--patience must be at least 1")
        if self.frozen_train_cache < 0:
            raise MembenchError("--frozen-train-cache must be 0 (exact, default) or a number of views K >= 1")


@dataclass
class JobResult:
    row: dict
    checkpoint: Path | None


def effective(spec: ModelSpec, preset: str) -> tuple[tuple[Stage, ...], Preprocess]:
    """The stages and preprocessing a preset actually runs (recorded in provenance)."""
    if preset == "paper":
        return spec.recipe, spec.preprocess
    if preset == "smoke":
        return tuple(replace(s, epochs=1) if s.model is None else s for s in spec.recipe), spec.preprocess
    pre = spec.preprocess
    quick_pre = replace(pre, size=(72, 72) if pre.crop else (64, 64), crop=64 if pre.crop else None,
                        train_size=None)
    stages = tuple(replace(s, epochs=4, lr=1e-3, batch_size=32) if s.model is None else s for s in spec.recipe)
    return stages, quick_pre


def subset(split: Split, preset: str) -> Split:
    """Deterministic prefixes of each part for the small presets (split files are already random)."""
    sizes = {"smoke": SMOKE_SIZES, "quick": QUICK_SIZES}.get(preset)
    if sizes is None:
        return split
    return Split(split.index, split.train[:sizes["train"]], split.val[:sizes["val"]], split.test[:sizes["test"]])


def job_key(spec: ModelSpec, dataset, cfg: RunConfig) -> str:
    """Everything that changes a job's numbers, hashed: same key, same job (resumable)."""
    stages, pre = effective(spec, cfg.preset)
    material = json.dumps({
        "model": spec.name, "dataset": dataset.name, "data": dataset.fingerprint(), "preset": cfg.preset,
        "seed": cfg.seed, "patience": cfg.patience, "pretrained": cfg.pretrained, "init": cfg.init,
        "train": cfg.train, "checkpoint": str(cfg.checkpoint) if cfg.checkpoint else None,
        "on_bad_image": cfg.on_bad_image, "options": cfg.options,
        "stages": [asdict(s) for s in stages], "preprocess": asdict(pre),
        # an approximation never shares a job with the exact protocol (absent when off: old keys stay)
        **({"frozen_train_cache": cfg.frozen_train_cache}
           if cfg.frozen_train_cache and any(s.frozen for s in stages if s.model is None) else {}),
    }, sort_keys=True, default=str)
    digest = hashlib.sha256(material.encode()).hexdigest()[:10]
    return f"{spec.name.replace('/', '_')}__{dataset.name}__{cfg.preset}__s{cfg.seed}__{digest}"


class Runner:
    """Runs jobs for one invocation; `progress` is a rich Progress (or compatible)."""

    def __init__(self, dataset, cfg: RunConfig, progress, console=None):
        from membench.train import resolve_device

        self.dataset = dataset
        self.cfg = cfg
        self.progress = progress
        self.console = console
        self.device = resolve_device(cfg.device, cfg.workers, compile=cfg.compile)
        from membench import distributed

        self.dist = distributed.init(self.device.type)  # torchrun: one job over several processes
        self.done: dict[str, JobResult] = {}
        self._upstream: Runner | None = None
        self._checked: dict[int, set] = {}

    def say(self, text: str) -> None:
        if self.console is not None:
            self.console.print(text)

    def upstream(self) -> "Runner":
        """The runner for chained stages: --model-option addresses the models named on the
        command line, so a stage-1 job is the same (and reused) whichever options stage 2 has."""
        if not self.cfg.options and not self.cfg.frozen_train_cache:
            return self
        if self._upstream is None:
            self._upstream = copy.copy(self)  # shares progress, device, finished jobs, image checks
            self._upstream.cfg = replace(self.cfg, options={}, frozen_train_cache=0)
        return self._upstream

    # -- data -------------------------------------------------------------------------
    def prepare(self, splits: list[int]) -> None:
        """Read every requested split file and decode every image they list (each image
        once) before anything trains: a bad file stops the run now, not after hours."""
        splits = [k for k in splits if k not in self._checked]
        if not splits:
            return
        every = [s for k in splits for part in subset(self.dataset.load_split(k), self.cfg.preset).parts().values()
                 for s in part]
        task = self.progress.add_task(f"checking images of split(s) {', '.join(map(str, splits))}",
                                      total=len({s.path for s in every}))
        check = check_images(every, progress=lambda n: self.progress.advance(task, n))
        self.progress.remove_task(task)
        apply_policy(check, self.cfg.on_bad_image)
        if check.bad:
            self.say(f"[yellow]skipping {len(check.bad)} missing or corrupt images (--on-bad-image skip)[/]")
        if check.converted:
            kinds = ", ".join(f"{n} {mode}" for mode, n in sorted(check.converted.items()))
            self.say(f"converting non-RGB images to RGB when loading them ({kinds})")
        for k in splits:
            self._checked[k] = check.bad
        for k in splits:
            self.split(k)  # enough usable images in every part

    def split(self, k: int) -> Split:
        if k not in self._checked:
            self.prepare([k])
        split = subset(self.dataset.load_split(k), self.cfg.preset)
        bad = self._checked[k]
        if bad:
            keep = lambda part: tuple(s for s in part if str(s.path) not in bad)  # noqa: E731
            split = Split(k, keep(split.train), keep(split.val), keep(split.test))
        for part, samples in split.parts().items():
            if len(samples) < 2:
                raise MembenchError(f"split {k} has fewer than 2 usable {part} images", self.dataset.root)
        return split

    # -- jobs -------------------------------------------------------------------------
    def run(self, spec: ModelSpec, k: int, reuse_finished: bool = False) -> JobResult:
        """Run one job. A finished job is reused with --resume, and always when it is an
        upstream stage (a finished stage 1 is never retrained for a later stage 2)."""
        key = job_key(spec, self.dataset, self.cfg)
        memo = f"{key}/{k}"
        if memo in self.done:
            return self.done[memo]
        job_dir = self.cfg.work_dir / key / f"split{k}"
        result_file = job_dir / "result.json"
        from membench import distributed

        # torchrun: rank 0 locks and writes; the other ranks of the same job follow it
        lock = job_lock(job_dir, wait=reuse_finished, say=self.say) if self.dist.is_main else contextlib.nullcontext()
        with lock:
            if (self.cfg.resume or reuse_finished) and result_file.is_file():
                try:
                    saved = json.loads(result_file.read_text())
                except (OSError, ValueError) as exc:
                    raise MembenchError(f"cannot read a finished job's result ({exc}); delete the file to "
                                        "recompute the job", result_file) from None
                self.say(f"{spec.name} split {k}: finished earlier, reusing ({job_dir})")
                result = JobResult(saved["row"], Path(saved["checkpoint"]) if saved["checkpoint"] else None)
                if self.dist.is_main:
                    self._record(spec, key, result, saved["predictions"], saved["provenance"])
            else:
                if not self.cfg.resume and job_dir.exists() and self.dist.is_main:
                    refuse_to_discard(job_dir)
                    shutil.rmtree(job_dir)
                distributed.barrier(self.dist)
                result = self._run_job(spec, k, key, job_dir)
        self.done[memo] = result
        return result

    def _run_job(self, spec: ModelSpec, k: int, key: str, job_dir: Path) -> JobResult:
        import torch

        from membench.cache import train_views
        from membench.params import count
        from membench.train import predict, train_stage

        cfg = self.cfg
        started = time.time()
        split = self.split(k)
        stages, pre = effective(spec, cfg.preset)
        ctx = BuildContext(pretrained=cfg.pretrained, init=cfg.init, options=dict(cfg.options),
                           device="cpu")
        outcomes: dict[str, dict] = {}
        model = None
        train_mode = cfg.train if spec.trainable else "none"
        if train_mode == "full":
            for i, stage in enumerate(stages):
                if stage.model:
                    upstream = self.upstream().run(registry.get_model(stage.model), k, reuse_finished=True)
                    ctx.upstream[stage.name] = upstream.checkpoint
                    outcomes[stage.name] = {"model": stage.model, "run_id": upstream.row["run_id"]}
                    kill_point(f"stage-done:{spec.name}:{stage.name}:{k}")
                    continue
                model = self.device.prepare(self._build(spec, ctx, k, stage.name))
                self.say(f"{spec.name} split {k}: {stage.name} ({stage.epochs} epochs, batch "
                         f"{stage.batch_size}, lr {stage.lr:g})")
                views, ignored = train_views(model, stage, cfg.frozen_train_cache)
                if ignored:
                    self.say(f"[yellow]warning: {spec.name}: {ignored}[/]")
                outcome = train_stage(model, stage, split.train, split.val, pre, self.device,
                                      job_dir / stage.name, seed=cfg.seed + k,
                                      patience=stage.patience or cfg.patience, resume=cfg.resume,
                                      progress=self.progress, frozen_train_cache=views)
                outcomes[stage.name] = asdict(outcome)
                kill_point(f"stage-done:{spec.name}:{stage.name}:{k}")
                if i < len(stages) - 1:
                    ctx.upstream[stage.name] = job_dir / stage.name / "best.pt"
            checkpoint = job_dir / stages[-1].name / "best.pt" if model is not None else None
        if model is None:  # evaluate only (or a recipe made only of chained stages)
            model = self.device.prepare(self._build(spec, ctx, k, "evaluate"))
            if cfg.checkpoint:
                from membench.weights import load_state_dict

                model.load_state_dict(load_state_dict(cfg.checkpoint))
            elif train_mode == "none" and not cfg.pretrained:
                raise MembenchError(f"--train none with --pretrained none would evaluate random weights of "
                                    f"{spec.name}; give --checkpoint FILE or use pretrained weights")
            checkpoint = cfg.checkpoint
        task = self.progress.add_task(f"{spec.name} split {k}: test", total=len(split.test))
        preds = predict(model, split.test, pre, self.device, batch_size=32,
                        progress=lambda n: self.progress.advance(task, n))
        self.progress.remove_task(task)
        truth = [s.score for s in split.test]
        counts = count(spec)
        last_stage = next((o for o in reversed(list(outcomes.values())) if "epochs_run" in o), {})
        row = {
            "run_id": key, "model": spec.name, "dataset": self.dataset.name, "split": k,
            "rho": spearman(preds, truth), "mse": mse(preds, truth), "n_test": len(split.test),
            "params_total": counts["total"], "params_used": counts["used"],
            "params_trainable": sum(p.numel() for p in model.parameters() if p.requires_grad),
            "preset": cfg.preset, "train_mode": train_mode, "init": (cfg.init if cfg.pretrained else "random") if train_mode == "full" else "",
            "pretrained": cfg.pretrained,
            "epochs_run": last_stage.get("epochs_run", 0), "best_epoch": last_stage.get("best_epoch", 0),
            "best_val_rho": last_stage.get("best_val_rho"),
            "device": self.device.type, "hardware": hardware(self.device.type),
            "seconds": round(time.time() - started, 2), "seed": cfg.seed,
            "git_commit": git_commit(), "membench_version": __version__,
            "timestamp": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
            "data_fingerprint": self.dataset.fingerprint(),
            "notes": "; ".join([f"{k_}={v}" for k_, v in sorted(cfg.options.items())] + [
                f"frozen_train_cache={o['frozen_train_cache']} (approximation)"
                for o in outcomes.values() if o.get("frozen_train_cache")][:1]),
        }
        if row["best_val_rho"] is not None and not math.isfinite(row["best_val_rho"]):
            row["best_val_rho"] = None
        predictions = [(s.name, s.score, float(p)) for s, p in zip(split.test, preds)]
        provenance = self._provenance(spec, key, stages, pre, outcomes)
        result = JobResult(row, checkpoint)
        if self.dist.is_main:
            atomic_write_json(job_dir / "result.json", {
                "row": row, "checkpoint": str(checkpoint) if checkpoint else None,
                "predictions": predictions, "provenance": provenance})
        kill_point(f"result-saved:{spec.name}:{k}")
        if self.dist.is_main:
            self._record(spec, key, result, predictions, provenance)
        del model
        if self.device.type == "cuda":
            torch.cuda.empty_cache()
        return result

    def _build(self, spec: ModelSpec, ctx: BuildContext, k: int, stage: str):
        """Random initialisation is seeded by (seed, split, model, stage), not by whatever
        ran earlier in this process, so a resumed run builds the same model."""
        import torch

        from membench.train import epoch_seed

        torch.manual_seed(epoch_seed(self.cfg.seed + k, f"build:{spec.name}:{stage}", 0))
        return spec.builder()(ctx)

    def _record(self, spec, key, result: JobResult, predictions, provenance) -> None:
        add_result(self.cfg.out, result.row, [tuple(p) for p in predictions], provenance)

    def _provenance(self, spec: ModelSpec, key: str, stages, pre, outcomes) -> dict:
        cfg = self.cfg
        return {
            "run_id": key, "model": spec.name, "plugin": spec.plugin, "citation": spec.citation,
            "dataset": {"name": self.dataset.name, "root": str(self.dataset.root),
                        "fingerprint": self.dataset.fingerprint(),
                        "human_consistency": getattr(self.dataset, "human_consistency", None)},
            "preset": {"name": cfg.preset, "meaning": PRESETS[cfg.preset]},
            "config": {"seed": cfg.seed, "patience": cfg.patience, "pretrained": cfg.pretrained,
                       "init": cfg.init, "train": cfg.train, "options": cfg.options,
                       "on_bad_image": cfg.on_bad_image,
                       "checkpoint": str(cfg.checkpoint) if cfg.checkpoint else None,
                       "frozen_train_cache": cfg.frozen_train_cache,
                       "frozen_train_cache_meaning": "0: exact protocol (frozen nets on every augmented image); "
                                                     "K: K cached augmented views per training image "
                                                     "(approximation)"},
            "recipe": [asdict(s) for s in stages], "preprocess": asdict(pre),
            "stages": outcomes, "environment": environment(self.device.type),
        }


def run_all(specs: list[ModelSpec], dataset, splits: list[int], cfg: RunConfig, console=None) -> list[dict]:
    """Every (model, split) job in order, with rich progress; returns the leaderboard rows."""
    from rich.progress import (BarColumn, MofNCompleteColumn, Progress, TextColumn,
                               TimeElapsedColumn, TimeRemainingColumn)

    cfg = preflight(specs, cfg, say=(console.print if console else print))
    check_writable(cfg.out)
    check_writable(cfg.work_dir)
    valid_rows(cfg.out / "results.csv")  # a damaged leaderboard stops the run now, not after training
    if not cfg.resume:  # before anything runs, not when the job's turn comes
        for spec in specs:
            for k in splits:
                job_dir = cfg.work_dir / job_key(spec, dataset, cfg) / f"split{k}"
                if job_dir.exists():
                    refuse_to_discard(job_dir)
    rows = []
    with Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(),
                  TimeElapsedColumn(), TimeRemainingColumn(), console=console, transient=True) as progress:
        runner = Runner(dataset, cfg, progress, console=progress.console)
        runner.prepare(splits)
        overall = progress.add_task("jobs", total=len(specs) * len(splits))
        for spec in specs:
            for k in splits:
                rows.append(runner.run(spec, k).row)
                progress.advance(overall)
                kill_point(f"job-done:{spec.name}:{k}")
    return rows


def preflight(specs: list[ModelSpec], cfg: RunConfig, say) -> RunConfig:
    """Build every model once before anything trains, so that missing weights or a missing
    captioner stop the run now rather than after stage 1 (days on real data).

    The smoke and quick presets only check plumbing: there, weights that are not on this
    machine mean random initialisation instead (warned, and recorded as pretrained=False
    in every row). The paper preset never falls back."""
    for spec in specs:
        if cfg.preset == "quick":
            _check_quick_input(spec)
        if cfg.train == "none" and cfg.checkpoint:
            continue
        try:
            _build_once(spec, cfg)
        except WeightsUnavailable as exc:
            if cfg.preset == "paper" or not cfg.pretrained or cfg.train == "none":
                raise
            from rich.markup import escape

            say(f"[yellow]warning: {escape(str(exc))}[/]\n[yellow]preset {cfg.preset}: continuing with random "
                "initialisation (recorded as pretrained=False)[/]")
            cfg = replace(cfg, pretrained=False)
            _build_once(spec, cfg)
    return cfg


def _check_quick_input(spec: ModelSpec) -> None:
    """The quick preset shrinks inputs to 64x64: only for models that accept any size."""
    import torch

    from membench.params import build_meta

    size = effective(spec, "quick")[1].input_size
    try:
        with torch.no_grad():
            build_meta(spec).eval()(torch.empty(1, 3, *size, device="meta"))
    except Exception:
        raise MembenchError(f"model {spec.name} needs its own input size "
                            f"({'x'.join(map(str, spec.preprocess.input_size))}); the quick preset (64x64) "
                            "is for models that accept any size: use --preset smoke or paper") from None


def _build_once(spec: ModelSpec, cfg: RunConfig) -> None:
    ctx = BuildContext(pretrained=cfg.pretrained, init=cfg.init, options=dict(cfg.options), device="cpu")
    model = spec.builder()(ctx)
    del model


def refuse_to_discard(job_dir: Path) -> None:
    """Without --resume a job starts afresh, but never by silently deleting the checkpoints
    of an interrupted run (possibly days of training)."""
    if (job_dir / "result.json").is_file():
        return
    saved = sorted(job_dir.glob("*/last.pt"))
    if saved:
        raise MembenchError(f"an interrupted run of this job left checkpoints here ({saved[0].parent.name}/"
                            f"last.pt); add --resume to continue it, or delete the directory to start over",
                            job_dir)


@contextlib.contextmanager
def job_lock(job_dir: Path, *, wait: bool, say=None):
    """One process per job directory. The kernel drops the lock when its holder dies,
    even by SIGKILL, so no stale lock outlives a killed run."""
    import fcntl

    job_dir.parent.mkdir(parents=True, exist_ok=True)
    with open(job_dir.parent / f".{job_dir.name}.lock", "a+") as f:
        try:
            fcntl.flock(f.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            if not wait:
                raise MembenchError("another membench process is running this job (same model, data, "
                                    "split and settings) with this work directory; wait for it to "
                                    "finish, then run again with --resume", job_dir) from None
            if say:
                say(f"waiting for another membench process to finish {job_dir}")
            fcntl.flock(f.fileno(), fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(f.fileno(), fcntl.LOCK_UN)


def hardware(device_type: str) -> str:
    import platform

    if device_type == "cuda":
        import torch

        return torch.cuda.get_device_name()
    name = platform.processor() or platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                name = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    return f"{name} ({os.cpu_count()} cores)"


def environment(device_type: str) -> dict:
    import platform
    from importlib.metadata import PackageNotFoundError, version

    versions = {}
    for pkg in ("torch", "torchvision", "timm", "numpy", "scipy", "pillow"):
        try:
            versions[pkg] = version(pkg)
        except PackageNotFoundError:
            versions[pkg] = None
    return {"python": platform.python_version(), "platform": platform.platform(), "versions": versions,
            "membench": __version__, "git_commit": git_commit(), "hardware": hardware(device_type)}


def git_commit() -> str:
    import subprocess

    try:
        out = subprocess.run(["git", "rev-parse", "--short=12", "HEAD"], cwd=Path(__file__).parent,
                             capture_output=True, text=True, timeout=5)
        return out.stdout.strip() if out.returncode == 0 else "unknown"
    except (OSError, subprocess.SubprocessError):
        return "unknown"
