"""One plugin manager. Built-in plugins and third-party ones (entry points in the group
"membench") are loaded the same way; one that fails to import is reported and skipped
(fatal with MEMBENCH_STRICT_PLUGINS=1)."""

from __future__ import annotations

import importlib
import importlib.metadata
import os

import pluggy

from membench import hookspecs

# Built-in model and dataset plugins: ordinary plugin modules under plugins/.
DEFAULT_PLUGINS = (
    "membench_plugins.models.resnet",
    "membench_plugins.models.ours",
    "membench_plugins.models.amnet",
    "membench_plugins.models.memnet",
    "membench_plugins.models.squalli",
    "membench_plugins.models.resmem",
    "membench_plugins.models.vitmem",
    "membench_plugins.models.probe",
    "membench_plugins.datasets.demo",
    "membench_plugins.datasets.lamem",
    "membench_plugins.datasets.lnsim",
    "membench_plugins.datasets.csvdata",
    "membench_plugins.datasets.memcat",
    "membench_plugins.datasets.things",
    "membench_plugins.datasets.figrim",
    "membench_plugins.datasets.sun",
)

pm = pluggy.PluginManager("membench")
pm.add_hookspecs(hookspecs)

failures: list[tuple[str, str]] = []  # (plugin name, one-line reason)
_loaded = False
generation = 0  # bumped when the plugins change (tests): caches of what they registered key on it


def _strict() -> bool:
    return os.environ.get("MEMBENCH_STRICT_PLUGINS", "") not in ("", "0")


def _fail(name: str, exc: BaseException) -> None:
    reason = f"{type(exc).__name__}: {exc}".splitlines()[0]
    if _strict():
        from membench.errors import MembenchError

        raise MembenchError(f"plugin {name!r} failed to load ({reason}); MEMBENCH_STRICT_PLUGINS is set")
    failures.append((name, reason))


def load() -> pluggy.PluginManager:
    """Import every plugin once; later calls are free."""
    global _loaded
    if _loaded:
        return pm
    _loaded = True
    for module_name in DEFAULT_PLUGINS:
        try:
            pm.register(importlib.import_module(module_name), name=module_name)
        except Exception as exc:  # a broken plugin must not break the others
            _fail(module_name, exc)
    for ep in importlib.metadata.entry_points(group="membench"):
        if pm.get_plugin(ep.value) is not None or pm.is_blocked(ep.name):
            continue  # a built-in also declared as an entry point
        try:
            pm.register(ep.load(), name=ep.value)
        except Exception as exc:
            _fail(f"{ep.name} ({ep.value})", exc)
    while True:
        try:
            pm.check_pending()
            break
        except pluggy.PluginValidationError as exc:  # a misspelt hook: report, keep the rest
            _fail(pm.get_name(exc.plugin) or str(exc.plugin), exc)
            pm.unregister(exc.plugin)
    return pm


def call_each(hook: str, **kwargs) -> None:
    """Call `hook` through pluggy's hook caller once per plugin that implements it, with
    `kwargs(plugin name)` as its arguments, so that each call knows which plugin registers.

    Through the hook caller, pluggy passes each implementation only the arguments it
    declares (a hook can gain arguments without breaking older plugins) and runs
    `wrapper=True` implementations properly. One call per plugin keeps the plugins apart:
    one that raises is reported (see `failures`) and the others still register.
    MembenchError (e.g. a name registered twice) is the user's to see and propagates."""
    from membench.errors import MembenchError

    caller = getattr(load().hook, hook)
    implementers = list(dict.fromkeys(impl.plugin for impl in caller.get_hookimpls()))
    for plugin in implementers:
        name = pm.get_name(plugin)
        others = [p for p in pm.get_plugins() if p is not plugin]
        try:
            pm.subset_hook_caller(hook, remove_plugins=others)(**{k: v(name) for k, v in kwargs.items()})
        except MembenchError:
            raise
        except Exception as exc:  # a broken plugin must not break the others
            _fail(name, exc)


def describe() -> list[dict]:
    """The loaded plugins, their hooks and versions (for `membench plugins`)."""
    load()
    dists = importlib.metadata.packages_distributions()
    out = []
    for name, plugin in pm.list_name_plugin():
        top = name.split(".")[0]
        dist = (dists.get(top) or [None])[0]
        version = importlib.metadata.version(dist) if dist else None
        hooks = sorted(h.name for h in pm.get_hookcallers(plugin) or [])
        out.append({"name": name, "hooks": hooks, "version": version,
                    "builtin": name in DEFAULT_PLUGINS})
    for name, reason in failures:
        out.append({"name": name, "hooks": [], "version": None, "error": reason})
    return out


def _reset_for_tests() -> None:
    """Forget loaded plugins (tests that install plugins at run time)."""
    global _loaded, generation
    for name, plugin in list(pm.list_name_plugin()):
        pm.unregister(plugin, name=name)
    failures.clear()
    _loaded = False
    generation += 1
