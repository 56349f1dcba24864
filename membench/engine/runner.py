"""The protocol runner: orchestration only. Prepare (check every image once), run each
(model, split) job, chain stages that train another model, record the result.

What a job is (configuration, presets, key, lock) lives in membench.engine.job, how a stage
trains in membench.engine.stage, what a row records in membench.engine.provenance; see
docs/architecture.md for one image's way through them.
Chained stages (Stage.model) run, or reuse, the upstream model's job on the same split.
"""

from __future__ import annotations

import contextlib
import math
import time
from dataclasses import asdict, dataclass, replace
from pathlib import Path

from membench import __version__, registry
from membench.data.images import apply_policy, check_images
from membench.engine import distributed
from membench.engine import stage as stage_engine
from membench.engine.checkpoints import (
    checkpoint_gone,
    frozen_sources,
    is_frugal,
    load_trained,
    remove_checkpoints,
    where_now,
)
from membench.engine.device import resolve_device
from membench.engine.device import resolve_precision as precision_for
from membench.engine.inference import predict
from membench.engine.job import (  # noqa: F401  (RunConfig, PRESETS: part of this module's interface)
    PRESETS,
    RunConfig,
    effective,
    job_key,
    job_lock,
    read_result,
    refuse_to_discard,
    subset,
    write_result,
)
from membench.engine.provenance import git_commit, hardware, run_provenance
from membench.engine.seeds import epoch_seed
from membench.engine.stage import load_checkpoint
from membench.errors import MembenchError, WeightsUnavailable
from membench.results import identity
from membench.results.leaderboard import add_result, check_predictions, valid_rows
from membench.results.metrics import mse, rho_note, spearman
from membench.results.trackers import check_installed, job_log, parse
from membench.spec import BuildContext, ModelSpec, Split
from membench.util.files import check_writable, refuse_links, remove_own_tree
from membench.util.testhooks import kill_point
from membench.weights import files_loaded, released


@dataclass
class JobResult:
    row: dict
    checkpoint: Path | None
    provenance: dict | None = None  # the run JSON (a chained stage records its upstream's recipe from it)


def usable(split: Split, bad: set, root) -> Split:
    """`split` without the images the check found bad (--on-bad-image skip); every part must
    keep at least 2 images."""
    if bad:
        keep = lambda part: tuple(s for s in part if str(s.path) not in bad)  # noqa: E731
        split = Split(split.index, keep(split.train), keep(split.val), keep(split.test))
    for part, samples in split.parts().items():
        if len(samples) < 2:
            raise MembenchError(f"split {split.index} has fewer than 2 usable {part} images", root)
    return split


class Runner:
    """Runs jobs for one invocation; `progress` is a rich Progress (or compatible)."""

    def __init__(self, dataset, cfg: RunConfig, progress, console=None):
        identity.pin_source_state()
        self.dataset = dataset
        self.cfg = cfg
        self.progress = progress
        self.console = console
        self.device = resolve_device(cfg.device, cfg.workers, compile=cfg.compile,
                                     precision="fp32" if cfg.precision == "fp32" else "bf16")
        self.dist = distributed.init(self.device.type)  # torchrun: one job over several processes
        self.done: dict[str, JobResult] = {}
        self._splits: dict[int, Split] = {}  # loaded, subset and checked once (prepare)
        self.finished_dirs: dict[str, Path] = {}  # job memo -> directory, until its checkpoints are released

    def say(self, text: str) -> None:
        if self.console is not None:
            self.console.print(text)

    # -- data -------------------------------------------------------------------------
    def prepare(self, splits: list[int]) -> None:
        """Read every requested split file and decode every image they list (each image
        once) before anything trains: a bad file stops the run now, not after hours. Each
        split is loaded and checked here once; its jobs and their stages reuse it."""
        splits = [k for k in splits if k not in self._splits]
        if not splits:
            return
        loaded = {k: subset(self.dataset.load_split(k), self.cfg.preset) for k in splits}
        every = [s for split in loaded.values() for part in split.parts().values() for s in part]
        task = self.progress.add_task(f"checking images of split(s) {', '.join(map(str, splits))}",
                                      total=len({s.path for s in every}))
        check = check_images(every, progress=lambda n: self.progress.advance(task, n))
        self.progress.remove_task(task)
        apply_policy(check, self.cfg.on_bad_image)
        if check.bad:
            self.say(f"[yellow]skipping {len(check.bad)} missing or corrupt images (--on-bad-image skip)[/]")
        from rich.markup import escape

        for note in check.notes():  # conversions to RGB, EXIF rotation tags (each image named once)
            self.say(escape(note))
        for k, split in loaded.items():
            self._splits[k] = usable(split, check.bad, self.dataset.root)

    def split(self, k: int) -> Split:
        if k not in self._splits:
            self.prepare([k])
        return self._splits[k]

    # -- jobs -------------------------------------------------------------------------
    def run(self, spec: ModelSpec, k: int, reuse_finished: bool = False, cfg: RunConfig | None = None) -> JobResult:
        """Run one job (with `cfg`, by default this invocation's). A finished job is reused
        with --resume, and always when it is an upstream stage (a finished stage 1 is never
        retrained for a later stage 2)."""
        cfg = (cfg or self.cfg).for_model(spec)  # only the options this model declares
        key = job_key(spec, self.dataset, cfg)
        memo = f"{key}/{k}"
        if memo in self.done:
            return self.done[memo]
        job_dir = cfg.work_dir / key / f"split{k}"
        refuse_links(job_dir, cfg.work_dir)  # never read, write or delete through a link
        # torchrun: rank 0 locks and writes; the other ranks of the same job follow it
        lock = job_lock(job_dir, wait=reuse_finished, say=self.say) if self.dist.is_main else contextlib.nullcontext()
        with lock:
            if reuse_finished and self.dist.is_main and checkpoint_gone(job_dir):
                self.say(f"{spec.name} split {k}: finished earlier, but its checkpoints were removed after "
                         "that run (smoke/quick preset): running it again")
                remove_own_tree(job_dir, cfg.work_dir)
            if (cfg.resume or reuse_finished) and (job_dir / "result.json").is_file():
                result = self._reuse(spec, k, key, job_dir)
            else:
                if not cfg.resume and job_dir.exists() and self.dist.is_main:
                    refuse_to_discard(job_dir)
                    remove_own_tree(job_dir, cfg.work_dir)
                distributed.barrier(self.dist)
                result = self._run_job(spec, k, key, job_dir, cfg, chained=reuse_finished)
        self.done[memo] = result
        self.finished_dirs[memo] = job_dir
        return result

    def release(self, pending: list[tuple[ModelSpec, int]]) -> None:
        """Smoke and quick presets keep no checkpoints after success (unless --keep-checkpoints):
        drop those of every finished job that no pending job of this invocation needs."""
        if PRESETS[self.cfg.preset].keeps_checkpoints or self.cfg.keep_checkpoints or not self.dist.is_main:
            return
        needed = {memo for spec, k in pending for memo in self._upstream_memos(spec, k, self.cfg)}
        for memo in [m for m in self.finished_dirs if m not in needed]:
            remove_checkpoints(self.finished_dirs.pop(memo))

    def _upstream_memos(self, spec: ModelSpec, k: int, cfg: RunConfig) -> set[str]:
        out = set()
        for stage in effective(spec, cfg.preset)[0]:
            if stage.model:
                upstream, ucfg = registry.get_model(stage.model), cfg.upstream()
                out |= {f"{job_key(upstream, self.dataset, ucfg)}/{k}"} | self._upstream_memos(upstream, k, ucfg)
        return out

    def _reuse(self, spec: ModelSpec, k: int, key: str, job_dir: Path) -> JobResult:
        saved = read_result(job_dir / "result.json")  # checked: damage is one line naming it
        self.say(f"{spec.name} split {k}: finished earlier, reusing ({job_dir})")
        result = JobResult(saved["row"], where_now(job_dir, saved["checkpoint"]), saved.get("provenance"))
        if self.dist.is_main:
            add_result(self.cfg.out, result.row, [tuple(p) for p in saved["predictions"]], saved["provenance"])
        return result

    def _run_job(self, spec: ModelSpec, k: int, key: str, job_dir: Path, cfg: RunConfig,
                 chained: bool = False) -> JobResult:
        import torch

        started = time.time()
        files_loaded.begin_job()  # collects the weight files this job loads (sha256 in its run JSON)
        split = self.split(k)
        stages, pre = effective(spec, cfg.preset)
        ctx = BuildContext(pretrained=cfg.pretrained, init=cfg.init, options=dict(cfg.options), device="cpu")
        train_mode = cfg.train if spec.trainable else "none"
        authors = released.uses_released(spec, train_mode, cfg.checkpoint)  # their weights, their transform
        if authors and authors.release.preprocess:
            pre = authors.release.preprocess
        outcomes: dict[str, dict] = {}
        model = checkpoint = None
        with job_log(cfg.log if self.dist.is_main else (), key, spec.name, self.dataset.name, k) as log:
            if train_mode == "full":
                model, checkpoint = self._train(spec, k, split, stages, pre, ctx, job_dir, cfg, outcomes, chained,
                                                on_epoch=log.epoch)
            if model is None:  # evaluate only (or a recipe made only of chained stages)
                model, checkpoint = self._evaluation_model(spec, k, ctx, cfg, train_mode, authors)
            task = self.progress.add_task(f"{spec.name} split {k}: test", total=len(split.test))
            preds = predict(model, split.test, pre, self.device, batch_size=32,
                            progress=lambda n: self.progress.advance(task, n))
            self.progress.remove_task(task)
            row = self._row(spec, k, key, cfg, split, preds, model, outcomes, train_mode, started)
            predictions = [(s.name, s.score, float(p)) for s, p in zip(split.test, preds)]
            provenance = run_provenance(spec, self.dataset, cfg, key, stages, pre, outcomes, self.device.type)
            if authors:
                provenance["released_weights"] = authors.provenance(k)
                row["notes"] = "; ".join(filter(None, [f"weights={authors.label}", row.get("notes")]))
            identity.record(row, provenance, spec=spec, cfg=cfg, device=self.device, dataset=self.dataset,
                            stages=stages, outcomes=outcomes, train_mode=train_mode)
            log.finish(row)
        result = JobResult(row, checkpoint, provenance)
        check_predictions(row, predictions)  # non-finite (NaN weights): an error before anything is written
        if self.dist.is_main:
            write_result(job_dir, row, checkpoint, predictions, provenance, leaderboard=self.cfg.out)
        kill_point(f"result-saved:{spec.name}:{k}")
        if self.dist.is_main:
            add_result(self.cfg.out, row, predictions, provenance)
        del model
        if self.device.type == "cuda":
            torch.cuda.empty_cache()
        return result

    def _train(self, spec, k, split, stages, pre, ctx, job_dir, cfg, outcomes, chained=False, on_epoch=None):
        """Every stage of the recipe in order; returns the trained model (None when every
        stage is chained) and its best checkpoint. Only the final stage of a job that no
        other model builds on keeps a frugal best.pt: builders read a whole state_dict."""
        from membench.engine.cache import train_views

        model = None
        for i, stage in enumerate(stages):
            if stage.model:
                outcomes[stage.name] = self._chain(stage, k, ctx, cfg)
                kill_point(f"stage-done:{spec.name}:{stage.name}:{k}")
                continue
            model = self.device.prepare(self._build(spec, ctx, k, stage.name, cfg))
            self.say(f"{spec.name} split {k}: {stage.name} " + (
                "(fitted by the model on the frozen outputs of the training images)" if stage.fit == "frozen-outputs"
                else f"({stage.epochs} epochs, batch {stage.batch_size}, lr {stage.lr:g})"))
            views, ignored = train_views(model, stage, cfg.frozen_train_cache)
            if ignored:
                self.say(f"[yellow]warning: {spec.name}: {ignored}[/]")
            outcome = stage_engine.train_stage(
                model, stage, split.train, split.val, pre, self.device, job_dir / stage.name, seed=cfg.seed + k,
                patience=stage.patience or cfg.patience, resume=cfg.resume, progress=self.progress,
                frozen_train_cache=views, keep_last=cfg.keep_last, frozen_sources=dict(ctx.upstream),
                frugal_best=i == len(stages) - 1 and not chained, model_name=spec.name, view_seed=cfg.seed,
                on_epoch=on_epoch)
            outcomes[stage.name] = asdict(outcome)
            kill_point(f"stage-done:{spec.name}:{stage.name}:{k}")
            if i < len(stages) - 1:
                ctx.upstream[stage.name] = job_dir / stage.name / "best.pt"
        return model, (job_dir / stages[-1].name / "best.pt" if model is not None else None)

    def _chain(self, stage, k: int, ctx: BuildContext, cfg: RunConfig) -> dict:
        """A stage that trains another model: that model's own job (run or reused) on this split."""
        upstream = self.run(registry.get_model(stage.model), k, reuse_finished=True, cfg=cfg.upstream())
        if upstream.checkpoint and is_frugal(upstream.checkpoint):
            raise MembenchError(f"{stage.model}'s checkpoint holds only its trained part (it was run on its own), "
                                f"so {stage.name} cannot build on it; delete the folder {upstream.checkpoint.parent.parent} "
                                "and run again: chained, it keeps a whole best.pt", upstream.checkpoint)
        ctx.upstream[stage.name] = upstream.checkpoint
        # the recipe stage 1 actually executed is the upstream job's own (batch, lr, epochs)
        return {"model": stage.model, "run_id": upstream.row["run_id"],
                "recipe": (upstream.provenance or {}).get("recipe")}

    def _evaluation_model(self, spec, k, ctx, cfg, train_mode, authors=None):
        if authors and not authors.release.part:  # it replaces every tensor: no ImageNet or other weights needed
            ctx = replace(ctx, pretrained=False)
        sources = frozen_sources(cfg.checkpoint) if cfg.checkpoint else None
        frugal = sources is not None
        if frugal:  # its frozen parts come from the files it names
            ctx.upstream.update(sources)
        model = self.device.prepare(self._build(spec, ctx, k, "evaluate", cfg))
        if frugal:  # the trained part; frozen parts rebuilt and checked
            load_trained(model, load_checkpoint(cfg.checkpoint), cfg.checkpoint)
        elif cfg.checkpoint:  # strictly, or one line naming the model the checkpoint belongs to
            from membench.weights.checkpoint_check import load_into

            load_into(model, spec.name, cfg.checkpoint)
        elif authors:
            authors.load_into(model, k)
            self.say(f"{spec.name} split {k}: {authors.label}, checkpoint {authors.checkpoint(k)[1]['member']}")
        elif train_mode == "none" and not cfg.pretrained:
            raise MembenchError(f"--train none with --pretrained none would evaluate random weights of "
                                f"{spec.name}; give --checkpoint FILE or use pretrained weights")
        return model, cfg.checkpoint

    def _build(self, spec: ModelSpec, ctx: BuildContext, k: int, stage: str, cfg: RunConfig):
        """Random initialisation is seeded by (seed, split, model, stage), not by whatever
        ran earlier in this process, so a resumed run builds the same model."""
        import torch

        torch.manual_seed(epoch_seed(cfg.seed + k, f"build:{spec.name}:{stage}", 0))
        return spec.builder()(ctx)

    def _row(self, spec, k, key, cfg, split, preds, model, outcomes, train_mode, started) -> dict:
        """The leaderboard row of one job (columns: membench.results.leaderboard.RESULT_COLUMNS)."""
        from membench.results.params import count

        truth = [s.score for s in split.test]
        counts = count(spec, cfg.options)  # the configuration that ran (a width option changes the count)
        last_stage = next((o for o in reversed(list(outcomes.values())) if "epochs_run" in o), {})
        best_val_rho = last_stage.get("best_val_rho")
        approximations = [f"frozen_train_cache={o['frozen_train_cache']} (approximation)"
                          for o in outcomes.values() if o.get("frozen_train_cache")]
        return {
            "run_id": key, "model": spec.name, "dataset": self.dataset.name, "split": k,
            "trained_on": self.dataset.name if train_mode == "full" else "",  # "": released weights
            "rho": spearman(preds, truth), "mse": mse(preds, truth), "n_test": len(split.test),
            "params_total": counts["total"], "params_used": counts["used"],
            "params_trainable": sum(p.numel() for p in model.parameters() if p.requires_grad),
            "preset": cfg.preset, "train_mode": train_mode,
            "init": (cfg.init if cfg.pretrained else "random") if train_mode == "full" else "",
            "pretrained": cfg.pretrained,
            "epochs_run": last_stage.get("epochs_run", 0), "best_epoch": last_stage.get("best_epoch", 0),
            "best_val_rho": best_val_rho if best_val_rho is None or math.isfinite(best_val_rho) else None,
            "device": self.device.type, "hardware": hardware(self.device.type),
            "seconds": round(time.time() - started, 2), "seed": cfg.seed,
            "git_commit": git_commit(), "membench_version": __version__,
            "timestamp": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
            "data_fingerprint": self.dataset.fingerprint(),
            "notes": "; ".join([f"{k_}={v}" for k_, v in sorted(cfg.options.items())] + approximations[:1]
                               + [n for n in (rho_note(preds, truth),) if n]),  # why rho is nan, if it is
        }


def run_all(specs: list[ModelSpec], dataset, splits: list[int], cfg: RunConfig, console=None) -> list[dict]:
    """Every (model, split) job in order, with rich progress; returns the leaderboard rows."""
    from rich.progress import (
        BarColumn,
        MofNCompleteColumn,
        Progress,
        TextColumn,
        TimeElapsedColumn,
        TimeRemainingColumn,
    )

    cfg = resolve_precision(cfg)
    check_installed(parse(cfg.log))  # --log tensorboard without tensorboard: now, not after an epoch
    cfg = preflight(specs, cfg, say=(console.print if console else print))
    for spec in specs:  # per-split released weights must cover every requested split, before any job
        authors = released.uses_released(spec, cfg.train if spec.trainable else "none", cfg.checkpoint)
        for k in splits if authors else ():
            authors.checkpoint(k)
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
        pending = [(spec, k) for spec in specs for k in splits]
        while pending:
            spec, k = pending.pop(0)
            rows.append(runner.run(spec, k).row)
            runner.release(pending)  # smoke/quick: checkpoints nothing pending needs are removed
            progress.advance(overall)
            kill_point(f"job-done:{spec.name}:{k}")
    return rows


def resolve_precision(cfg: RunConfig) -> RunConfig:
    """`--precision` checked against the run's device before any job key: fp32 (the default)
    everywhere, bf16 autocast only on CUDA (refused on the CPU)."""
    if cfg.precision == "fp32":
        return cfg
    device = cfg.device
    if device not in ("cpu", "cuda"):
        import torch

        device = "cuda" if torch.cuda.is_available() else "cpu"
    return replace(cfg, precision=precision_for(cfg.precision, device))


def preflight(specs: list[ModelSpec], cfg: RunConfig, say) -> RunConfig:
    """Build every model once before anything trains, so that missing weights or a missing
    captioner stop the run now rather than after stage 1 (days on real data).

    The smoke and quick presets only check plumbing: there, weights that are not on this
    machine mean random initialisation instead (warned, and recorded as pretrained=False
    in every row). The paper preset never falls back."""
    for spec in specs:
        if PRESETS[cfg.preset].small_inputs:
            _check_small_input(spec, cfg.preset)
        if cfg.train == "none" and cfg.checkpoint:
            continue
        authors = released.uses_released(spec, cfg.train if spec.trainable else "none", cfg.checkpoint)
        if authors and not authors.release.part:
            continue  # installed (else it raised, saying how to install them); they replace every tensor
        try:
            _build_once(spec, cfg.for_model(spec))
        except WeightsUnavailable as exc:
            if cfg.preset == "paper" or not cfg.pretrained or cfg.train == "none":
                raise
            from rich.markup import escape

            say(f"[yellow]warning: {escape(str(exc))}[/]\n[yellow]preset {cfg.preset}: continuing with random "
                "initialisation (recorded as pretrained=False)[/]")
            cfg = replace(cfg, pretrained=False)
            _build_once(spec, cfg.for_model(spec))
    return cfg


def _check_small_input(spec: ModelSpec, preset: str) -> None:
    """The quick and cpu presets shrink inputs to 64x64: only for models that accept any size."""
    import torch

    from membench.results.params import build_meta

    size = effective(spec, preset)[1].input_size
    try:
        with torch.no_grad():
            build_meta(spec).eval()(torch.empty(1, 3, *size, device="meta"))
    except Exception:
        raise MembenchError(f"model {spec.name} needs its own input size "
                            f"({'x'.join(map(str, spec.preprocess.input_size))}); the {preset} preset (64x64) "
                            "is for models that accept any size: use --preset smoke or paper") from None


def _build_once(spec: ModelSpec, cfg: RunConfig) -> None:
    ctx = BuildContext(pretrained=cfg.pretrained, init=cfg.init, options=dict(cfg.options), device="cpu")
    model = spec.builder()(ctx)
    del model
