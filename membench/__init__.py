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

# Modules that docs/plugins.md named before the layout by concern (0.1.0): importable from the
# old place for one more release, with a DeprecationWarning naming the new one.
_MOVED = {
    "membench.lamem": "membench.data.layout",
    "membench.download": "membench.data.download",
    "membench.released": "membench.weights.released",
}


class _MovedModuleFinder:
    """Resolves an old module name to the module at its new place (the same object, so
    monkeypatching either name patches both)."""

    @classmethod
    def find_spec(cls, name, path=None, target=None):
        if name not in _MOVED:
            return None
        import importlib.util

        return importlib.util.spec_from_loader(name, cls)

    @staticmethod
    def create_module(spec):
        import importlib
        import warnings

        new = _MOVED[spec.name]
        warnings.warn(f"{spec.name} moved to {new}; the old name goes in the next release",
                      DeprecationWarning, stacklevel=3)
        return importlib.import_module(new)

    @staticmethod
    def exec_module(module):
        pass


def __getattr__(name):  # `from membench import lamem`
    if f"membench.{name}" in _MOVED:
        import importlib

        return importlib.import_module(f"membench.{name}")
    raise AttributeError(f"module 'membench' has no attribute {name!r}")


import sys as _sys  # noqa: E402

_sys.meta_path.append(_MovedModuleFinder)

__all__ = [
    "hookimpl", "ModelSpec", "Option", "DatasetSpec", "Preprocess", "Reported", "Stage", "BuildContext",
    "Sample", "Split", "IMAGENET_MEAN", "IMAGENET_STD", "__version__",
]
