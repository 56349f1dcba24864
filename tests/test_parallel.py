"""Concurrent (model, split) jobs: planning, GPU slots, dependencies, failures."""

from __future__ import annotations

import json
import sys
import time

import pytest

from membench.errors import MembenchError
from membench.scale.parallel import Job, parse_gpus, plan, run_jobs
from membench.spec import ModelSpec, Stage


def spec(name, *stages):
    return ModelSpec(name=name, build=lambda ctx: None, recipe=stages or (Stage("s1"),))


def test_plan_puts_chained_models_first():
    a = spec("a")
    b = spec("b", Stage("stage1", model="a"), Stage("stage2"))
    jobs = plan([b, a], [1, 3])
    assert [(j.model, j.split) for j in jobs] == [("a", 1), ("a", 3), ("b", 1), ("b", 3)]
    assert jobs[2].after == (0,) and jobs[3].after == (1,) and jobs[0].after == ()
    alone = plan([b], [2])  # the upstream is not requested: the child runs it itself
    assert alone == [Job("b", 2, ())]


def test_parse_gpus():
    assert parse_gpus("all", 3) == ["0", "1", "2"]
    assert parse_gpus(None, 2) == ["0", "1"]
    assert parse_gpus("2", 4) == ["0", "1"]
    assert parse_gpus("1,3", 4) == ["1", "3"]
    with pytest.raises(MembenchError, match="does not exist"):
        parse_gpus("0,5", 2)
    with pytest.raises(MembenchError, match="none is visible"):
        parse_gpus("all", 0)
    with pytest.raises(MembenchError, match="comma list"):
        parse_gpus("cuda:0", 2)


SCRIPT = """
import json, os, sys, time
t0 = time.time(); time.sleep(float(sys.argv[2]))
json.dump({"gpu": os.environ.get("CUDA_VISIBLE_DEVICES"), "start": t0, "end": time.time()},
          open(sys.argv[1], "w"))
sys.exit(int(sys.argv[3]))
"""


def test_run_jobs_slots_dependencies_and_failures(tmp_path):
    jobs = [Job("a", 1), Job("a", 2), Job("c", 1), Job("b", 1, after=(0,)), Job("d", 1, after=(2,))]
    fail = {"c"}

    def command(job):
        return [sys.executable, "-c", SCRIPT, str(tmp_path / f"{job.model}{job.split}.json"), "0.4",
                "3" if job.model in fail else "0"]

    said = []
    codes = run_jobs(jobs, ["0", "1"], command, tmp_path / "logs", say=said.append)
    assert codes == {0: 0, 1: 0, 2: 3, 3: 0, 4: -1}
    runs = {p.stem: json.loads(p.read_text()) for p in tmp_path.glob("*.json")}
    assert set(runs) == {"a1", "a2", "c1", "b1"}
    assert {r["gpu"] for r in runs.values()} <= {"0", "1"}
    assert runs["b1"]["start"] >= runs["a1"]["end"]  # waited for its upstream
    events = sorted([(r["start"], 1) for r in runs.values()] + [(r["end"], -1) for r in runs.values()])
    level = peak = 0
    for _, d in events:
        level += d
        peak = max(peak, level)
    assert peak <= 2  # never more jobs than slots
    assert any("FAILED (exit 3)" in s for s in said) and any("d split 1: not started" in s for s in said)
    assert (tmp_path / "logs" / "a__split1.log").is_file()


@pytest.mark.slow
def test_grid_of_two_jobs_end_to_end(tmp_path, demo_root):
    from membench import registry
    from membench.engine.runner import RunConfig
    from membench.scale.parallel import run_grid_on

    cfg = RunConfig(out=tmp_path / "lb", work_dir=tmp_path / "work", preset="smoke", pretrained=False)
    t0 = time.time()
    assert run_grid_on([registry.get_model("resnet50-lamem")], [1, 2], cfg,
                       {"data": str(demo_root), "dataset": "lamem", "dataset_option": []}, [None, None]) == 0
    import csv

    rows = list(csv.DictReader((tmp_path / "lb" / "results.csv").open()))
    assert sorted(int(r["split"]) for r in rows) == [1, 2], time.time() - t0


def test_cli_jobs_per_gpu_needs_a_gpu(run_cli):
    import torch

    if torch.cuda.is_available():
        pytest.skip("a GPU is present")
    code, _, err = run_cli("run", "--model", "resnet50-lamem", "--data", "demo", "--preset", "smoke",
                           "--jobs-per-gpu", "2")
    assert code == 2 and "need a CUDA device" in err


def test_compile_flag_reaches_the_model(monkeypatch):
    import torch

    from membench.engine.device import resolve_device

    calls = []
    monkeypatch.setattr(torch.nn.Module, "compile", lambda self, **kw: calls.append(kw), raising=True)
    device = resolve_device("cpu", workers=0, compile=True)
    model = device.prepare(torch.nn.Linear(2, 1))
    assert isinstance(model, torch.nn.Linear) and calls == [{"mode": None}]
    assert resolve_device("cpu", workers=0).compile is False
