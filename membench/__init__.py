"""membench: a plugin-based benchmark suite for image-memorability models.

The public API for plugin authors is what this module exports; everything else may move.
"""

from membench.hookspecs import hookimpl
from membench.spec import (
    IMAGENET_MEAN,
    IMAGENET_STD,
    BuildContext,
    DatasetSpec,
    ModelSpec,
    Option,
    Preprocess,
    Reported,
    Sample,
    Split,
    Stage,
)

__version__ = "0.1.0"

__all__ = [
    "hookimpl", "ModelSpec", "Option", "DatasetSpec", "Preprocess", "Reported", "Stage", "BuildContext",
    "Sample", "Split", "IMAGENET_MEAN", "IMAGENET_STD", "__version__",
]
