"""Where training used to live; kept so that code importing from here still works.

The engine now names its seams (membench/engine/): `device` (Device, resolve_device),
`inference` (predict), `stage` (train_stage, checkpoints), `seeds` (epoch_seed).
New code imports from there.
"""

from membench.contract import training_loss as compute_loss  # noqa: F401
from membench.engine.device import Device, resolve_device  # noqa: F401
from membench.engine.inference import predict  # noqa: F401
from membench.engine.seeds import epoch_seed  # noqa: F401
from membench.engine.stage import (  # noqa: F401
    StageOutcome,
    freeze,
    load_checkpoint,
    save_checkpoint,
    train_stage,
)
