"""The engine: how a job becomes a trained model and a leaderboard row, one seam a module.

    job         run configuration, presets, job key, job lock
    device      where tensors run, precision, autocast, unwrapping DDP/compiled models
    inference   the one batch loop over images without gradients (predict, the caches)
    batches     where a stage's training batches come from, how it validates
    stage       one training stage: optimizer, schedule, checkpoints, resume, the epoch loop
    provenance  the environment, hardware and git commit recorded with every result

`membench.runner` orchestrates these (prepare, run, chain, record); docs/architecture.md
follows one image through them.
"""
