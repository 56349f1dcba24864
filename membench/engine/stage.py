"""One training stage of a recipe.

Per epoch: the stage's optimizer and schedule (named in the recipe, built from the tables
below), MSE or the model's own loss, validation Spearman for early stopping, `best.pt` when
validation improves and `last.pt` every epoch (atomically), so a killed run resumes at the
last finished epoch and, because every epoch's randomness is seeded from (seed, stage,
epoch), ends with the same numbers. A first Ctrl-C saves `last.pt` at the next step and
stops; the resumed run skips the batches already trained on.

A stage declared `fit="frozen-outputs"` has no epochs (`fit_frozen_stage`): the frozen
outputs of every training and validation image are computed once and the model fits its
trainable part on them itself (membench.contract.FitsFrozen), e.g. a closed-form ridge
regression on a frozen backbone's embeddings.
"""

from __future__ import annotations

import io
import math
import time
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path

from membench.contract import training_loss
from membench.engine import distributed
from membench.engine.batches import training_batches, validator
from membench.engine.checkpoints import Frugal, done_outcome, load_trained, mark_done
from membench.engine.device import Device
from membench.engine.seeds import epoch_seed, get_rng, set_rng
from membench.errors import MembenchError, StopRequested
from membench.results.metrics import mse, paper_poly_factor, spearman
from membench.spec import Preprocess, Sample, Stage
from membench.util.files import atomic_write_bytes, remove_stale_temp_files
from membench.util.testhooks import kill_point

OPTIMIZERS = {  # Stage.optimizer -> (trainable parameters, stage) -> torch optimizer
    "adam": lambda params, s: _torch().optim.Adam(params, lr=s.lr, weight_decay=s.weight_decay),
    "sgd": lambda params, s: _torch().optim.SGD(params, lr=s.lr, momentum=0.9, weight_decay=s.weight_decay),
}
SCHEDULES = {  # Stage.schedule -> stage -> learning-rate factor of epoch e (0-based)
    "paper-poly": lambda s: (lambda e: paper_poly_factor(e, s.epochs)),  # the paper's Eq. 1
    "constant": lambda s: (lambda e: 1.0),
}


def _torch():
    import torch

    return torch


@dataclass
class StageOutcome:
    epochs_run: int
    best_epoch: int  # 1-based; 0 when no epoch ran
    best_val_rho: float
    seconds: float
    history: list[dict] = field(default_factory=list)
    stopped_early: bool = False
    frozen_train_cache: int = 0  # K > 0: trained on K cached views per image (an approximation)


@dataclass
class StageState:
    """Where a stage stands: saved in last.pt (with model, optimizer and scheduler) after
    every epoch, and mid-epoch on Ctrl-C (then with `step`, `losses` and `rng`)."""

    epoch: int = 0  # epochs finished
    best_val_rho: float = -math.inf
    best_epoch: int = 0
    bad_epochs: int = 0
    history: list[dict] = field(default_factory=list)
    seconds: float = 0.0
    step: int = 0  # Ctrl-C inside an epoch: the batches of epoch `epoch` already trained on
    losses: list[float] = field(default_factory=list)
    rng: dict | None = None  # the global RNG where the interrupted epoch left it

    @classmethod
    def from_checkpoint(cls, saved: dict) -> "StageState":
        return cls(**{f.name: saved[f.name] for f in fields(cls) if f.name in saved})

    def checkpoint(self, model_entry: dict, opt, sched) -> dict:
        """last.pt: `model_entry` (membench.engine.checkpoints.Frugal.entry), optimizer,
        scheduler and this state."""
        saved = asdict(self)
        if not self.step:  # an epoch boundary: no partial epoch to describe
            del saved["step"], saved["losses"], saved["rng"]
        return {**model_entry, "optimizer": opt.state_dict(), "scheduler": sched.state_dict(), **saved}


def freeze(model, prefixes: tuple[str, ...]) -> list:
    """requires_grad=False under each prefix; returns the frozen submodules (kept in eval
    mode during training so their BatchNorm statistics stay fixed)."""
    modules = dict(model.named_modules())
    frozen = []
    for prefix in prefixes:
        if prefix not in modules:
            raise MembenchError(f"recipe freezes {prefix!r}, which is not a submodule of the model "
                                f"(top-level modules: {', '.join(n for n, _ in model.named_children())})")
        for p in modules[prefix].parameters():
            p.requires_grad_(False)
        frozen.append(modules[prefix])
    return frozen


def save_checkpoint(path: Path, obj: dict) -> None:
    import torch

    if not distributed.context().is_main:  # under torchrun, rank 0 writes for every rank
        return
    buf = io.BytesIO()
    torch.save(obj, buf)
    atomic_write_bytes(path, buf.getvalue())


def load_checkpoint(path: Path) -> dict:
    from membench.weights.safe_load import load

    if not Path(path).is_file():  # deleted by hand: saying "delete it" would loop forever
        raise MembenchError(f"checkpoint is missing (deleted?) and this stage cannot finish without it: delete "
                            f"the folder {Path(path).parent} to retrain this stage only, then run the same "
                            "command with --resume", path)
    try:
        saved = load(path)  # weights-only: a replaced file cannot run code
    except MembenchError as exc:
        raise MembenchError(f"{exc.message}; delete it to redo the part of the job it holds", path) from None
    if not isinstance(saved, dict):
        raise MembenchError("not a membench checkpoint; delete it to redo the part of the job it holds", path)
    return saved


def train_stage(model, stage: Stage, train: tuple[Sample, ...], val: tuple[Sample, ...],
                pre: Preprocess, device: Device, stage_dir: Path, *, seed: int, patience: int,
                resume: bool, progress, frozen_train_cache: int = 0, keep_last: bool = False,
                frozen_sources: dict | None = None, frugal_best: bool = True,
                model_name: str | None = None, view_seed: int | None = None, on_epoch=None) -> StageOutcome:
    """Train `model` in place for one stage; on return it holds the best epoch's weights.
    frozen_train_cache=K > 0: train on K cached views per image (membench.engine.cache.TrainViewCache),
    drawn from `view_seed` (default `seed`; the runner passes the run's seed, not the split's,
    so that an image's views are the same in every split).
    Checkpoints hold the trained part; `frozen_sources` ({name: file}) are the files the
    frozen parts came from (referenced, with their sha256). A finished stage drops last.pt
    unless `keep_last`. `frugal_best` False: best.pt holds the whole model (a later stage's
    builder reads it). `on_epoch(stage name, history entry)` is called after each validated
    epoch (the --log trackers, membench.results.trackers)."""
    if stage.fit == "frozen-outputs":
        return fit_frozen_stage(model, stage, train, val, pre, device, stage_dir, seed=seed, resume=resume,
                                progress=progress, sources=frozen_sources, frugal_best=frugal_best,
                                model_name=model_name)
    run = StageRun(model, stage, train, val, pre, device, stage_dir, seed=seed, patience=patience,
                   progress=progress, views=frozen_train_cache, keep_last=keep_last, sources=frozen_sources,
                   frugal_best=frugal_best, model_name=model_name, view_seed=view_seed)
    run.on_epoch = on_epoch
    if resume:
        finished = run.finished_earlier()
        if finished is not None:
            return finished
        run.restore()
    if run.done():
        return run.finish()
    run.open_batches()
    eta = Estimate(stage, run.state.epoch, progress)
    with CtrlC() as ctrl_c:
        for epoch in range(run.state.epoch, stage.epochs):
            run.train_epoch(epoch, ctrl_c)
            run.end_epoch(epoch, ctrl_c)
            eta.epoch_done(epoch, patience)
            if run.state.bad_epochs >= patience:
                break
    eta.close()
    return run.finish()


class Estimate:
    """How long a stage will take: a progress task over its epochs (the display's
    time-remaining column estimates from it), and after the first epoch of this process
    one printed line, which stays in logs where no progress bar is drawn."""

    def __init__(self, stage: Stage, start: int, progress):
        self.stage, self.start, self.progress = stage, start, progress
        self.started = time.perf_counter()
        self.task = progress.add_task(f"{stage.name}: epochs", total=stage.epochs, completed=start)

    def epoch_done(self, epoch: int, patience: int) -> None:
        self.progress.advance(self.task)
        left = self.stage.epochs - epoch - 1
        if epoch != self.start or left <= 0 or not distributed.context().is_main:
            return
        took = time.perf_counter() - self.started
        self.progress.console.print(
            f"{self.stage.name}: epoch {epoch + 1}/{self.stage.epochs} took {duration(took)}; the {left} epoch(s) "
            f"left take about {duration(took * left)} more (less if early stopping ends the stage: no better "
            f"validation ρ in {patience} epochs)", markup=False, highlight=False)

    def close(self) -> None:
        self.progress.remove_task(self.task)


def duration(seconds: float) -> str:
    """0.4 s, 12 s, 4.5 min, 3.2 h, 2.1 days."""
    for unit, size in (("days", 86400), ("h", 3600), ("min", 60)):
        if seconds >= 1.5 * size:
            return f"{seconds / size:.1f} {unit}"
    return f"{seconds:.1f} s" if seconds < 10 else f"{seconds:.0f} s"


class StageRun:
    """The objects one stage works with; `train_stage` is its outline."""

    def __init__(self, model, stage: Stage, train, val, pre: Preprocess, device: Device, stage_dir: Path, *,
                 seed: int, patience: int, progress, views: int, keep_last: bool = False,
                 sources: dict | None = None, frugal_best: bool = True, model_name: str | None = None,
                 view_seed: int | None = None):
        self.model, self.stage, self.train, self.val, self.pre, self.device = model, stage, train, val, pre, device
        self.seed, self.patience, self.progress, self.views = seed, patience, progress, views
        self.view_seed = seed if view_seed is None else view_seed
        self.last, self.best = stage_dir / "last.pt", stage_dir / "best.pt"
        self.frozen = freeze(model, stage.frozen)
        self.frugal, self.keep_last = Frugal(model, stage.frozen, sources, model_name), keep_last
        self.best_part = self.frugal if frugal_best else Frugal(model, (), model_name=model_name)
        trainable = [p for p in model.parameters() if p.requires_grad]
        if not trainable:
            raise MembenchError(f"stage {stage.name!r} leaves no parameter to train")
        self.opt = OPTIMIZERS[stage.optimizer](trainable, stage)
        self.sched = _torch().optim.lr_scheduler.LambdaLR(self.opt, SCHEDULES[stage.schedule](stage))
        self.state = StageState()
        self.batches = None
        self.on_epoch = None  # called with (stage name, history entry) after each validated epoch

    def restore(self) -> None:
        """Continue from last.pt, if a killed or interrupted run left one."""
        stage_dir = self.last.parent
        if stage_dir.is_dir():
            remove_stale_temp_files(stage_dir)  # a write killed half-way (the job dir is locked)
        if not self.last.is_file():
            return
        saved = load_checkpoint(self.last)
        load_trained(self.model, saved, self.last)
        self.opt.load_state_dict(saved["optimizer"])
        self.sched.load_state_dict(saved["scheduler"])
        self.state = StageState.from_checkpoint(saved)

    def done(self) -> bool:
        s = self.state
        return not s.step and (s.epoch >= self.stage.epochs or (s.epoch > 0 and s.bad_epochs >= self.patience))

    def open_batches(self) -> None:
        batch = min(self.stage.batch_size, len(self.train))
        dist = distributed.context()  # torchrun: each rank takes batch/W of the same order (DDP)
        net = distributed.wrap(self.model, dist, self.device.type)
        self.validator = validator(self.model, self.stage, self.val, self.pre, self.device, batch)
        self.batches, seconds = training_batches(
            self.model, net, self.stage, self.train, self.pre, self.device, batch=batch, seed=self.seed,
            start=self.state.epoch, dist=dist, views=self.views, view_seed=self.view_seed, progress=self.progress)
        self.state.seconds += seconds

    def train_epoch(self, epoch: int, ctrl_c: "CtrlC") -> None:
        import torch

        s, stage, progress = self.state, self.stage, self.progress
        t0 = time.perf_counter()
        skip = s.step if epoch == s.epoch else 0
        if skip:
            set_rng(s.rng, self.device.type)  # where the interrupted epoch left the global RNG
        else:
            s.losses = []
            torch.manual_seed(epoch_seed(self.seed, stage.name, epoch))
        s.step, s.rng = 0, None
        self.model.train()
        if not stage.frozen_bn_train:  # else as codes that call model.train() on everything (AMNet)
            for m in self.frozen:
                m.eval()
        task = progress.add_task(f"{stage.name} epoch {epoch + 1}/{stage.epochs}", total=len(self.train))
        for step, (x, y, _idx) in enumerate(self.batches.epoch(epoch)):
            if step < skip:  # batches the interrupted run already trained on (same order)
                progress.advance(task, len(y))
                continue
            kill_point(f"step:{stage.name}:{epoch + 1}:{step + 1}")
            if ctrl_c.pressed:  # between steps: model and optimizer are consistent here
                s.seconds += time.perf_counter() - t0
                self._stop_mid_epoch(epoch, step, task)
            self._step(x, y, epoch, step, task)
            progress.advance(task, len(y))
        progress.remove_task(task)
        s.seconds += time.perf_counter() - t0

    def _step(self, x, y, epoch: int, step: int, task) -> None:
        import torch

        with self.device.autocast():
            pred = self.batches.forward(x)
        loss = training_loss(self.model, pred.float().reshape(-1), y.to(self.device.torch).float())
        if not torch.isfinite(loss):
            self.progress.remove_task(task)
            kept = (f"the last good checkpoint is kept ({self.last}, {epoch} epoch(s) finished)"
                    if self.last.is_file() else "no epoch had finished, so there is no checkpoint")
            raise MembenchError(
                f"loss became {loss.item()} at stage {self.stage.name}, epoch {epoch + 1}, step {step + 1}; "
                f"{kept}; try a lower learning rate or check the scores", self.last.parent)
        self.opt.zero_grad(set_to_none=True)
        loss.backward()
        self.opt.step()
        self.state.losses.append(loss.item())

    def _stop_mid_epoch(self, epoch: int, step: int, task) -> None:
        s = self.state  # s.epoch == epoch: the epochs finished before this one
        s.step, s.rng = step, get_rng(self.device.type)
        save_checkpoint(self.last, s.checkpoint(self.frugal.entry(self.model), self.opt, self.sched))
        self.progress.remove_task(task)
        raise StopRequested(f"interrupted in {self.stage.name}, epoch {epoch + 1}, step {step + 1}; progress "
                            f"saved in {self.last}: run the same command with --resume to continue from there")

    def end_epoch(self, epoch: int, ctrl_c: "CtrlC") -> None:
        """Validate, keep the best weights, save last.pt; stop here if Ctrl-C was pressed."""
        s, progress = self.state, self.progress
        t0 = time.perf_counter()
        lr_used = self.opt.param_groups[0]["lr"]
        self.sched.step()
        task = progress.add_task(f"{self.stage.name} validation", total=len(self.val))
        val_pred = self.validator.predict(self.model, progress=lambda n: progress.advance(task, n))
        progress.remove_task(task)
        truth = [v.score for v in self.val]
        val_rho, val_mse = spearman(val_pred, truth), mse(val_pred, truth)
        s.seconds += time.perf_counter() - t0
        s.history.append({"epoch": epoch + 1, "lr": lr_used, "train_loss": _mean(s.losses),
                          "val_rho": val_rho, "val_mse": val_mse})
        if self.on_epoch is not None:
            self.on_epoch(self.stage.name, s.history[-1])
        score = val_rho if math.isfinite(val_rho) else -math.inf
        if score > s.best_val_rho or s.best_epoch == 0:
            s.best_val_rho, s.best_epoch, s.bad_epochs = score, epoch + 1, 0
            save_checkpoint(self.best, {**self.best_part.entry(self.model), "epoch": epoch + 1, "val_rho": val_rho})
        else:
            s.bad_epochs += 1
        kill_point(f"checkpoint:{self.stage.name}:{epoch + 1}")
        s.epoch = epoch + 1
        save_checkpoint(self.last, s.checkpoint(self.frugal.entry(self.model), self.opt, self.sched))
        if ctrl_c.pressed:
            raise StopRequested(f"interrupted after {self.stage.name} epoch {epoch + 1}; progress saved in "
                                f"{self.last}: run the same command with --resume to continue from there")

    def finish(self) -> StageOutcome:
        """Load the best epoch's weights and describe the stage."""
        s = self.state
        distributed.barrier(distributed.context())  # rank 0 has written best.pt
        load_trained(self.model, load_checkpoint(self.best), self.best)
        outcome = StageOutcome(epochs_run=s.epoch, best_epoch=s.best_epoch, best_val_rho=s.best_val_rho,
                               seconds=s.seconds, history=s.history, stopped_early=s.bad_epochs >= self.patience,
                               frozen_train_cache=self.views)
        if distributed.context().is_main:  # the stage is done: best.pt and its outcome are enough to resume
            mark_done(self.last.parent, asdict(outcome))
            if not self.keep_last:
                self.last.unlink(missing_ok=True)
        return outcome

    def finished_earlier(self) -> StageOutcome | None:
        """A stage that finished in an earlier (killed) run of this job: its best weights."""
        return finished_outcome(self.model, self.last.parent, self.best)


def finished_outcome(model, stage_dir: Path, best: Path) -> StageOutcome | None:
    """The outcome of a stage that finished in an earlier run of this job, its best weights
    loaded into `model`; None when it did not finish."""
    outcome = done_outcome(stage_dir)
    if outcome is None:
        return None
    unknown = sorted(set(outcome) - {f.name for f in fields(StageOutcome)})
    if unknown:  # written by another membench version, or edited
        raise MembenchError(f"the finished stage's record has unknown fields ({', '.join(unknown)}); delete the "
                            f"folder {stage_dir} to retrain this stage only, then run the same command "
                            "with --resume", stage_dir / "stage.json")
    load_trained(model, load_checkpoint(best), best)
    return StageOutcome(**outcome)


def fit_frozen_stage(model, stage: Stage, train: tuple[Sample, ...], val: tuple[Sample, ...], pre: Preprocess,
                     device: Device, stage_dir: Path, *, seed: int, resume: bool, progress,
                     sources: dict | None = None, frugal_best: bool = True,
                     model_name: str | None = None) -> StageOutcome:
    """A `fit="frozen-outputs"` stage: the frozen outputs of every training and validation
    image, computed once with the evaluation transform (through the feature store when one
    is active: an image is embedded once for all splits and runs), then the model's own
    `fit_frozen`; best.pt holds what it fitted. Training images are not augmented: a fit
    that sees each image once sees it as it will be tested."""
    import torch

    from membench.contract import fits_frozen
    from membench.engine.device import unwrap

    best = stage_dir / "best.pt"
    finished = finished_outcome(model, stage_dir, best) if resume else None
    if finished is not None:
        return finished
    if not fits_frozen(model):
        raise MembenchError(f"stage {stage.name!r} is declared fit='frozen-outputs', but the model has no "
                            "frozen_outputs/from_frozen/fit_frozen (see membench.contract)")
    freeze(model, stage.frozen)
    t0 = time.perf_counter()
    caches = {part: _frozen_outputs(model, samples, part, stage, pre, device, progress)
              for part, samples in (("train", train), ("val", val))}

    def scores(samples):
        return torch.tensor([s.score for s in samples], dtype=torch.float64)

    torch.manual_seed(epoch_seed(seed, stage.name, 0))  # an iterative fit (an MLP head) draws from here
    record = unwrap(model).fit_frozen(caches["train"].outputs, scores(train), caches["val"].outputs, scores(val))
    val_pred = caches["val"].predict(model)
    truth = [v.score for v in val]
    val_rho, val_mse = spearman(val_pred, truth), mse(val_pred, truth)
    part = Frugal(model, stage.frozen, sources, model_name) if frugal_best else Frugal(model, (), model_name=model_name)
    save_checkpoint(best, {**part.entry(model), "epoch": 1, "val_rho": val_rho})
    outcome = StageOutcome(epochs_run=1, best_epoch=1, best_val_rho=val_rho, seconds=time.perf_counter() - t0,
                           history=[{"epoch": 1, "fit": "frozen-outputs", **(record or {}), "val_rho": val_rho,
                                     "val_mse": val_mse}])
    if distributed.context().is_main:
        mark_done(stage_dir, asdict(outcome))
    return outcome


def _frozen_outputs(model, samples, part: str, stage: Stage, pre: Preprocess, device: Device, progress):
    from membench.engine.cache import FrozenCache

    cache = FrozenCache(samples, pre, device, batch_size=max(stage.batch_size, 32), store="cpu")
    task = progress.add_task(f"{stage.name}: frozen outputs of the {len(samples)} {part} images", total=len(samples))
    cache.build(model, progress=lambda n: progress.advance(task, n))
    progress.remove_task(task)
    if cache.outputs is None:
        raise MembenchError(f"stage {stage.name!r}: the frozen outputs of the {part} images do not fit in memory "
                            "(over 16 GiB), so they cannot be fitted on at once")
    return cache


class CtrlC:
    """While training, the first Ctrl-C only sets `pressed`: the loop then saves a
    checkpoint at the next step boundary and stops. A second Ctrl-C stops at once (the
    last saved checkpoint stays valid, every write being atomic). DataLoader workers forked
    inside the block inherit the handler, so they keep serving batches until the stop."""

    def __init__(self):
        self.pressed = False
        self._previous = None

    def __enter__(self):
        import signal
        import threading

        if threading.current_thread() is threading.main_thread():
            self._previous = signal.signal(signal.SIGINT, self._handle) or signal.default_int_handler
        return self

    def _handle(self, signum, frame):
        if self.pressed:
            raise KeyboardInterrupt
        self.pressed = True

    def __exit__(self, *exc_info):
        import signal

        if self._previous is not None:
            signal.signal(signal.SIGINT, self._previous)
        return False


def _mean(xs: list[float]) -> float:
    return sum(xs) / len(xs) if xs else math.nan
