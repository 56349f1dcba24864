"""Throughput and scale-out: measuring images/s, and spreading jobs over processes, GPUs
and clusters. Each job still runs through membench.engine.runner.

    bench     images/s of the data pipeline and of every model, beside plain references
    parallel  several (model, split) jobs at once, N per GPU
    launch    every job as its own cluster job (submitit: Slurm or local)
"""
