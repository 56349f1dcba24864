"""The engine's seams stay visible: no import cycles among membench's modules and the
built-in plugins (imports inside functions count too: a lazy import is still a dependency),
and the plugin registry calls hooks through pluggy."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
PACKAGES = {"membench": ROOT / "membench", "membench_plugins": ROOT / "plugins"}


def modules() -> dict[str, Path]:
    out = {}
    for package, folder in PACKAGES.items():
        for path in folder.rglob("*.py"):
            parts = path.relative_to(folder).with_suffix("").parts
            name = ".".join((package, *parts))
            out[name.removesuffix(".__init__")] = path
    return out


def imports(name: str, path: Path, known: set[str]) -> set[str]:
    """Modules of `known` that `name` imports anywhere in its source. `from pkg import x`
    counts as importing pkg.x when that is a module, else pkg."""
    tree = ast.parse(path.read_text(encoding="utf-8"))
    is_package = path.name == "__init__.py"
    found = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found.update(a.name for a in node.names)
        elif isinstance(node, ast.ImportFrom):
            if node.level:  # relative: resolve against this module's package
                base = name.split(".")[: len(name.split(".")) - node.level + (1 if is_package else 0)]
                module = ".".join(base + ([node.module] if node.module else []))
            else:
                module = node.module or ""
            for a in node.names:
                found.add(f"{module}.{a.name}" if f"{module}.{a.name}" in known else module)
    return {m for m in found if m in known and m != name}


def graph() -> dict[str, set[str]]:
    mods = modules()
    return {name: imports(name, path, set(mods)) for name, path in mods.items()}


def find_cycle(edges: dict[str, set[str]]) -> list[str] | None:
    state: dict[str, int] = {}  # 1: on the current path, 2: done
    path: list[str] = []

    def visit(node):
        state[node] = 1
        path.append(node)
        for nxt in sorted(edges.get(node, ())):
            if state.get(nxt) == 1:
                return path[path.index(nxt):] + [nxt]
            if nxt not in state:
                cycle = visit(nxt)
                if cycle:
                    return cycle
        path.pop()
        state[node] = 2
        return None

    for node in sorted(edges):
        if node not in state:
            cycle = visit(node)
            if cycle:
                return cycle
    return None


def test_cycle_finder_finds_a_planted_cycle():
    assert find_cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == ["a", "b", "c", "a"]
    assert find_cycle({"a": {"b"}, "b": {"c"}, "c": set()}) is None


def test_the_graph_sees_lazy_imports():
    edges = graph()
    assert "membench.engine.stage" in edges["membench.runner"]  # top-level import
    assert "membench.params" in edges["membench.runner"]  # imported inside a function


def test_no_import_cycles_in_membench_and_plugins():
    cycle = find_cycle(graph())
    assert cycle is None, "import cycle: " + " -> ".join(cycle)


@pytest.mark.parametrize("hook_style", ["plain", "wrapper"])
def test_hooks_run_through_pluggy_wrappers_included(monkeypatch, hook_style):
    """A `wrapper=True` implementation registers what it registers around its yield (it used
    to be called as a plain function, which made a generator and registered nothing)."""
    import sys
    import types

    from membench import ModelSpec, Stage, hookimpl, plugins, registry

    module = types.ModuleType("membench_wrapper_plugin")
    spec = ModelSpec("wrapped-model", build=lambda ctx: None, recipe=(Stage("fit", epochs=1, batch_size=2, lr=0.1),))
    if hook_style == "wrapper":
        @hookimpl(wrapper=True)
        def register_models(register):
            register(spec)
            return (yield)
    else:
        @hookimpl
        def register_models(register):
            register(spec)
    module.register_models = register_models
    monkeypatch.setitem(sys.modules, module.__name__, module)
    monkeypatch.setattr(plugins, "DEFAULT_PLUGINS", plugins.DEFAULT_PLUGINS + (module.__name__,))
    plugins._reset_for_tests()
    try:
        assert registry.get_model("wrapped-model").plugin == module.__name__
        assert registry.get_model("resnet50-lamem").plugin == "membench_plugins.resnet"
    finally:
        monkeypatch.undo()
        plugins._reset_for_tests()
