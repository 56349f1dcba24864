"""The example external plugin in docs/examples installs with pip and works through the CLI,
exactly as a third-party package would (entry point group "membench")."""

from __future__ import annotations

import csv
import importlib.util
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
EXAMPLE = REPO / "docs" / "examples" / "membench-example-plugin"


@pytest.fixture(scope="module")
def installed(tmp_path_factory):
    """pip-install the example into a private directory (a copy of the source, because pip
    builds in-tree and must not write into the checkout)."""
    base = tmp_path_factory.mktemp("plugin")
    source = base / "src"
    shutil.copytree(EXAMPLE, source)
    target = base / "site"
    subprocess.run([sys.executable, "-m", "pip", "install", "--quiet", "--no-deps",
                    "--no-build-isolation", "--no-input", "--target", str(target), str(source)],
                   check=True, capture_output=True, text=True)
    home = base / "home"
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(target), os.environ.get("PYTHONPATH", "")]),
           "MEMBENCH_HOME": str(home)}
    return env


def membench(env, *args, timeout=300):
    return subprocess.run([sys.executable, "-m", "membench", *args], env=env, cwd=REPO,
                          capture_output=True, text=True, timeout=timeout)


def test_example_is_a_complete_package():
    text = (EXAMPLE / "pyproject.toml").read_text()
    assert '[project.entry-points.membench]\ntoy = "membench_toy"' in text
    assert (EXAMPLE / "membench_toy.py").is_file()


def test_plugin_guide_shows_the_example_verbatim():
    """The tutorial in docs/plugins.md is the tested package, not a drifting copy."""
    guide = (REPO / "docs" / "plugins.md").read_text()
    module = (EXAMPLE / "membench_toy.py").read_text()
    assert f"```python\n{module}```" in guide
    assert '[project.entry-points.membench]\ntoy = "membench_toy"' in guide


def test_toy_model_is_listed(installed):
    result = membench(installed, "models", "--format", "csv")
    assert result.returncode == 0, result.stderr
    rows = {r["model"]: r for r in csv.DictReader(result.stdout.splitlines())}
    assert rows["toy-cnn"]["input"] == "64x64"
    assert rows["toy-cnn"]["plugin"] == "membench_toy"
    plugins = membench(installed, "plugins")
    assert '"name": "membench_toy"' in plugins.stdout


def test_toy_model_params_match_its_declaration(installed):
    result = membench(installed, "params", "toy-cnn", "--format", "csv")
    assert result.returncode == 0, result.stderr
    row = next(csv.DictReader(result.stdout.splitlines()))
    # 3*8*9+8 + 8*16*9+16 + 16+1, counted by hand
    assert (row["params_total"], row["matches_spec"]) == ("1409", "True")


@pytest.mark.skipif(importlib.util.find_spec("membench_toy") is not None,
                    reason="the example plugin is installed in this environment")
def test_not_installed_means_not_listed():
    env = {**os.environ, "MEMBENCH_HOME": os.environ.get("MEMBENCH_HOME", "/nonexistent")}
    result = membench(env, "models", "--format", "csv")
    assert result.returncode == 0 and "toy-cnn" not in result.stdout


@pytest.mark.skipif(not (REPO / "membench" / "commands" / "run.py").is_file(), reason="no runner yet")
def test_toy_model_smoke_run_on_demo(installed, tmp_path, demo_root):
    out = tmp_path / "lb"
    # demo data: the session's small copy (conftest), instead of generating the full 1,200 images
    result = membench(installed, "run", "--model", "toy-cnn", "--dataset", "demo", "--data", str(demo_root),
                      "--splits", "1",
                      "--preset", "smoke", "--pretrained", "none", "--out", str(out))
    assert result.returncode == 0, result.stderr[-2000:]
    with open(out / "results.csv", newline="") as f:
        rows = list(csv.DictReader(f))
    assert [(r["model"], r["dataset"], r["split"], r["params_total"]) for r in rows] == [
        ("toy-cnn", "demo", "1", "1409")]
    assert -1.0 <= float(rows[0]["rho"]) <= 1.0


def _subcommands(parser):
    import argparse

    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            return action.choices
    return {}


def test_docs_name_only_commands_and_flags_that_exist():
    """Every `membench ...` line in docs/ names a real sub-command and real options."""
    import re
    import shlex

    from membench.cli import build_parser

    root = build_parser()
    checked = 0
    for doc in sorted((REPO / "docs").glob("*.md")):
        for block in re.findall(r"```[a-z]*\n(.*?)```", doc.read_text(), flags=re.S):
            block = re.sub(r"\\\n\s*", " ", block)  # a command continued over lines with a backslash
            for line in block.splitlines():
                if not re.match(r"\s*([A-Z_]+=\S*\s+)*membench\s", line):
                    continue
                try:
                    words = shlex.split(line, comments=True)
                except ValueError:  # prose that starts with "membench" (a wrapped sentence), not a command
                    assert line.split()[1] not in _subcommands(root), f"{doc.name}: cannot parse {line}"
                    continue
                while words and re.fullmatch(r"[A-Z_]+=\S*", words[0]):
                    words.pop(0)  # VAR=value prefixes
                if not words or words[0] != "membench" or (len(words) > 1 and words[1].endswith(":")):
                    continue  # not a command (e.g. an error message membench printed)
                parser, path = root, ["membench"]
                for word in words[1:]:
                    if word in _subcommands(parser):
                        parser = _subcommands(parser)[word]
                        path.append(word)
                options = {o for a in parser._actions for o in a.option_strings}
                for word in words[1:]:
                    if word.startswith("--"):
                        assert word.split("=")[0] in options, f"{doc.name}: {' '.join(path)} has no {word}: {line}"
                checked += 1
    assert checked > 30


def test_docs_name_the_weight_file_membench_looks_for(monkeypatch):
    from membench.errors import MembenchError
    from membench.weights import resolve as weights

    asked = []

    def fake_resolve(file_name, what, explicit=None, **download):
        asked.append(file_name)
        raise MembenchError("not here")

    monkeypatch.setattr(weights, "resolve_file", fake_resolve)
    with pytest.raises(MembenchError):
        weights.torchvision_weights("resnet50")
    for doc in ("user-guide.md", "plugins.md"):
        assert asked[0] in (REPO / "docs" / doc).read_text()
