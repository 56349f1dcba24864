"""Results: the record of what was measured, and what every number stands for.

    leaderboard    results.csv, summary.csv, run JSON and per-image predictions, written atomically
    check          reading a results.csv strictly before anything is written or reported
    metrics        Spearman's rho and MSE
    params         parameter counts on the meta device
    configuration  a run's configuration as a readable label and an id
    identity       what a row records so that it can be traced (configuration, git, files)
    grouping       which runs a table row stands for and how it is labelled
    runs           the job directories under a work directory: status, size, cleaning
"""
