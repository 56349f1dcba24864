"""`membench run --launcher slurm|local-submitit`: each (model, split) job submitted
through submitit keeps every property of a local run.

The local-submitit jobs are real subprocesses started by submitit's LocalExecutor, which
requeues a job the way Slurm does when it is warned (SIGUSR2) before a time limit or a
preemption. The job sends itself that signal at an exact training step through the
MEMBENCH_TEST_KILL_AT hook (membench/util/testhooks.py), once. The Slurm path runs against
fake `sbatch`/`srun` commands that record the submitted scripts. Models: the tiny CNN of
tests/tiny_plugin.py (32x32 inputs), found by the jobs through an entry point.
"""

from __future__ import annotations

import contextlib
import csv
import os
import pickle
import signal
import stat
import sys
from pathlib import Path

import pytest

pytest.importorskip("submitit")

TESTS = Path(__file__).parent


@pytest.fixture(scope="module")
def entry_point_dir(tmp_path_factory):
    """A dist-info whose entry point (group "membench") names tests/tiny_plugin.py, so
    that job subprocesses find tiny-cnn and tiny-chain as any installed plugin."""
    root = tmp_path_factory.mktemp("entry")
    info = root / "membench_tiny_test-0.1.dist-info"
    info.mkdir()
    (info / "METADATA").write_text("Metadata-Version: 2.1\nName: membench-tiny-test\nVersion: 0.1\n")
    (info / "entry_points.txt").write_text("[membench]\ntiny = tiny_plugin\n")
    return root


@pytest.fixture
def tiny(entry_point_dir, monkeypatch):
    from membench import plugins

    path = os.pathsep.join([str(entry_point_dir), str(TESTS), os.environ.get("PYTHONPATH", "")])
    monkeypatch.setenv("PYTHONPATH", path)  # the job subprocesses
    monkeypatch.setenv("OMP_NUM_THREADS", "1")
    monkeypatch.syspath_prepend(str(entry_point_dir))  # this process
    plugins._reset_for_tests()
    yield
    plugins._reset_for_tests()


def run_args(data: Path, base: Path, model: str = "tiny-cnn", splits: str = "1", *extra) -> list[str]:
    return ["run", "--model", model, "--data", str(data), "--splits", splits, "--preset", "smoke",
            "--pretrained", "none", "--device", "cpu", "--out", str(base / "lb"), "--work-dir", str(base / "work"),
            *extra]


def outcome(lb: Path) -> dict:
    """What a launcher must not change: per (model, split) the job key, metrics, training
    trajectory and every per-image prediction."""
    with open(lb / "results.csv", newline="") as f:
        rows = list(csv.DictReader(f))
    keys = ("run_id", "rho", "mse", "n_test", "epochs_run", "best_epoch", "best_val_rho", "params_total")
    out = {(r["model"], r["split"]): {k: r[k] for k in keys} for r in rows}
    assert len(out) == len(rows), "a (model, split) row is duplicated"
    for r in rows:
        out[(r["model"], r["split"])]["predictions"] = (
            lb / "predictions" / r["run_id"] / f"split{r['split']}.csv").read_text()
    return out


def job_logs(work: Path, kind: str = "err") -> str:
    """The jobs' stderr (membench's messages) or stdout (submitit's own log lines)."""
    return "".join(p.read_text() for p in sorted((work / "logs" / "submitit").glob(f"*/*_log.{kind}")))


@pytest.fixture
def reference(tiny, one_thread, demo_root, tmp_path, run_cli):
    """Uninterrupted local runs in this process, by (model, splits), with one torch thread
    as the jobs (OMP_NUM_THREADS=1 above): float sums, hence the metrics, depend on the
    thread count (tiny-cnn smoke split 1: rho 0.0901 with one thread, 0.0857 with two), and
    this process may have started torch with more threads before OMP_NUM_THREADS was set."""
    def ref(model: str, splits: str) -> tuple[dict, Path]:
        base = tmp_path / f"reference-{model}-{splits}"
        code, _out, err = run_cli(*run_args(demo_root, base, model, splits))
        assert code == 0, err
        return outcome(base / "lb"), base / "work"

    return ref


def test_job_warned_mid_stage_is_requeued_and_matches_an_uninterrupted_run(
        reference, demo_root, tmp_path, run_cli, monkeypatch):
    expected, ref_work = reference("tiny-cnn", "1")
    # smoke: 16 training images in batches of 8; the warning comes before step 2 of epoch 1
    once = tmp_path / "signalled"
    monkeypatch.setenv("MEMBENCH_TEST_KILL_AT", "step:stage1:1:2")
    monkeypatch.setenv("MEMBENCH_TEST_KILL_SIGNAL", "USR2")
    monkeypatch.setenv("MEMBENCH_TEST_KILL_ONCE", str(once))
    code, out, err = run_cli(*run_args(demo_root, tmp_path, "tiny-cnn", "1", "--launcher", "local-submitit",
                                       "--wait"))
    assert code == 0, err
    assert once.exists(), "the job was never signalled"
    logs = job_logs(tmp_path / "work")
    assert "time limit or preemption (SIGUSR2); progress saved" in logs
    submitit_log = job_logs(tmp_path / "work", "out")
    assert "Calling checkpoint method" in submitit_log and "Requeued job" in submitit_log
    assert submitit_log.count("Starting with JobEnvironment") == 2  # the first run, then the requeued one
    assert "1 jobs submitted (local-submitit)" in out and "tiny-cnn split 1: finished" in err
    assert outcome(tmp_path / "lb") == expected
    # the same job key and work directory layout as the local run
    job_dirs = lambda work: sorted(p.relative_to(work) for p in work.glob("*/split*"))  # noqa: E731
    assert job_dirs(tmp_path / "work") == job_dirs(ref_work)


@pytest.mark.slow
def test_two_jobs_sharing_a_stage_1_train_it_once(reference, demo_root, tmp_path, run_cli):
    """tiny-chain's stage 1 is the tiny-cnn job of the same split. Both jobs start at once
    (no dependencies locally): whichever reaches the job first trains it, the other waits
    for its lock and reuses it."""
    expected, _ = reference("tiny-chain,tiny-cnn", "1")
    code, _out, err = run_cli(*run_args(demo_root, tmp_path, "tiny-chain,tiny-cnn", "1",
                                        "--launcher", "local-submitit", "--wait"))
    assert code == 0, err
    logs = job_logs(tmp_path / "work")
    assert logs.count("tiny-cnn split 1: stage1 (") == 1, logs
    assert logs.count("tiny-chain split 1: stage2 (") == 1
    assert "finished earlier, reusing" in logs
    assert outcome(tmp_path / "lb") == expected


@pytest.mark.slow
def test_ten_concurrent_jobs_write_one_leaderboard_and_train_each_stage_1_once(
        reference, demo_root, tmp_path, run_cli):
    expected, _ = reference("tiny-chain,tiny-cnn", "all")
    code, _out, err = run_cli(*run_args(demo_root, tmp_path, "tiny-chain,tiny-cnn", "all",
                                        "--launcher", "local-submitit", "--wait"))
    assert code == 0, err
    logs = job_logs(tmp_path / "work")
    for k in range(1, 6):
        assert logs.count(f"tiny-cnn split {k}: stage1 (") == 1
    result = outcome(tmp_path / "lb")
    assert len(result) == 10 and result == expected
    with open(tmp_path / "lb" / "summary.csv", newline="") as f:
        assert sorted(r["n_splits"] for r in csv.DictReader(f)) == ["5", "5"]
    assert not [p for p in (tmp_path / "lb").rglob("*.tmp")]


@pytest.mark.slow
def test_job_killed_outright_continues_when_submitted_again_with_resume(
        reference, demo_root, tmp_path, run_cli, monkeypatch):
    """A node failure (SIGKILL, no warning) after stage 2 saved its checkpoint: the job
    fails with one line; submitting it again needs --resume, and continues from that
    checkpoint to the uninterrupted numbers."""
    expected, _ = reference("tiny-chain", "1")
    monkeypatch.setenv("MEMBENCH_TEST_KILL_AT", "stage-done:tiny-chain:stage2:1")
    monkeypatch.setenv("MEMBENCH_TEST_KILL_ONCE", str(tmp_path / "killed"))
    args = run_args(demo_root, tmp_path, "tiny-chain", "1", "--launcher", "local-submitit", "--wait")
    code, _out, err = run_cli(*args)
    assert code == 2
    assert "ended without a result" in err.splitlines()[-1]
    code, _out, err = run_cli(*args)  # without --resume, the interrupted job is not thrown away
    assert code == 2 and "--resume" in err.splitlines()[-1]
    code, _out, err = run_cli(*args, "--resume")
    assert code == 0, err
    assert outcome(tmp_path / "lb") == expected


@pytest.mark.slow
def test_a_failed_job_is_one_line_naming_the_job_and_its_log(tiny, demo_root, tmp_path, run_cli):
    import shutil

    data = tmp_path / "data"
    shutil.copytree(demo_root, data)
    first_test = (data / "splits" / "test_1.txt").read_text().split()[0]
    (data / "images" / first_test).write_bytes(b"not a jpeg")  # found by the job, not the submitter
    code, _out, err = run_cli(*run_args(data, tmp_path, "tiny-cnn", "1", "--launcher", "local-submitit",
                                        "--wait"))
    assert code == 2
    last = err.strip().splitlines()[-1]
    assert last.startswith("membench: error: tiny-cnn split 1 (job ") and first_test in last, last
    log = Path(last.rsplit("(log: ", 1)[1].rstrip(")"))
    assert log.is_file() and first_test in log.read_text()
    assert "Traceback" not in err
    assert not (tmp_path / "lb" / "results.csv").exists()


def test_failures_collected_from_submitit_are_one_line_naming_job_and_log(tmp_path):
    """What `--wait` makes of submitit's own failure reports (without starting a job): a
    job that raised (its traceback's last line, a MembenchError's message as it is) and a
    job that ended without any result (killed, cancelled)."""
    import traceback

    from submitit.core.utils import cloudpickle_dump
    from submitit.local.local import LocalJob

    from membench.errors import MembenchError
    from membench.scale.launch import ClusterJob, Submitted, collect

    try:
        raise MembenchError("cannot read image", "/data/images/00000007.jpg")
    except MembenchError:
        trace = traceback.format_exc()
    raised, killed = LocalJob(tmp_path / "41", "41"), LocalJob(tmp_path / "42", "42")
    for job in (raised, killed):
        job.paths.folder.mkdir(parents=True)
    cloudpickle_dump(("error", trace), raised.paths.result_pickle)
    killed._results_timeout_s = 0
    jobs = [Submitted(ClusterJob("tiny-cnn", 1, {}, {}), raised), Submitted(ClusterJob("tiny-cnn", 2, {}, {}), killed)]
    said = []
    with pytest.raises(MembenchError) as err:
        collect(jobs, say=said.append, poll=0)
    assert str(err.value) == ("2 of 2 jobs failed; first: tiny-cnn split 1 (job 41) failed: "
                              "/data/images/00000007.jpg: cannot read image "
                              f"(log: {tmp_path / '41' / '41_0_log.err'})")
    assert "tiny-cnn split 2: FAILED (job 42): it ended without a result (state NO PROCESS AND NO RESULT)" in said[1]


def test_a_job_that_runs_on_after_its_submitit_process_ended_is_waited_for(tmp_path):
    """A local job's controller stopped by the warning signal (`kill -USR2 JOB_ID`) leaves
    its task running: while the job's lock is held, `--wait` waits for it and reports the
    row the task returns, never FAILED."""
    from submitit.core.utils import cloudpickle_dump
    from submitit.local.local import LocalJob

    from membench.engine.job import job_lock
    from membench.scale.launch import ClusterJob, Submitted, collect

    handle = LocalJob(tmp_path / "43", "43")  # no process, no result yet: as after the controller died
    handle.paths.folder.mkdir(parents=True)
    handle._results_timeout_s = 0
    job = Submitted(ClusterJob("tiny-cnn", 1, {}, {}), handle)
    job.job_dir = tmp_path / "work" / "tiny-cnn__demo__smoke__s0__0123456789" / "split1"
    row = {"run_id": "tiny-cnn__demo__smoke__s0__0123456789", "split": 1}
    said = []
    with contextlib.ExitStack() as running:
        running.enter_context(job_lock(job.job_dir, wait=False))  # the task, still at work

        def say(text):
            said.append(text)
            if "still runs" in text:  # the task finishes: releases its lock, then returns its row
                running.close()
                cloudpickle_dump(("success", row), handle.paths.result_pickle)

        assert collect([job], say=say, poll=0.01) == [row]
    assert "tiny-cnn split 1: its submitit process ended (job 43), but the job still runs" in said[0]
    assert said[-1] == "tiny-cnn split 1: finished (job 43)" and not any("FAILED" in t for t in said)


@pytest.mark.slow
def test_warning_a_local_jobs_controller_is_no_failure(tiny, demo_root, tmp_path, run_cli, monkeypatch):
    """`kill -USR2 JOB_ID` on a local-submitit job stops its controller (the job id is its
    pid) while the job runs on and writes its row: `--wait` says finished, not FAILED."""
    import time

    from membench.engine.job import job_lock
    from membench.scale import launch

    args = run_args(demo_root, tmp_path, "tiny-cnn", "1")
    assert run_cli(*args)[0] == 0  # the job, finished: the launched one reuses it
    (job_dir,) = (tmp_path / "work").glob("*/split1")
    original = launch.collect

    def warn_then_collect(submitted, say=print, **kwargs):
        s = submitted[0]
        s.handle._results_timeout_s = 0  # as a job that runs on longer than submitit's grace
        deadline = time.time() + 120
        while "waiting for another membench process" not in job_logs(tmp_path / "work"):
            assert time.time() < deadline, job_logs(tmp_path / "work")
            time.sleep(0.1)
        os.kill(int(s.handle.job_id), signal.SIGUSR2)
        while not s.handle.done():
            time.sleep(0.05)

        def said(text):
            say(text)
            if "still runs" in text:
                held.close()  # the job goes on, finishes and writes its row

        try:
            return original(submitted, say=said, **kwargs)
        finally:
            held.close()

    held = contextlib.ExitStack()
    held.enter_context(job_lock(job_dir, wait=False))  # the launched job waits for this
    monkeypatch.setattr(launch, "collect", warn_then_collect)
    code, _out, err = run_cli(*args, "--resume", "--launcher", "local-submitit", "--wait")
    assert code == 0, err
    text = " ".join(err.split())  # rich wraps lines
    assert "but the job still runs" in text and "tiny-cnn split 1: finished" in text and "FAILED" not in text


# ------------------------------------------------------------------------------ Slurm

@pytest.fixture
def fake_slurm(tmp_path, monkeypatch):
    """`sbatch` that keeps each script and answers with job ids 1001, 1002, ...; `srun`
    only has to exist. FAKE_SBATCH_ERROR makes sbatch refuse."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    record = tmp_path / "sbatch"
    record.mkdir()
    (bin_dir / "sbatch").write_text(f"""#!/bin/sh
if [ -n "$FAKE_SBATCH_ERROR" ]; then echo "$FAKE_SBATCH_ERROR" >&2; exit 1; fi
n=$(ls {record} | wc -l)
id=$((1001 + n))
cp "$1" {record}/$id.sh
echo "Submitted batch job $id"
""")
    (bin_dir / "srun").write_text("#!/bin/sh\nexit 0\n")
    for tool in ("sbatch", "srun"):
        (bin_dir / tool).chmod(stat.S_IRWXU)
    monkeypatch.setenv("PATH", f"{bin_dir}{os.pathsep}{os.environ['PATH']}")
    return record


def test_slurm_submits_one_array_per_model_chained_task_by_task(tiny, fake_slurm, demo_root, tmp_path, run_cli):
    code, out, err = run_cli(*run_args(demo_root, tmp_path, "tiny-chain,tiny-cnn", "1,2", "--launcher", "slurm",
                                       "--slurm-partition", "gpu", "--slurm-time", "90",
                                       "--slurm-array-parallelism", "1", "--slurm-option", "account=lab"))
    assert code == 0, err
    scripts = {p.stem: p.read_text() for p in fake_slurm.glob("*.sh")}
    assert sorted(scripts) == ["1001", "1002"]
    first, second = scripts["1001"], scripts["1002"]  # the upstream model's array is submitted first
    assert "#SBATCH --job-name=membench-tiny-cnn" in first and "membench-tiny-chain" in second
    for script in (first, second):
        for line in ("--partition=gpu", "--time=90", "--array=0-1%1", "--gpus-per-node=1", "--account=lab",
                     "--signal=USR2@120", "--cpus-per-task=8"):
            assert f"#SBATCH {line}" in script, line
    assert "--dependency" not in first
    assert "#SBATCH --dependency=aftercorr:1001" in second and "#SBATCH --kill-on-invalid-dep=yes" in second
    for job_id in ("1001_0", "1001_1", "1002_0", "1002_1"):
        assert job_id in out
    assert "4 jobs submitted" in err and "squeue" in err
    assert not (tmp_path / "lb" / "results.csv").exists()  # nothing ran here

    # each array task holds its (model, split) job: always resuming, the key's settings kept
    from membench.scale.launch import ClusterJob

    with open(tmp_path / "work" / "logs" / "submitit" / "1002_1" / "1002_1_submitted.pkl", "rb") as f:
        job = pickle.load(f).function
    assert isinstance(job, ClusterJob) and (job.model, job.split) == ("tiny-chain", 2)
    assert job.config["resume"] is True and job.config["preset"] == "smoke" and job.config["pretrained"] is False
    assert job.data["data"] == str(demo_root.resolve())
    assert job.checkpoint().function == job


@pytest.mark.parametrize("problem, expected", [
    ("refused", "sbatch refused the jobs of tiny-cnn: sbatch: error: invalid partition specified: nope"),
    ("no sbatch", "--launcher slurm: sbatch is not on PATH"),
    ("no submitit", "needs submitit: pip install 'membench[slurm]'"),
])
def test_submission_problems_are_one_line(problem, expected, tiny, fake_slurm, demo_root, tmp_path, run_cli,
                                          monkeypatch):
    if problem == "refused":
        monkeypatch.setenv("FAKE_SBATCH_ERROR", "sbatch: error: invalid partition specified: nope")
    elif problem == "no sbatch":
        (fake_slurm.parent / "bin" / "sbatch").unlink()
    else:
        monkeypatch.setitem(sys.modules, "submitit", None)
    code, out, err = run_cli(*run_args(demo_root, tmp_path, "tiny-cnn", "1", "--launcher", "slurm",
                                       "--slurm-partition", "nope"))
    assert code == 2
    assert err.strip().startswith("membench: error: ") and expected in err, err
    assert len([ln for ln in err.splitlines() if ln.strip()]) == 1, err
    assert "Traceback" not in err and out == ""


def test_an_interrupted_job_is_not_discarded_at_submission(tiny, fake_slurm, demo_root, tmp_path, run_cli):
    """Without --resume, as a local run: an interrupted job's checkpoints stop the
    submission (nothing is submitted); with --resume the job is submitted to continue."""
    from membench import registry
    from membench.commands.common import open_dataset
    from membench.engine.job import RunConfig, job_key

    class Args:
        data, dataset, dataset_option = str(demo_root), None, []

    cfg = RunConfig(out=tmp_path / "lb", work_dir=tmp_path / "work", preset="smoke", pretrained=False)
    job_dir = tmp_path / "work" / job_key(registry.get_model("tiny-cnn"), open_dataset(Args), cfg) / "split1"
    (job_dir / "stage1").mkdir(parents=True)
    (job_dir / "stage1" / "last.pt").write_bytes(b"")
    args = run_args(demo_root, tmp_path, "tiny-cnn", "1", "--launcher", "slurm")
    code, _out, err = run_cli(*args)
    assert code == 2 and "interrupted run" in err and "--resume" in err
    assert not list(fake_slurm.iterdir())
    code, _out, err = run_cli(*args, "--resume")
    assert code == 0, err
    assert [p.name for p in fake_slurm.iterdir()] == ["1001.sh"] and job_dir.exists()


@pytest.mark.parametrize("flags, expected", [
    (["--wait"], "--wait needs --launcher slurm"),
    (["--slurm-partition", "gpu"], "--slurm-partition needs --launcher slurm"),
    (["--launcher", "slurm", "--slurm-gpus-per-job", "4"], "torchrun"),
    (["--launcher", "slurm", "--jobs-per-gpu", "2"], "--jobs-per-gpu/--gpus run jobs on this machine"),
    (["--launcher", "slurm", "--slurm-time", "0"], "--slurm-time"),
    (["--launcher", "slurm", "--slurm-option", "account"], "--slurm-option takes KEY=VALUE"),
])
def test_contradictory_launcher_flags_are_one_line(flags, expected, tiny, demo_root, tmp_path, run_cli):
    code, _out, err = run_cli(*run_args(demo_root, tmp_path, "tiny-cnn", "1", *flags))
    assert code == 2 and expected in err and len(err.strip().splitlines()) == 1, err


def test_the_warning_signal_outside_submitit_saves_and_asks_for_resume(tiny, demo_root, tmp_path):
    """The job object run directly (not by submitit): the signal still stops training at
    a step boundary with a checkpoint, and the message says how to continue."""
    from membench.engine.job import RunConfig
    from membench.errors import MembenchError
    from membench.scale.launch import ClusterJob
    from membench.scale.parallel import _config_to_json

    cfg = RunConfig(out=tmp_path / "lb", work_dir=tmp_path / "work", preset="smoke", pretrained=False,
                    device="cpu", resume=True)
    job = ClusterJob("tiny-cnn", 1, _config_to_json(cfg), {"data": str(demo_root), "dataset": None,
                                                           "dataset_option": []})
    previous = signal.getsignal(signal.SIGUSR2)
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("MEMBENCH_TEST_KILL_AT", "step:stage1:1:2")
        mp.setenv("MEMBENCH_TEST_KILL_SIGNAL", "USR2")
        with pytest.raises(MembenchError, match="--resume"):
            job()
    assert signal.getsignal(signal.SIGUSR2) == previous
    (last,) = (tmp_path / "work").glob("tiny-cnn__*/split1/stage1/last.pt")
    import torch

    state = torch.load(last, weights_only=False)
    assert (state["epoch"], state["step"]) == (0, 1)  # saved at the step boundary it was warned at
    assert job()["rho"] is not None  # and it continues from there


@pytest.fixture(params=["default", "ignored"])
def sigint(request):
    """SIGINT as in a terminal, or ignored as in a process started in the background."""
    previous = signal.getsignal(signal.SIGINT)
    if request.param == "ignored":
        signal.signal(signal.SIGINT, signal.SIG_IGN)
    try:
        yield request.param
    finally:
        signal.signal(signal.SIGINT, previous)


def test_a_job_waiting_for_another_jobs_lock_stops_when_warned(sigint, tiny, demo_root, tmp_path, capsys):
    """A job blocked on the lock of a stage 1 another job is training is warned too (time
    limit, preemption): it stops waiting at once (to be requeued) rather than being killed,
    also in a process started in the background, where SIGINT is ignored (this hung once)."""
    import threading
    import time

    import torch  # noqa: F401

    import membench.engine.runner  # noqa: F401  (imported before the warning: an import it cuts short breaks torch)
    from membench import registry
    from membench.commands.common import open_dataset
    from membench.engine.job import RunConfig, job_key, job_lock
    from membench.errors import MembenchError
    from membench.scale.launch import ClusterJob
    from membench.scale.parallel import _config_to_json

    data = {"data": str(demo_root), "dataset": None, "dataset_option": []}
    cfg = RunConfig(out=tmp_path / "lb", work_dir=tmp_path / "work", preset="smoke", pretrained=False,
                    device="cpu", resume=True)

    class Args:
        data, dataset, dataset_option = str(demo_root), None, []

    job_dir = cfg.work_dir / job_key(registry.get_model("tiny-cnn"), open_dataset(Args), cfg) / "split1"
    job = ClusterJob("tiny-cnn", 1, _config_to_json(cfg), data)
    with job_lock(job_dir, wait=False):  # another process's job, as far as the job can tell
        threading.Timer(2.0, os.kill, (os.getpid(), signal.SIGUSR2)).start()
        started = time.monotonic()
        with pytest.raises(MembenchError, match="--resume"):
            job()
    assert time.monotonic() - started < 30
    err = capsys.readouterr().err
    assert "waiting for another membench process" in err and "time limit or preemption (SIGUSR2)" in err
    assert not job_dir.exists()  # it never started the job


def test_slurm_jobs_get_the_compute_nodes_device_and_precision(tiny, fake_slurm, demo_root, tmp_path, run_cli):
    """This machine has no GPU, the nodes do: --device auto means cuda for the jobs, in fp32
    unless --precision bf16 is asked, decided here so that the keys checked and printed here
    are the jobs' keys."""
    args = [a for a in run_args(demo_root, tmp_path, "tiny-cnn", "1", "--launcher", "slurm") if a != "cpu"]
    args.remove("--device")
    code, _out, err = run_cli(*args)
    assert code == 0, err
    with open(tmp_path / "work" / "logs" / "submitit" / "1001" / "1001_submitted.pkl", "rb") as f:
        job = pickle.load(f).function
    assert (job.config["device"], job.config["precision"], job.config["workers"]) == ("cuda", "fp32", 8)
    code, _out, err = run_cli(*args, "--slurm-gpus-per-job", "0")
    assert code == 0, err
    with open(tmp_path / "work" / "logs" / "submitit" / "1002" / "1002_submitted.pkl", "rb") as f:
        job = pickle.load(f).function
    assert (job.config["device"], job.config["precision"], job.config["workers"]) == ("cpu", "fp32", None)
    code, _out, err = run_cli(*args, "--precision", "bf16", "--resume")  # opt-in: the GPU jobs compute in bf16
    assert code == 0, err
    with open(tmp_path / "work" / "logs" / "submitit" / "1003" / "1003_submitted.pkl", "rb") as f:
        job = pickle.load(f).function
    assert (job.config["device"], job.config["precision"]) == ("cuda", "bf16")
    code, _out, err = run_cli(*args, "--precision", "bf16", "--slurm-gpus-per-job", "0")
    assert code == 2 and "--precision bf16 is bf16 autocast on CUDA" in err
