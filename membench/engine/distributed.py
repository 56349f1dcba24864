"""One job on several GPUs: `torchrun` + DistributedDataParallel.

    torchrun --standalone --nproc-per-node 4 -m membench run --model ours --splits 1 \\
        --data /data/lamem --device cuda

torchrun starts one process per GPU and sets RANK, WORLD_SIZE and LOCAL_RANK. The stage's
batch size stays the protocol's *global* batch: each of W ranks takes batch/W images of
the same shuffled order (`EpochSampler` shards it so that the ranks' step-s shares are
exactly the single-process step-s batch, augmentations included), DDP averages the
gradients and, on cuda, SyncBatchNorm computes statistics over the global batch: a step
is the single-GPU step up to floating-point summation order. Every rank validates on the whole validation set
(identical weights give identical decisions, no extra communication); only rank 0 writes
checkpoints, results and leaderboard rows.

At the paper's batches (10 and 16) one H200 is far from full with a single job; running
several jobs side by side (`--jobs-per-gpu`, membench.scale.parallel) is the better use of
several GPUs. DDP is for one large job (bigger batches, larger models).
"""

from __future__ import annotations

import os
from dataclasses import dataclass

from membench.errors import MembenchError


@dataclass(frozen=True)
class Dist:
    rank: int = 0
    world_size: int = 1
    local_rank: int = 0

    @property
    def enabled(self) -> bool:
        return self.world_size > 1

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    def local_batch(self, batch: int) -> int:
        """This rank's share of the global batch."""
        if batch % self.world_size:
            raise MembenchError(f"the batch size {batch} does not divide among {self.world_size} processes; "
                                f"use a process count that divides it (the protocol's batch is kept global)")
        return batch // self.world_size


def context(environ=None) -> Dist:
    """The torchrun environment (a single process when the variables are absent)."""
    env = os.environ if environ is None else environ
    try:
        return Dist(rank=int(env.get("RANK", 0)), world_size=int(env.get("WORLD_SIZE", 1)),
                    local_rank=int(env.get("LOCAL_RANK", 0)))
    except ValueError:
        raise MembenchError("RANK, WORLD_SIZE and LOCAL_RANK must be integers (set by torchrun)") from None


def init(device_type: str) -> Dist:
    """Join the process group once (nccl on cuda, gloo on cpu) and pin this rank's GPU."""
    import torch
    import torch.distributed as dist

    ctx = context()
    if not ctx.enabled:
        return ctx
    if device_type == "cuda":
        torch.cuda.set_device(ctx.local_rank)
    if not dist.is_initialized():
        dist.init_process_group("nccl" if device_type == "cuda" else "gloo")
    return ctx


def wrap(model, ctx: Dist, device_type: str):
    """DDP over the trainable parameters (frozen ones are ignored), or the model itself.
    On cuda, BatchNorm becomes SyncBatchNorm: training statistics over the global batch,
    as on one GPU (frozen BatchNorm in eval mode keeps using its running statistics)."""
    if not ctx.enabled:
        return model
    import torch
    from torch.nn.parallel import DistributedDataParallel as DDP

    if device_type == "cuda":
        model = torch.nn.SyncBatchNorm.convert_sync_batchnorm(model)
        return DDP(model, device_ids=[ctx.local_rank])
    return DDP(model)


from membench.engine.device import unwrap  # noqa: E402,F401  (the one place that knows the wrappers)


def barrier(ctx: Dist) -> None:
    if ctx.enabled:
        import torch.distributed as dist

        dist.barrier()
