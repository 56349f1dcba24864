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
    assert "membench.engine.stage" in edges["membench.engine.runner"]  # top-level import
    assert "membench.results.params" in edges["membench.engine.runner"]  # imported inside a function


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
        assert registry.get_model("resnet50-lamem").plugin == "membench_plugins.models.resnet"
    finally:
        monkeypatch.undo()
        plugins._reset_for_tests()


# --- the layout by concern -------------------------------------------------------------------
# What may sit directly under membench/: the CLI entry, errors/output and the plugin API.
TOP_LEVEL = {"__init__", "__main__", "cli", "errors", "output", "spec", "contract", "options", "hookspecs",
             "registry", "plugins"}
MAX_MODULES_PER_FOLDER = 12
# A layer never imports the layers named here (lazy imports count): lower layers stay usable,
# and testable, without the ones built on them.
FORBIDDEN = {
    "membench.util": ("membench.data", "membench.weights", "membench.engine", "membench.results",
                      "membench.report", "membench.scale", "membench.commands", "membench.cli"),
    "membench.data": ("membench.report", "membench.commands", "membench.cli", "membench.scale"),
    "membench.weights": ("membench.report", "membench.commands", "membench.cli", "membench.scale"),
    "membench.engine": ("membench.commands", "membench.cli", "membench.report", "membench.scale"),
    "membench.results": ("membench.commands", "membench.cli", "membench.report", "membench.scale"),
    "membench.report": ("membench.commands", "membench.cli"),
    "membench.explain": ("membench.commands", "membench.cli", "membench.report", "membench.scale"),
    "membench.scale": ("membench.commands", "membench.cli"),
    "membench_plugins": ("membench.commands", "membench.cli"),
}


def layer_violations(edges: dict[str, set[str]]) -> list[str]:
    out = []
    for module, targets in edges.items():
        for layer, banned in FORBIDDEN.items():
            if module == layer or module.startswith(layer + "."):
                out += [f"{module} imports {t}" for t in sorted(targets)
                        if any(t == b or t.startswith(b + ".") for b in banned)]
    return out


def test_the_layer_check_finds_a_planted_violation():
    edges = {"membench.data.loader": {"membench.report.tables"}, "membench.engine.runner": {"membench.cli"},
             "membench.report.tables": {"membench.data.loader"}}
    assert layer_violations(edges) == ["membench.data.loader imports membench.report.tables",
                                       "membench.engine.runner imports membench.cli"]


def test_lower_layers_never_import_higher_ones():
    assert layer_violations(graph()) == []


def test_membench_is_grouped_by_concern():
    top = sorted(p.stem for p in (ROOT / "membench").glob("*.py"))
    assert set(top) <= TOP_LEVEL, f"modules directly under membench/ that belong in a subpackage: " \
                                  f"{sorted(set(top) - TOP_LEVEL)}"
    for package, folder in PACKAGES.items():
        for sub in [folder, *(p for p in folder.rglob("*") if p.is_dir() and p.name != "__pycache__")]:
            modules_here = [p for p in sub.glob("*.py") if p.name != "__init__.py"]
            assert len(modules_here) <= MAX_MODULES_PER_FOLDER, f"{sub} holds {len(modules_here)} modules"


def long_functions(max_lines: int = 60) -> list[str]:
    out = []
    for name, path in modules().items():
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
                length = node.end_lineno - node.lineno + 1
                if length > max_lines:
                    out.append(f"{name}.{node.name} ({length} lines)")
    return out


def test_no_function_is_over_60_lines():
    assert long_functions() == []


@pytest.mark.parametrize("old,new", [("membench.lamem", "membench.data.layout"),
                                     ("membench.download", "membench.data.download"),
                                     ("membench.released", "membench.weights.released")])
def test_moved_public_modules_import_from_their_old_names_with_a_warning(old, new, monkeypatch):
    """docs/plugins.md named these before the regrouping: a plugin importing them keeps
    working for one release, warned, and gets the very module (patching one patches both)."""
    import importlib
    import sys

    monkeypatch.delitem(sys.modules, old, raising=False)
    with pytest.warns(DeprecationWarning, match=f"{old} moved to {new}"):
        module = importlib.import_module(old)
    assert module is importlib.import_module(new)
    with pytest.raises(ModuleNotFoundError):
        importlib.import_module("membench.no_such_module")


def test_the_plugin_api_helpers_import_from_where_the_guide_says():
    from membench.data import LamemLayout
    from membench.weights import hub_checkpoints_dir, load_state_dict, resolve_file, torchvision_weights

    assert LamemLayout.__module__ == "membench.data.layout"
    assert {f.__module__ for f in (hub_checkpoints_dir, load_state_dict, resolve_file, torchvision_weights)} \
        == {"membench.weights.resolve"}


def test_every_subpackage_is_listed_for_the_wheel():
    """An editable install finds any folder; a wheel ships only the packages pyproject lists."""
    tomllib = pytest.importorskip("tomllib")  # Python 3.11+

    listed = set(tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["setuptools"]["packages"])
    found = {".".join((package, *init.parent.relative_to(folder).parts))
             for package, folder in PACKAGES.items() for init in folder.rglob("__init__.py")}
    assert found == listed
