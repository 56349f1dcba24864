"""The engine: how a job becomes a trained model and a leaderboard row, one seam a module.

    job         run configuration, presets, job key, job lock
    device      where tensors run, precision, autocast, unwrapping DDP/compiled models
    inference   the one batch loop over images without gradients (predict, the caches)
    batches     where a stage's training batches come from, how it validates
    stage       one training stage: optimizer, schedule, checkpoints, resume, the epoch loop
    provenance  the environment, hardware and git commit recorded with every result
    seeds       seeds that make a run reproducible whatever ran before it
    checkpoints what a stage saves (frugal checkpoints) and how they are read back
    cache       exact caching of frozen outputs; cached training views (an approximation)
    distributed one job on several GPUs (torchrun + DDP)
    crosseval   the checkpoints of a finished run, scored on another dataset
    runner      orchestration only: prepare, run, chain, record

docs/architecture.md follows one image through them.
"""
