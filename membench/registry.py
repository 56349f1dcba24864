"""Looking up registered models and datasets by name, pattern or family."""

from __future__ import annotations

import difflib
import fnmatch
from functools import lru_cache
from typing import Callable

from membench import plugins
from membench.errors import MembenchError
from membench.spec import DatasetSpec, ModelSpec


def _collect() -> tuple[dict[str, ModelSpec], dict[str, Callable], dict[str, DatasetSpec]]:
    plugins.load()
    return _collect_for(plugins.generation)


@lru_cache(maxsize=1)
def _collect_for(generation: int):
    """What the loaded plugins register (cached until the plugins change: `generation`)."""
    models: dict[str, ModelSpec] = {}
    families: dict[str, Callable[[str], ModelSpec]] = {}
    datasets: dict[str, DatasetSpec] = {}

    def register_model(plugin_name: str):
        def register(spec: ModelSpec):
            if spec.name in models:
                raise MembenchError(f"model {spec.name!r} registered twice "
                                    f"({models[spec.name].plugin} and {plugin_name})")
            models[spec.name] = _with_plugin(spec, plugin_name)
        return register

    def register_family(plugin_name: str):
        def register(prefix: str, resolve: Callable[[str], ModelSpec]):
            families[prefix] = lambda name: _with_plugin(resolve(name), plugin_name)
        return register

    def register_dataset(plugin_name: str):
        def register(spec: DatasetSpec):
            if spec.name in datasets:
                raise MembenchError(f"dataset {spec.name!r} registered twice")
            datasets[spec.name] = _with_plugin(spec, plugin_name)
        return register

    plugins.call_each("register_models", register=register_model)
    plugins.call_each("register_model_families", register=register_family)
    plugins.call_each("register_datasets", register=register_dataset)
    return models, families, datasets


def _with_plugin(spec, plugin_name: str):
    from dataclasses import replace

    return spec if spec.plugin else replace(spec, plugin=plugin_name)


def clear_cache() -> None:
    _collect_for.cache_clear()


def models() -> dict[str, ModelSpec]:
    return dict(_collect()[0])


def datasets() -> dict[str, DatasetSpec]:
    return dict(_collect()[2])


def families() -> list[str]:
    return sorted(_collect()[1])


def _unknown(kind: str, name: str, known: list[str]) -> MembenchError:
    close = difflib.get_close_matches(name, known, n=3, cutoff=0.5)
    hint = f"; did you mean {', '.join(close)}?" if close else f"; known: {', '.join(sorted(known)) or 'none'}"
    return MembenchError(f"unknown {kind} {name!r}{hint}")


def get_model(name: str) -> ModelSpec:
    known, fams, _ = _collect()
    if name in known:
        return known[name]
    for prefix, resolve in fams.items():
        if name.startswith(prefix + "/"):
            return resolve(name)
    return _unknown_model(name)


def _unknown_model(name: str):
    known, fams, _ = _collect()
    raise _unknown("model", name, list(known) + [f"{p}/<name>" for p in fams])


def select_models(expr: str) -> list[ModelSpec]:
    """`expr` is a name, a comma list, a wildcard (`resnet50*`) or `all`."""
    known = models()
    chosen: list[ModelSpec] = []
    for part in [p.strip() for p in expr.split(",") if p.strip()]:
        if part == "all":
            matches = list(known.values())
        elif any(c in part for c in "*?["):
            matches = [known[n] for n in sorted(known) if fnmatch.fnmatchcase(n, part)]
            if not matches:
                raise MembenchError(f"no model matches {part!r}; see `membench models`")
        else:
            matches = [get_model(part)]
        chosen.extend(m for m in matches if m.name not in {c.name for c in chosen})
    if not chosen:
        raise MembenchError("no model given; see `membench models`")
    return chosen


def get_dataset(name: str) -> DatasetSpec:
    known = _collect()[2]
    if name not in known:
        raise _unknown("dataset", name, list(known))
    return known[name]
