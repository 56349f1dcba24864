"""Executing one training stage of a recipe, and evaluating a model on a list of images.

Per epoch: Adam (or SGD) with the paper's Eq. 1 decay, MSE (or the model's own loss),
validation Spearman for early stopping, `best.pt` when validation improves and `last.pt`
every epoch (atomically), so a killed run resumes at the last finished epoch and, because
every epoch's randomness is seeded from (seed, stage, epoch), ends with the same numbers.
"""

from __future__ import annotations

import io
import math
import time
from dataclasses import dataclass, field
from pathlib import Path

from membench.errors import MembenchError, StopRequested
from membench.leaderboard import atomic_write_bytes, remove_stale_temp_files
from membench.metrics import mse, paper_poly_factor, spearman
from membench.spec import Preprocess, Sample, Stage
from membench.testhooks import kill_point


@dataclass
class Device:
    """Where and how tensors run: bf16 autocast and channels_last only on CUDA."""

    type: str  # "cpu" or "cuda"
    workers: int = 0
    compile: bool = False  # torch.compile (CUDA graphs on cuda: small batches are launch-bound)

    @property
    def torch(self):
        import torch

        return torch.device(self.type)

    @property
    def amp(self) -> bool:
        return self.type == "cuda"

    def autocast(self):
        import contextlib

        import torch

        if self.amp:
            return torch.autocast("cuda", dtype=torch.bfloat16)
        return contextlib.nullcontext()

    def prepare(self, model):
        import torch

        model = model.to(self.torch)
        if self.type == "cuda":
            model = model.to(memory_format=torch.channels_last)
        if self.compile:  # in place: state_dict keys and custom methods stay as they are
            model.compile(mode="reduce-overhead" if self.type == "cuda" else None)
        return model

    def batch(self, x, normalizer):
        import torch

        x = x.to(self.torch, non_blocking=True)
        x = normalizer(x)
        if self.type == "cuda":
            x = x.contiguous(memory_format=torch.channels_last)
        return x


def resolve_device(name: str, workers: int | None = None, compile: bool = False) -> Device:
    import os

    import torch

    if name == "auto":
        name = "cuda" if torch.cuda.is_available() else "cpu"
    if name not in ("cpu", "cuda"):
        raise MembenchError(f"--device must be auto, cpu or cuda, not {name!r}")
    if name == "cuda" and not torch.cuda.is_available():
        raise MembenchError("--device cuda was asked for but no CUDA device is available")
    if workers is None:
        workers = min(8, os.cpu_count() or 1) if name == "cuda" else 0
    return Device(type=name, workers=workers, compile=compile)


@dataclass
class StageOutcome:
    epochs_run: int
    best_epoch: int  # 1-based; 0 when no epoch ran
    best_val_rho: float
    seconds: float
    history: list[dict] = field(default_factory=list)
    stopped_early: bool = False
    frozen_train_cache: int = 0  # K > 0: trained on K cached views per image (an approximation)


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


def epoch_seed(seed: int, stage: str, epoch: int) -> int:
    import zlib

    return (seed * 1_000_003 + zlib.crc32(stage.encode()) * 101 + epoch) % (2**31 - 1)


def compute_loss(model, pred, target):
    import torch.nn.functional as F

    if hasattr(model, "loss"):
        return model.loss(pred, target)
    return F.mse_loss(pred.float(), target.float())


def predict(model, samples: tuple[Sample, ...], pre: Preprocess, device: Device,
            batch_size: int, progress=None, seed: int = 0):
    """Scores for `samples` in order (evaluation transform, no augmentation)."""
    import numpy as np
    import torch

    from membench.loader import make_loader
    from membench.transforms import Normalizer, eval_transform

    loader = make_loader(samples, eval_transform(pre), batch_size=batch_size, shuffle=False,
                         workers=device.workers, seed=seed, device_type=device.type)
    normalizer = Normalizer(pre, channels_last=device.type == "cuda")
    out = np.empty(len(samples), dtype=np.float64)
    model.eval()
    with torch.inference_mode(), device.autocast():
        for x, _y, idx in loader:
            pred = model(device.batch(x, normalizer)).float().reshape(-1)
            out[idx.numpy()] = pred.cpu().numpy()
            if progress:
                progress(len(idx))
    return out


def save_checkpoint(path: Path, obj: dict) -> None:
    import torch

    from membench.distributed import context

    if not context().is_main:  # under torchrun, rank 0 writes for every rank
        return
    buf = io.BytesIO()
    torch.save(obj, buf)
    atomic_write_bytes(path, buf.getvalue())


def load_checkpoint(path: Path) -> dict:
    import torch

    try:
        return torch.load(path, map_location="cpu", weights_only=False)
    except Exception as exc:
        raise MembenchError(f"cannot read checkpoint ({type(exc).__name__}); delete it to redo the part of "
                            "the job it holds", path) from None


def train_stage(model, stage: Stage, train: tuple[Sample, ...], val: tuple[Sample, ...],
                pre: Preprocess, device: Device, stage_dir: Path, *, seed: int, patience: int,
                resume: bool, progress, frozen_train_cache: int = 0) -> StageOutcome:
    """Train `model` in place for one stage; on return it holds the best epoch's weights.
    frozen_train_cache=K > 0: train on K cached views per image (membench.cache.TrainViewCache)."""
    import torch

    from membench import distributed
    from membench.cache import FrozenCache, TrainViewCache, supports
    from membench.loader import make_loader
    from membench.transforms import Normalizer, train_transform

    frozen = freeze(model, stage.frozen)
    trainable = [p for p in model.parameters() if p.requires_grad]
    if not trainable:
        raise MembenchError(f"stage {stage.name!r} leaves no parameter to train")
    if stage.optimizer == "adam":
        opt = torch.optim.Adam(trainable, lr=stage.lr, weight_decay=stage.weight_decay)
    else:
        opt = torch.optim.SGD(trainable, lr=stage.lr, momentum=0.9, weight_decay=stage.weight_decay)
    if stage.schedule == "paper-poly":
        sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda e: paper_poly_factor(e, stage.epochs))
    else:
        sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda e: 1.0)

    last, best = stage_dir / "last.pt", stage_dir / "best.pt"
    start, best_rho, best_epoch, bad_epochs, history, seconds = 0, -math.inf, 0, 0, [], 0.0
    done_steps, done_losses, rng = 0, [], None  # a Ctrl-C checkpoint stops inside an epoch
    if resume and stage_dir.is_dir():
        remove_stale_temp_files(stage_dir)  # a write killed half-way (the job dir is locked)
    if resume and last.is_file():
        state = load_checkpoint(last)
        model.load_state_dict(state["model"])
        opt.load_state_dict(state["optimizer"])
        sched.load_state_dict(state["scheduler"])
        start, best_rho, best_epoch = state["epoch"], state["best_val_rho"], state["best_epoch"]
        bad_epochs, history, seconds = state["bad_epochs"], state["history"], state["seconds"]
        done_steps, done_losses, rng = state.get("step", 0), state.get("losses", []), state.get("rng")
    if not done_steps and (start >= stage.epochs or (start and bad_epochs >= patience)):
        return _finish(model, best, stage, start, best_epoch, best_rho, seconds, history, bad_epochs >= patience,
                       frozen_train_cache)

    normalizer = Normalizer(pre, channels_last=device.type == "cuda")
    transform = train_transform(pre)
    batch = min(stage.batch_size, len(train))
    dist = distributed.context()  # torchrun: each rank takes batch/W of the same order (DDP)
    net = distributed.wrap(model, dist, device.type)
    # frozen submodules see the same validation inputs every epoch: compute them once (exact)
    val_cache = FrozenCache(val, pre, device, batch_size=max(batch, 32)) if stage.frozen and supports(model) else None

    def state(epoch: int, **extra) -> dict:
        return {"model": model.state_dict(), "optimizer": opt.state_dict(), "scheduler": sched.state_dict(),
                "epoch": epoch, "best_val_rho": best_rho, "best_epoch": best_epoch,
                "bad_epochs": bad_epochs, "history": history, "seconds": seconds, **extra}

    views = None
    if frozen_train_cache:  # built again after a resume: its views are seeded, so identical
        if dist.world_size > 1:
            raise MembenchError("--frozen-train-cache is not supported under torchrun (DDP); use it in one process")
        t_views = time.perf_counter()
        views = TrainViewCache(train, pre, device, frozen_train_cache, stage.name, seed, batch_size=max(batch, 64))
        vtask = progress.add_task(f"{stage.name}: {frozen_train_cache} cached training views",
                                  total=len(train) * frozen_train_cache)
        views.build(model, progress=lambda n: progress.advance(vtask, n))
        progress.remove_task(vtask)
        seconds += time.perf_counter() - t_views
    # One loader for the whole stage, so persistent workers survive from epoch to epoch.
    loader = None if views else make_loader(
        train, transform, batch_size=dist.local_batch(batch), shuffle=True, workers=device.workers,
        seed=epoch_seed(seed, stage.name, 0), epoch=start, device_type=device.type, rank=dist.rank,
        world_size=dist.world_size)
    with _CtrlC() as ctrl_c:
        for epoch in range(start, stage.epochs):
            t0 = time.perf_counter()
            skip, losses = (done_steps, list(done_losses)) if epoch == start else (0, [])
            if skip:
                _set_rng(rng, device)  # where the interrupted epoch left the global RNG
            else:
                torch.manual_seed(epoch_seed(seed, stage.name, epoch))
            if views:  # view (epoch mod K) of each image, in this epoch's shuffled order
                batches = views.batches(epoch, batch, shuffle_seed=epoch_seed(seed, stage.name, 0))
            else:
                loader.set_epoch(epoch)  # shuffle and augmentation of this epoch, as in an unbroken run
                batches = loader
            model.train()
            for m in frozen:
                m.eval()
            task = progress.add_task(f"{stage.name} epoch {epoch + 1}/{stage.epochs}", total=len(train))
            for step, (x, y, _idx) in enumerate(batches):
                if step < skip:  # batches the interrupted run already trained on (same order)
                    progress.advance(task, len(y))
                    continue
                kill_point(f"step:{stage.name}:{epoch + 1}:{step + 1}")
                if ctrl_c.pressed:  # between steps: model and optimizer are consistent here
                    seconds += time.perf_counter() - t0
                    save_checkpoint(last, state(epoch, step=step, losses=losses, rng=_get_rng(device)))
                    progress.remove_task(task)
                    raise StopRequested(
                        f"interrupted in {stage.name}, epoch {epoch + 1}, step {step + 1}; progress saved "
                        f"in {last}: run the same command with --resume to continue from there")
                with device.autocast():
                    pred = views.forward(model, x) if views else net(device.batch(x, normalizer))
                loss = compute_loss(model, pred.float().reshape(-1), y.to(device.torch).float())
                if not torch.isfinite(loss):
                    progress.remove_task(task)
                    kept = (f"the last good checkpoint is kept ({last}, {epoch} epoch(s) finished)"
                            if last.is_file() else "no epoch had finished, so there is no checkpoint")
                    raise MembenchError(
                        f"loss became {loss.item()} at stage {stage.name}, epoch {epoch + 1}, step {step + 1}; "
                        f"{kept}; try a lower learning rate or check the scores", stage_dir)
                opt.zero_grad(set_to_none=True)
                loss.backward()
                opt.step()
                losses.append(loss.item())
                progress.advance(task, len(y))
            progress.remove_task(task)
            lr_used = opt.param_groups[0]["lr"]
            sched.step()
            vtask = progress.add_task(f"{stage.name} validation", total=len(val))
            if val_cache is not None:
                val_pred = val_cache.predict(model, progress=lambda n: progress.advance(vtask, n))
            else:
                val_pred = predict(model, val, pre, device, batch_size=max(batch, 32),
                                   progress=lambda n: progress.advance(vtask, n))
            progress.remove_task(vtask)
            truth = [s.score for s in val]
            val_rho, val_mse = spearman(val_pred, truth), mse(val_pred, truth)
            seconds += time.perf_counter() - t0
            history.append({"epoch": epoch + 1, "lr": lr_used, "train_loss": _mean(losses),
                            "val_rho": val_rho, "val_mse": val_mse})
            score = val_rho if math.isfinite(val_rho) else -math.inf
            if score > best_rho or best_epoch == 0:
                best_rho, best_epoch, bad_epochs = score, epoch + 1, 0
                save_checkpoint(best, {"model": model.state_dict(), "epoch": epoch + 1, "val_rho": val_rho})
            else:
                bad_epochs += 1
            kill_point(f"checkpoint:{stage.name}:{epoch + 1}")
            save_checkpoint(last, state(epoch + 1))
            if ctrl_c.pressed:
                raise StopRequested(f"interrupted after {stage.name} epoch {epoch + 1}; progress saved in "
                                    f"{last}: run the same command with --resume to continue from there")
            if bad_epochs >= patience:
                return _finish(model, best, stage, epoch + 1, best_epoch, best_rho, seconds, history, True,
                               frozen_train_cache)
    return _finish(model, best, stage, stage.epochs, best_epoch, best_rho, seconds, history, False,
                   frozen_train_cache)


class _CtrlC:
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


def _get_rng(device: Device) -> dict:
    import torch

    out = {"cpu": torch.get_rng_state()}
    if device.type == "cuda":
        out["cuda"] = torch.cuda.get_rng_state_all()
    return out


def _set_rng(rng: dict | None, device: Device) -> None:
    import torch

    if rng is None:
        return
    torch.set_rng_state(rng["cpu"])
    if device.type == "cuda" and "cuda" in rng:
        torch.cuda.set_rng_state_all(rng["cuda"])


def _finish(model, best: Path, stage, epochs_run, best_epoch, best_rho, seconds, history, early,
            frozen_train_cache: int = 0) -> StageOutcome:
    from membench import distributed

    distributed.barrier(distributed.context())  # rank 0 has written best.pt
    model.load_state_dict(load_checkpoint(best)["model"])
    return StageOutcome(epochs_run=epochs_run, best_epoch=best_epoch, best_val_rho=best_rho,
                        seconds=seconds, history=history, stopped_early=early,
                        frozen_train_cache=frozen_train_cache)


def _mean(xs: list[float]) -> float:
    return sum(xs) / len(xs) if xs else math.nan
