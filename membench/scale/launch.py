"""Every (model, split) job as its own cluster job, through submitit.

    membench run --model all --splits all --data /data/lamem --launcher slurm \\
        --slurm-partition gpu --slurm-time 2880 --slurm-array-parallelism 8

Each job is the job a local `membench run` would run: the same job key, the same work
directory (checkpoints, result.json) and the same leaderboard, written under its file lock
by whichever job finishes. What the cluster adds is handled here:

- Time limit or preemption. Slurm warns a job with SIGUSR2 (submitit's signal) before it
  stops it. That signal acts as a Ctrl-C: training saves a checkpoint at the next step
  boundary; then submitit calls `ClusterJob.checkpoint`, which resubmits the same job
  (always resuming), and requeues it. The requeued job continues from that checkpoint with
  the numbers of an uninterrupted run (tests/test_slurm.py). A job killed outright (node
  failure, SIGKILL) and requeued by Slurm resumes from its last saved checkpoint.
- Chained stages. `ours` starts from `resnet50-lamem` (stage 1) on the same split. When
  both are requested, each model is one job array and the `ours` array depends task by
  task (`aftercorr`) on the `resnet50-lamem` array, so no GPU idles waiting; in any case
  a job that needs a stage 1 another job is training waits for that job's lock and reuses
  its result (membench.engine.runner.job_lock), so each stage 1 is trained once.
- Fresh starts. A job always runs with resume on (a requeued job must continue, not start
  over); what a local run without `--resume` does when a job starts (refuse to discard an
  interrupted run, recompute a finished one) is done here, before anything is submitted.

`--launcher local-submitit` runs the same jobs through submitit's LocalExecutor, as
subprocesses of this machine, all at once: for tests and trying things out.
"""

from __future__ import annotations

import contextlib
import io
import os
import re
import shutil
import signal
import sys
import time
from dataclasses import dataclass, field, replace
from pathlib import Path

from membench.errors import MembenchError, StopRequested

LAUNCHERS = ("local", "slurm", "local-submitit")
MAX_TIMEOUTS = 10  # requeues after a time limit per job (preemptions are not counted)
SLURM_FLAGS = ("slurm_partition", "slurm_time", "slurm_gpus_per_job", "slurm_cpus_per_job", "slurm_mem_gb",
               "slurm_array_parallelism", "slurm_option")


@dataclass(frozen=True)
class ClusterOptions:
    partition: str | None = None
    time_min: int = 2880
    gpus_per_job: int = 1
    cpus_per_job: int = 8
    mem_gb: float | None = None
    array_parallelism: int | None = None
    extra: dict = field(default_factory=dict)  # --slurm-option KEY=VALUE: #SBATCH --KEY=VALUE


def add_launcher_options(p) -> None:
    """The `membench run` flags of this module."""
    g = p.add_argument_group("cluster (docs/performance.md: Slurm)")
    g.add_argument("--launcher", choices=LAUNCHERS, default="local",
                   help="local: run here (default); slurm: one Slurm job per (model, split), through submitit "
                        "(pip install 'membench[slurm]'); local-submitit: the same jobs as subprocesses here")
    g.add_argument("--wait", action="store_true",
                   help="with --launcher: wait for the jobs and print their results (default: return after "
                        "submitting)")
    g.add_argument("--slurm-partition", default=None, metavar="P", help="Slurm partition (default: the cluster's)")
    g.add_argument("--slurm-time", type=int, default=None, metavar="MINUTES",
                   help="time limit per job (default 2880); a job that reaches it saves a checkpoint and is "
                        "requeued")
    g.add_argument("--slurm-gpus-per-job", type=int, default=None, metavar="N",
                   help="1 (default), or 0 for CPU-only jobs; one job on several GPUs is torchrun's (see docs)")
    g.add_argument("--slurm-cpus-per-job", type=int, default=None, metavar="N",
                   help="CPU cores per job (default 8; data loader workers use them)")
    g.add_argument("--slurm-mem-gb", type=float, default=None, metavar="G",
                   help="memory per job (default: the cluster's)")
    g.add_argument("--slurm-array-parallelism", type=int, default=None, metavar="N",
                   help="at most N jobs of each model's array at once")
    g.add_argument("--slurm-option", action="append", default=[], metavar="KEY=VALUE",
                   help="any other sbatch option, e.g. account=lab or qos=high (repeatable)")


def options_from_args(args) -> ClusterOptions | None:
    """The cluster options, or None for a local run; contradictory flags are one-line errors."""
    from membench.options import key_values

    slurm_flags = ["--" + name.replace("_", "-") for name in SLURM_FLAGS if getattr(args, name) not in (None, [])]
    if args.launcher == "local":
        if args.wait or slurm_flags:
            raise MembenchError(f"{'--wait' if args.wait else slurm_flags[0]} needs --launcher slurm "
                                "(or local-submitit)")
        return None
    if args.jobs_per_gpu is not None or args.gpus is not None:
        raise MembenchError("--jobs-per-gpu/--gpus run jobs on this machine; with --launcher the cluster "
                            "places them (one GPU per job)")
    opts = ClusterOptions(
        partition=args.slurm_partition, time_min=2880 if args.slurm_time is None else args.slurm_time,
        gpus_per_job=1 if args.slurm_gpus_per_job is None else args.slurm_gpus_per_job,
        cpus_per_job=8 if args.slurm_cpus_per_job is None else args.slurm_cpus_per_job,
        mem_gb=args.slurm_mem_gb, array_parallelism=args.slurm_array_parallelism,
        extra=key_values(args.slurm_option, "--slurm-option"))
    if opts.time_min < 1:
        raise MembenchError("--slurm-time is the time limit per job in minutes (at least 1)")
    if opts.gpus_per_job not in (0, 1):
        raise MembenchError("--slurm-gpus-per-job takes 0 or 1: for one job on several GPUs run torchrun "
                            "inside an sbatch script (docs/performance.md)")
    if opts.cpus_per_job < 1 or (opts.array_parallelism is not None and opts.array_parallelism < 1):
        raise MembenchError("--slurm-cpus-per-job and --slurm-array-parallelism must be at least 1")
    if opts.mem_gb is not None and opts.mem_gb <= 0:
        raise MembenchError("--slurm-mem-gb must be positive")
    return opts


def require_submitit():
    try:
        import submitit
    except ImportError:
        raise MembenchError("--launcher slurm/local-submitit needs submitit: pip install 'membench[slurm]'") from None
    return submitit


# ------------------------------------------------------------------------------ the job

@dataclass(frozen=True)
class ClusterJob:
    """One (model, split) job, pickled by submitit and called on the compute node."""
    model: str
    split: int
    config: dict  # RunConfig as JSON (membench.scale.parallel), resume on
    data: dict    # --data, --dataset, --dataset-option

    @property
    def label(self) -> str:
        return f"{self.model} split {self.split}"

    def __call__(self) -> dict:
        with _Preemption() as preempted:
            try:
                return self._run()
            except (StopRequested, KeyboardInterrupt):
                if preempted.signum is None:
                    raise
            except MembenchError as exc:  # the one line, in the job's log too
                print(f"membench: error: {exc}", file=sys.stderr, flush=True)
                raise
        print(f"membench: {self.label}: time limit or preemption ({signal.Signals(preempted.signum).name}); "
              "progress saved, requeueing to continue from it", file=sys.stderr, flush=True)
        preempted.hand_over()  # submitit: self.checkpoint(), then requeue; exits

    def checkpoint(self):
        """Called by submitit on a time limit or preemption: the same job, resuming."""
        from submitit.helpers import DelayedSubmission

        return DelayedSubmission(replace(self, config={**self.config, "resume": True}))

    def _run(self) -> dict:
        from rich.console import Console
        from rich.progress import Progress

        from membench import registry
        from membench.data.datasets import open_described
        from membench.engine.runner import Runner
        from membench.scale.parallel import _config_from_json

        cfg = _config_from_json(self.config)
        dataset = open_described(self.data)
        spec = registry.get_model(self.model)
        with Progress(console=Console(stderr=True), transient=True) as progress:
            runner = Runner(dataset, cfg, progress, console=progress.console)
            # reuse_finished: wait for another process holding this job (e.g. the stage 1 that a
            # chained job started), then reuse its result rather than train it again
            return runner.run(spec, self.split, reuse_finished=True).row


class _Preemption:
    """Turns the cluster's warning signal into a Ctrl-C while a job runs (training then saves
    a checkpoint at a step boundary and stops), keeping submitit's handler for afterwards."""

    def __enter__(self):
        self.signum = None
        self._sig = getattr(signal, "SIG" + os.environ.get("SUBMITIT_PREEMPT_SIGNAL", "USR2"))
        self._submitit = signal.getsignal(self._sig)
        signal.signal(self._sig, self._handle)
        return self

    def _handle(self, signum, frame):
        if self.signum is None:
            self.signum = signum
            # Act as the current Ctrl-C handler, called here rather than through a SIGINT:
            # a process started in the background ignores SIGINT, and a SIGINT sent from this
            # handler may only be seen after a blocking call (a job lock) has resumed waiting.
            handler = signal.getsignal(signal.SIGINT)
            if callable(handler):
                handler(signal.SIGINT, frame)  # training's CtrlC: checkpoint at the next step
            else:
                raise KeyboardInterrupt

    def __exit__(self, *exc_info):
        signal.signal(self._sig, self._submitit)
        return False

    def hand_over(self):
        if callable(self._submitit):
            self._submitit(self.signum, None)  # checkpoints and requeues (exits the process)
        raise MembenchError("stopped by a cluster signal outside a submitit job; progress is saved: run the "
                            "same command with --resume")


# ------------------------------------------------------------------------------ submission

@dataclass
class Submitted:
    job: ClusterJob
    handle: object  # submitit Job
    job_dir: Path | None = None  # WORK/<job key>/split<k>: its lock says whether the job still runs

    @property
    def log(self) -> Path:
        return Path(self.handle.paths.stderr)


def launch(specs, dataset, splits: list[int], cfg, data_args: dict, launcher: str, opts: ClusterOptions, *,
           wait: bool, say=print) -> list[dict] | None:
    """Submit every (model, split) job; with `wait`, return their leaderboard rows."""
    from membench.engine.job import job_key
    from membench.engine.runner import preflight, resolve_precision
    from membench.output import emit
    from membench.results.leaderboard import valid_rows
    from membench.scale.parallel import _config_to_json, plan
    from membench.util.files import check_writable

    submitit = require_submitit()
    cfg = replace(cfg, out=Path(cfg.out).resolve(), work_dir=Path(cfg.work_dir).resolve(),
                  checkpoint=Path(cfg.checkpoint).resolve() if cfg.checkpoint else None)
    if data_args.get("data") not in (None, "demo"):  # jobs may start in another directory
        data_args = {**data_args, "data": str(Path(data_args["data"]).expanduser().resolve())}
    if launcher == "slurm":  # the compute nodes' device, not this login node's
        if cfg.device == "auto":
            cfg = replace(cfg, device="cuda" if opts.gpus_per_job else "cpu")
        if cfg.workers is None and cfg.device == "cuda":
            cfg = replace(cfg, workers=min(8, opts.cpus_per_job))  # the node's cores are not all the job's
    # fp32 unless --precision bf16, which is checked against the jobs' device (concrete for Slurm)
    cfg = resolve_precision(cfg)
    cfg = preflight(specs, cfg, say=say)  # missing weights stop us here, not in forty jobs
    check_writable(cfg.out)
    check_writable(cfg.work_dir)
    valid_rows(cfg.out / "results.csv")
    if not cfg.resume:
        start_afresh(specs, dataset, splits, cfg)
    config = _config_to_json(replace(cfg, resume=True))
    jobs = [ClusterJob(j.model, j.split, config, data_args) for j in plan(specs, splits)]
    folder = cfg.work_dir / "logs" / "submitit"
    by_name = {s.name: s for s in specs}
    submitted = _submit(submitit, launcher, folder, opts, jobs, by_name)
    for s in submitted:
        s.job_dir = cfg.work_dir / job_key(by_name[s.job.model], dataset, cfg) / f"split{s.job.split}"
    emit([{"model": s.job.model, "split": s.job.split, "job_id": s.handle.job_id, "log": str(s.log)}
          for s in submitted], ["model", "split", "job_id", "log"], "table",
         title=f"{len(submitted)} jobs submitted ({launcher})")
    if not wait:
        where = "`squeue --me` lists them" if launcher == "slurm" else "they run as subprocesses of this machine"
        say(f"{len(submitted)} jobs submitted ({where}); results go to {cfg.out} as each finishes "
            f"(`membench report --leaderboard {cfg.out}`); logs in {folder}")
        return None
    return collect(submitted, say=say)


def start_afresh(specs, dataset, splits, cfg) -> None:
    """What a local run without --resume does as each job starts, done before submitting:
    an interrupted job is never discarded silently; a finished one is computed again."""
    from membench.engine.job import job_key, job_lock, refuse_to_discard
    from membench.util.files import refuse_links, remove_own_tree

    dirs = [cfg.work_dir / job_key(spec, dataset, cfg) / f"split{k}" for spec in specs for k in splits]
    for job_dir in dirs:
        refuse_links(job_dir, cfg.work_dir)
    dirs = [d for d in dirs if d.exists()]
    for job_dir in dirs:
        refuse_to_discard(job_dir)
    for job_dir in dirs:
        with job_lock(job_dir, wait=False):
            remove_own_tree(job_dir, cfg.work_dir)


def _submit(submitit, launcher, folder: Path, opts: ClusterOptions, jobs: list[ClusterJob], by_name) -> list:
    if launcher == "slurm":
        missing = [tool for tool in ("sbatch", "srun") if shutil.which(tool) is None]
        if missing:
            raise MembenchError(f"--launcher slurm: {missing[0]} is not on PATH (not a Slurm login node?); "
                                "--launcher local-submitit runs the same jobs on this machine")
        executor = submitit.SlurmExecutor(folder=folder / "%j", max_num_timeout=MAX_TIMEOUTS)
        params = {"time": opts.time_min, "gpus_per_node": opts.gpus_per_job, "cpus_per_task": opts.cpus_per_job,
                  "ntasks_per_node": 1, "nodes": 1, "signal_delay_s": 120}
        if opts.partition:
            params["partition"] = opts.partition
        if opts.mem_gb:
            params["mem"] = opts.mem_gb
        if opts.array_parallelism:
            params["array_parallelism"] = opts.array_parallelism
        executor.update_parameters(**params)
    else:
        executor = submitit.LocalExecutor(folder=folder / "%j", max_num_timeout=MAX_TIMEOUTS)
        executor.update_parameters(timeout_min=opts.time_min, gpus_per_node=opts.gpus_per_job,
                                   signal_delay_s=120)
    submitted, arrays = [], {}
    for model in dict.fromkeys(j.model for j in jobs):  # plan order: upstream models first
        group = [j for j in jobs if j.model == model]
        if launcher == "slurm":
            ups = [arrays[st.model] for st in by_name[model].recipe if st.model in arrays]
            extra = dict(opts.extra)
            if ups:  # task i after task i of the upstream array (the same split): no idle GPU
                kind = "aftercorr" if len(group) > 1 else "afterok"
                extra.update(dependency=",".join(f"{kind}:{a}" for a in ups), kill_on_invalid_dep="yes")
            executor.update_parameters(job_name=f"membench-{model.replace('/', '_')}",
                                       additional_parameters=extra)
        handles = _submit_group(executor, group, launcher)
        arrays[model] = str(handles[0].job_id).split("_")[0]
        submitted += [Submitted(j, h) for j, h in zip(group, handles)]
    return submitted


def _submit_group(executor, group: list[ClusterJob], launcher: str) -> list:
    """One job array (Slurm) or one process each (local); sbatch's complaint as one line."""
    quiet = io.StringIO()  # submitit prints sbatch's stderr itself; the error says it once
    try:
        with contextlib.redirect_stderr(quiet):
            with executor.batch():
                futures = [executor.submit(job) for job in group]
    except Exception as exc:
        text = str(exc).strip() or quiet.getvalue().strip() or type(exc).__name__
        raise MembenchError(f"{'sbatch' if launcher == 'slurm' else 'submitit'} refused the jobs of "
                            f"{group[0].model}: {text.splitlines()[-1]}") from None
    return futures


# ------------------------------------------------------------------------------ --wait

def collect(submitted: list[Submitted], say=print, poll: float = 1.0) -> list[dict]:
    """Wait for every job; their rows in submission order. Failures: one line naming the
    first failed job and its log. A job whose submitit process ended without a result while
    the job itself still runs (a local job's controller stopped by the warning signal: its
    task runs on) is waited for, not reported as failed."""
    rows: dict[int, dict] = {}
    failed: list[tuple[Submitted, str]] = []
    pending, orphans = set(range(len(submitted))), set()
    try:
        while pending:
            for i in sorted(pending):
                s = submitted[i]
                if not s.handle.done() or (i in orphans and _still_running(s)):
                    continue
                try:
                    rows[i] = _orphan_result(s, poll) if i in orphans else s.handle.result()
                    say(f"{s.job.label}: finished (job {s.handle.job_id})")
                except Exception as exc:
                    if i not in orphans and _still_running(s):
                        orphans.add(i)
                        say(f"{s.job.label}: its submitit process ended (job {s.handle.job_id}), but the job "
                            "still runs: waiting for it")
                        continue
                    failed.append((s, failure_reason(exc)))
                    say(f"[red]{s.job.label}: FAILED (job {s.handle.job_id}): {failed[-1][1]}[/]")
                pending.discard(i)
            if pending:
                time.sleep(poll)
    except KeyboardInterrupt:
        say(f"stopped waiting; {len(pending)} job(s) still run (their logs are in {submitted[0].log.parent.parent})")
        raise
    if failed:
        s, reason = failed[0]
        more = f"{len(failed)} of {len(submitted)} jobs failed; first: " if len(failed) > 1 else ""
        raise MembenchError(f"{more}{s.job.label} (job {s.handle.job_id}) failed: {reason} (log: {s.log})")
    return [rows[i] for i in sorted(rows)]


ORPHAN_RESULT_S = 60  # after an orphaned job released its lock: how long its result file may take


def _still_running(s: Submitted) -> bool:
    """Whether a process (the job, or the one it waits for) holds the job's lock, while
    submitit has no result for it."""
    from membench.results.runs import is_running

    return s.job_dir is not None and not s.handle.paths.result_pickle.exists() and is_running(s.job_dir)


def _orphan_result(s: Submitted, poll: float):
    """The result of a job that ran on after its submitit process ended: written by the job
    itself when it returns, just after releasing its lock."""
    deadline = time.time() + ORPHAN_RESULT_S
    while not s.handle.paths.result_pickle.exists() and time.time() < deadline:
        time.sleep(min(poll, 0.2))
    return s.handle.result()


def failure_reason(exc: Exception) -> str:
    """The last line of a failed job's traceback (a MembenchError's message as it is), or
    the state of a job that ended without a result (killed, cancelled, out of memory)."""
    text = str(exc)
    state = re.search(r"has not produced any output \(state: ([^)]*)\)", text)
    if state:
        return f"it ended without a result (state {state.group(1)})"
    parts = text.split("-" * 22)
    trace = parts[1] if len(parts) >= 3 else text
    lines = [ln.strip() for ln in trace.strip().splitlines() if ln.strip()]
    last = lines[-1] if lines else type(exc).__name__
    return re.sub(r"^membench\.errors\.\w+: ", "", last)
