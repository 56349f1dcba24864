"""Several (model, split) jobs at once: one process per job, N jobs per GPU.

At the protocol's small batches (10 for stage 1) one job cannot fill a large GPU: eager
PyTorch is launch-bound. Running several independent jobs side by side, each with its own
process, CUDA context and the protocol's batch size, fills it without changing any job's
numbers. Each child is an ordinary `membench run` of one (model, split) job with
CUDA_VISIBLE_DEVICES set to its GPU, so everything it writes (work directory, leaderboard
rows, logs) is what a sequential run would write; the leaderboard and job directories are
already safe under concurrency (file locks).

A job whose recipe chains another requested model on the same split (e.g. `ours` stage 1
= `resnet50-lamem`) starts after that job has finished.

    membench run --model ours,resnet50-lamem --splits all --data /data/lamem --jobs-per-gpu 3
    membench run --model all --splits all --data /data/lamem --gpus 0,1,2,3 --jobs-per-gpu 2
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from dataclasses import dataclass, fields
from pathlib import Path

from membench.errors import MembenchError


@dataclass(frozen=True)
class Job:
    model: str
    split: int
    after: tuple[int, ...] = ()  # indices of jobs that must finish first

    @property
    def label(self) -> str:
        return f"{self.model} split {self.split}"


def plan(specs, splits: list[int]) -> list[Job]:
    """Jobs in dependency order: a model chained by another requested model comes first."""
    by_name = {s.name: s for s in specs}

    def upstream(spec) -> list[str]:
        return [st.model for st in spec.recipe if st.model and st.model in by_name]

    ordered, seen = [], set()

    def visit(name, trail=()):
        if name in seen:
            return
        if name in trail:
            raise MembenchError(f"recipes chain each other in a cycle: {' -> '.join(trail + (name,))}")
        for up in upstream(by_name[name]):
            visit(up, trail + (name,))
        seen.add(name)
        ordered.append(name)

    for spec in specs:
        visit(spec.name)
    jobs, index = [], {}
    for name in ordered:
        for k in splits:
            after = tuple(index[(up, k)] for up in upstream(by_name[name]))
            index[(name, k)] = len(jobs)
            jobs.append(Job(name, k, after))
    return jobs


def parse_gpus(text: str | None, available: int) -> list[str]:
    """`all` (or None), a count such as `2`, or a comma list of device indices."""
    if text in (None, "", "all"):
        if available < 1:
            raise MembenchError("--jobs-per-gpu/--gpus need a CUDA device, and none is visible")
        return [str(i) for i in range(available)]
    items = [t.strip() for t in text.split(",") if t.strip()]
    if len(items) == 1 and items[0].isdigit() and "," not in text and int(items[0]) > 0 and available:
        count = int(items[0])
        if count > available:
            raise MembenchError(f"--gpus {count}: only {available} CUDA device(s) visible")
        return [str(i) for i in range(count)]
    if not items or not all(t.isdigit() for t in items):
        raise MembenchError(f"--gpus takes 'all', a count, or a comma list of device indices, not {text!r}")
    bad = [t for t in items if int(t) >= available]
    if bad:
        raise MembenchError(f"--gpus {text}: device {bad[0]} does not exist ({available} visible)")
    return items


def run_jobs(jobs: list[Job], slots: list[str | None], command, log_dir: Path, say=print,
             env: dict | None = None, poll: float = 0.2) -> dict[int, int]:
    """Run `command(job) -> argv` for every job, at most one per slot at a time; a slot
    that names a GPU sets CUDA_VISIBLE_DEVICES for its job. Returns {job index: exit code}
    (-1: not started because a job it depends on failed)."""
    log_dir.mkdir(parents=True, exist_ok=True)
    pending = list(range(len(jobs)))
    running: dict[int, tuple[subprocess.Popen, str | None, float, object]] = {}
    codes: dict[int, int] = {}
    free = list(slots)
    try:
        while pending or running:
            for i in list(pending):
                job = jobs[i]
                if any(codes.get(a, 0) != 0 for a in job.after):
                    pending.remove(i)
                    codes[i] = -1
                    say(f"{job.label}: not started (a job it depends on failed)")
                    continue
                if not free or any(a not in codes for a in job.after):
                    continue
                slot = free.pop(0)
                child_env = dict(os.environ if env is None else env)
                if slot is not None:
                    child_env["CUDA_VISIBLE_DEVICES"] = slot
                log = open(log_dir / f"{job.model.replace('/', '_')}__split{job.split}.log", "w")
                # own session: a Ctrl-C at the terminal reaches only this process, which
                # forwards exactly one (a second one would make the child stop at once)
                proc = subprocess.Popen(command(job), stdout=log, stderr=subprocess.STDOUT, env=child_env,
                                        start_new_session=True)
                running[i] = (proc, slot, time.monotonic(), log)
                pending.remove(i)
                say(f"{job.label}: started" + (f" on GPU {slot}" if slot is not None else "") + f" (log {log.name})")
            for i, (proc, slot, started, log) in list(running.items()):
                if proc.poll() is None:
                    continue
                log.close()
                codes[i] = proc.returncode
                del running[i]
                free.append(slot)
                state = "finished" if proc.returncode == 0 else f"FAILED (exit {proc.returncode})"
                say(f"{jobs[i].label}: {state} after {time.monotonic() - started:.0f} s")
            if running:
                time.sleep(poll)
    except KeyboardInterrupt:
        say(f"interrupted: asking {len(running)} running job(s) to save a checkpoint and stop "
            "(Ctrl-C again to stop them at once)")
        _interrupt(running)
        try:
            for proc, *_ in running.values():
                proc.wait()
        except KeyboardInterrupt:
            _interrupt(running)
            for proc, *_ in running.values():
                proc.wait()
        raise
    return codes


def _interrupt(running) -> None:
    import signal

    for proc, *_ in running.values():
        if proc.poll() is None:
            proc.send_signal(signal.SIGINT)


# ---------------------------------------------------------------------------- membench run

def run_grid(specs, splits: list[int], cfg, data_args: dict, *, gpus: str | None, jobs_per_gpu: int,
             say=print) -> int:
    """`membench run` with --jobs-per-gpu/--gpus: every (model, split) job in its own process."""
    import torch

    if jobs_per_gpu < 1:
        raise MembenchError("--jobs-per-gpu must be at least 1")
    devices = parse_gpus(gpus, torch.cuda.device_count())
    slots = [d for d in devices for _ in range(jobs_per_gpu)]
    return run_grid_on(specs, splits, cfg, data_args, slots, say=say)


def run_grid_on(specs, splits, cfg, data_args: dict, slots: list[str | None], say=print) -> int:
    from dataclasses import replace

    if cfg.workers is None:  # share the CPU cores among the concurrent jobs
        cfg = replace(cfg, workers=max(1, min(8, (os.cpu_count() or 1) // len(slots))))
    jobs = plan(specs, splits)
    payload = {"config": _config_to_json(cfg), "data": data_args}
    log_dir = Path(cfg.work_dir) / "logs"
    say(f"{len(jobs)} jobs on {len(slots)} slot(s), {cfg.workers} loader worker(s) each; logs in {log_dir}")
    codes = run_jobs(jobs, slots, lambda job: child_command(job, payload), log_dir, say=say)
    failed = [jobs[i] for i, c in sorted(codes.items()) if c != 0]
    if failed:
        raise MembenchError(f"{len(failed)} of {len(jobs)} jobs did not finish ({failed[0].label} first); "
                            "see their logs, then run again with --resume", log_dir)
    return 0


def _config_to_json(cfg) -> dict:
    values = {f.name: getattr(cfg, f.name) for f in fields(cfg)}
    return {k: str(v) if isinstance(v, Path) else v for k, v in values.items()}


def _config_from_json(data: dict):
    from membench.engine.job import RunConfig

    paths = {f.name for f in fields(RunConfig) if "Path" in str(f.type)}
    return RunConfig(**{k: Path(v) if k in paths and v is not None else v for k, v in data.items()})


def child_command(job: Job, payload: dict) -> list[str]:
    spec = dict(payload, model=job.model, split=job.split)
    return [sys.executable, "-m", "membench.scale.parallel", json.dumps(spec)]


def child_main(spec: dict) -> int:
    """One job, as `membench run --model M --splits k` would run it."""
    from rich.console import Console

    from membench import registry
    from membench.data.datasets import open_described
    from membench.engine.runner import run_all

    cfg = _config_from_json(spec["config"])
    dataset = open_described(spec["data"])
    rows = run_all([registry.get_model(spec["model"])], dataset, [spec["split"]], cfg,
                   console=Console(stderr=True))
    print(json.dumps(rows, default=str))
    return 0


def main(argv=None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    try:
        return child_main(json.loads(argv[0]))
    except MembenchError as exc:
        print(f"membench: error: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())

