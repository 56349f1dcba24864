"""The hooks a membench plugin may implement. Each receives a `register` callback."""

from pluggy import HookimplMarker, HookspecMarker

hookspec = HookspecMarker("membench")
hookimpl = HookimplMarker("membench")


@hookspec
def register_models(register):
    """Register models: call ``register(ModelSpec(...))`` once per model."""


@hookspec
def register_model_families(register):
    """Register name families resolved on demand: ``register(prefix, resolve)``,
    where ``resolve(name)`` returns a ModelSpec for e.g. ``timm/resnet18``."""


@hookspec
def register_datasets(register):
    """Register datasets: call ``register(DatasetSpec(...))`` once per dataset."""


@hookspec
def register_commands(subparsers):
    """Add CLI sub-commands: ``subparsers.add_parser(...)``; set ``func`` via set_defaults."""
