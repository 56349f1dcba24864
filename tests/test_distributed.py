"""torchrun/DDP helpers: environment parsing, batch sharding, and DDP == one process."""

from __future__ import annotations

import pytest
import torch

from membench.engine.distributed import Dist, context, unwrap, wrap
from membench.errors import MembenchError


def test_context_from_torchrun_environment():
    assert context({}) == Dist(0, 1, 0) and not context({}).enabled
    ctx = context({"RANK": "3", "WORLD_SIZE": "4", "LOCAL_RANK": "1"})
    assert ctx == Dist(3, 4, 1) and ctx.enabled and not ctx.is_main
    assert ctx.local_batch(16) == 4
    with pytest.raises(MembenchError, match="does not divide"):
        ctx.local_batch(10)
    with pytest.raises(MembenchError, match="integers"):
        context({"RANK": "x"})


def test_wrap_is_identity_on_one_process():
    m = torch.nn.Linear(2, 1)
    assert wrap(m, Dist(), "cpu") is m and unwrap(m) is m


def _steps(rank, world, port, out):
    """Three Adam steps on a shared toy problem; each rank takes its shard of the batch."""
    import torch.distributed as dist

    from membench.data.loader import EpochSampler

    if world > 1:
        dist.init_process_group("gloo", init_method=f"tcp://127.0.0.1:{port}", rank=rank, world_size=world)
    torch.manual_seed(0)
    x, y = torch.randn(12, 5), torch.randn(12)
    model = torch.nn.Sequential(torch.nn.Linear(5, 8), torch.nn.ReLU(), torch.nn.Linear(8, 1))
    ctx = Dist(rank, world, rank)
    ddp = wrap(model, ctx, "cpu")
    opt = torch.optim.Adam(ddp.parameters(), lr=0.1)
    keys = list(EpochSampler(12, shuffle=True, seed=0, rank=rank, world_size=world))
    idx = [i for _, i in keys]
    local = ctx.local_batch(6)
    for step in range(2):
        b = idx[step * local:(step + 1) * local]
        loss = torch.nn.functional.mse_loss(ddp(x[b]).squeeze(1), y[b])
        opt.zero_grad()
        loss.backward()
        opt.step()
    if rank == 0:
        torch.save(unwrap(ddp).state_dict(), out)
    if world > 1:
        dist.destroy_process_group()


@pytest.mark.slow
def test_ddp_two_processes_equal_one_process(tmp_path):
    """Global batch 6 on one process vs 3 + 3 on two DDP ranks: the same weights. On one
    process the sampler order is the concatenation of the ranks' interleaved shards, so the
    single-process run below feeds the same images per step."""
    import socket

    import torch.multiprocessing as mp

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    mp.spawn(_steps, args=(2, port, tmp_path / "ddp.pt"), nprocs=2)
    two = torch.load(tmp_path / "ddp.pt")

    from membench.data.loader import EpochSampler

    torch.manual_seed(0)
    x, y = torch.randn(12, 5), torch.randn(12)
    model = torch.nn.Sequential(torch.nn.Linear(5, 8), torch.nn.ReLU(), torch.nn.Linear(8, 1))
    opt = torch.optim.Adam(model.parameters(), lr=0.1)
    shards = [[i for _, i in EpochSampler(12, shuffle=True, seed=0, rank=r, world_size=2)] for r in range(2)]
    for step in range(2):
        b = shards[0][step * 3:(step + 1) * 3] + shards[1][step * 3:(step + 1) * 3]
        loss = torch.nn.functional.mse_loss(model(x[b]).squeeze(1), y[b])
        opt.zero_grad()
        loss.backward()
        opt.step()
    for k, v in model.state_dict().items():
        torch.testing.assert_close(two[k], v, rtol=1e-5, atol=1e-6)


DRIVER = """
import sys
sys.path.insert(0, {tests!r})
import tiny_plugin
from membench import plugins
plugins.load().register(tiny_plugin, name="tests.tiny_plugin")
from membench.cli import main
sys.exit(main(sys.argv[1:]))
"""


@pytest.mark.slow
def test_torchrun_two_processes_one_job(tmp_path, demo_root):
    """`torchrun --nproc-per-node 2 -m membench run ...` on CPU (gloo): one job, one
    leaderboard row, checkpoints written once."""
    import csv
    import os
    import shutil
    import subprocess
    import sys
    from pathlib import Path

    torchrun = shutil.which("torchrun")
    if torchrun is None:
        pytest.skip("torchrun not on PATH")
    driver = tmp_path / "driver.py"
    driver.write_text(DRIVER.format(tests=str(Path(__file__).parent)))
    env = dict(os.environ, OMP_NUM_THREADS="1")
    proc = subprocess.run(
        [torchrun, "--standalone", "--nproc-per-node", "2", str(driver), "run", "--model", "tiny-chain",
         "--splits", "1", "--data", str(demo_root), "--preset", "smoke", "--pretrained", "none",
         "--device", "cpu", "--out", str(tmp_path / "lb"), "--work-dir", str(tmp_path / "work")],
        capture_output=True, text=True, timeout=900, env=env)
    assert proc.returncode == 0, proc.stderr[-3000:]
    rows = list(csv.DictReader((tmp_path / "lb" / "results.csv").open()))
    assert sorted(r["model"] for r in rows) == ["tiny-chain", "tiny-cnn"]
    assert len(list((tmp_path / "work").rglob("best.pt"))) == 2  # stage 1 and stage 2, once each
