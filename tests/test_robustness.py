"""Bad input never costs a run and never leaves a traceback to decode.

Every case here runs the real CLI on a small LaMem-layout directory with one thing wrong
and checks: exit code 2, exactly one line on stderr (`membench: error: file[:line]:
message`), no traceback, and nothing written (no leaderboard row, no checkpoint).
Plugin failures, missing weights and unwritable output directories are covered too.
"""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from membench import plugins

TINY_PLUGIN = textwrap.dedent('''
    from membench import ModelSpec, Preprocess, Stage, hookimpl


    def build(ctx):
        import contextlib

        import torch
        import torch.nn as nn

        with torch.device("meta") if ctx.meta else contextlib.nullcontext():
            return nn.Sequential(nn.Conv2d(3, 2, 5, stride=4), nn.AdaptiveAvgPool2d(1), nn.Flatten(),
                                 nn.Linear(2, 1), nn.Flatten(0))


    @hookimpl
    def register_models(register):
        register(ModelSpec(name="tiny-robust", build=build, summary="test model",
                           preprocess=Preprocess(size=(32, 32), train="paper"),
                           recipe=(Stage(name="fit", epochs=1, batch_size=4, lr=1e-2),)))
''')

BROKEN_PLUGIN = "raise ImportError('this plugin needs a package that is not installed')\n"


@pytest.fixture
def tiny(tmp_path_factory, monkeypatch):
    """`tiny-robust` registered as a built-in plugin (plus a broken plugin module on the
    path, for the tests that add it)."""
    root = tmp_path_factory.mktemp("plugins")
    (root / "membench_robust_model.py").write_text(TINY_PLUGIN)
    (root / "membench_robust_broken.py").write_text(BROKEN_PLUGIN)
    monkeypatch.syspath_prepend(str(root))
    monkeypatch.setattr(plugins, "DEFAULT_PLUGINS", plugins.DEFAULT_PLUGINS + ("membench_robust_model",))
    plugins._reset_for_tests()
    yield root
    plugins._reset_for_tests()


def make_data(root: Path, n: int = 24, splits: int = 2) -> Path:
    """LaMem layout: n 64x64 RGB JPEGs, `splits` splits of 12 train / 4 val / 8 test."""
    import numpy as np
    from PIL import Image

    rng = np.random.RandomState(1)
    (root / "images").mkdir(parents=True)
    (root / "splits").mkdir()
    for i in range(n):
        Image.fromarray(rng.randint(0, 255, (64, 64, 3), dtype=np.uint8)).save(root / "images" / name(i))
    for k in range(1, splits + 1):
        order = rng.permutation(n)
        for part, idx in (("train", order[:12]), ("val", order[12:16]), ("test", order[16:])):
            (root / "splits" / f"{part}_{k}.txt").write_text(
                "".join(f"{name(i)} {rng.uniform(0.3, 0.95):.6f}\n" for i in idx))
    return root


def name(i: int) -> str:
    return f"{i + 1:08d}.jpg"


@pytest.fixture
def data(tmp_path):
    return make_data(tmp_path / "lamem")


def run(data: Path, tmp_path: Path, *extra, model: str = "tiny-robust", splits: str = "1,2") -> list[str]:
    return ["run", "--model", model, "--data", str(data), "--splits", splits, "--out", str(tmp_path / "lb"),
            "--work-dir", str(tmp_path / "work"), "--pretrained", "none", "--device", "cpu", *extra]


def error_line(err: str) -> str:
    """The one line a user error prints (warnings about other, unrelated plugins that
    fail to load in a work-in-progress tree are not part of it)."""
    lines = [ln for ln in err.splitlines() if ln.strip() and not ln.startswith("membench: warning: plugin")]
    assert len(lines) == 1, f"expected one line on stderr, got:\n{err}"
    assert "Traceback" not in err
    assert lines[0].startswith("membench: error: "), lines[0]
    return lines[0]


def assert_nothing_written(tmp_path: Path) -> None:
    assert not (tmp_path / "lb" / "results.csv").exists()
    assert not list((tmp_path / "lb").glob("runs/*.json"))
    assert not list((tmp_path / "work").rglob("*.pt")), "training started despite bad input"


def split_file(data: Path, part: str, k: int) -> Path:
    return data / "splits" / f"{part}_{k}.txt"


def replace_line(path: Path, number: int, text: str) -> None:
    lines = path.read_text().splitlines(keepends=True)
    lines[number - 1] = text
    path.write_text("".join(lines))


# -- split files -------------------------------------------------------------------------
# Each case breaks split 2 only: the run must stop before split 1 trains.

def _malformed(data):
    replace_line(split_file(data, "train", 2), 3, "00000001.jpg,0.5\n")
    return "train_2.txt:3: expected '<image> <score>'"


def _not_a_number(data):
    path = split_file(data, "val", 2)
    first = path.read_text().splitlines()[1].split()[0]
    replace_line(path, 2, f"{first} high\n")
    return "val_2.txt:2: score 'high' is not a number"


def _above_one(data):
    path = split_file(data, "test", 2)
    first = path.read_text().splitlines()[4].split()[0]
    replace_line(path, 5, f"{first} 1.500000\n")
    return "test_2.txt:5: score 1.500000 is outside [0, 1]"


def _nan_score(data):
    path = split_file(data, "test", 2)
    first = path.read_text().splitlines()[0].split()[0]
    replace_line(path, 1, f"{first} nan\n")
    return "test_2.txt:1: score nan is outside [0, 1]"


def _duplicate(data):
    path = split_file(data, "train", 2)
    lines = path.read_text().splitlines(keepends=True)
    path.write_text("".join(lines + [lines[0]]))
    return f"train_2.txt:{len(lines) + 1}: image {lines[0].split()[0]} listed twice (first on line 1)"


def _in_two_parts(data):
    image = split_file(data, "train", 2).read_text().splitlines()[0].split()[0]
    with open(split_file(data, "test", 2), "a") as f:
        f.write(f"{image} 0.500000\n")
    return f"test_2.txt:9: image {image} is in both train_2.txt and test_2.txt"


def _empty(data):
    split_file(data, "val", 2).write_text("")
    return "val_2.txt: split file is empty"


def _not_utf8(data):
    with open(split_file(data, "train", 2), "ab") as f:
        f.write(b"caf\xe9.jpg 0.5\n")
    return "train_2.txt:13: split file is not UTF-8 text"


def _val_file_missing(data):
    split_file(data, "val", 2).unlink()
    return "split 2 is incomplete: missing splits/val_2.txt"


SPLIT_CASES = {f.__name__.strip("_"): f for f in (
    _malformed, _not_a_number, _above_one, _nan_score, _duplicate, _in_two_parts, _empty, _not_utf8,
    _val_file_missing)}


@pytest.mark.parametrize("case", SPLIT_CASES)
def test_bad_split_file_stops_before_training(case, tiny, data, tmp_path, run_cli):
    expected = SPLIT_CASES[case](data)
    code, _out, err = run_cli(*run(data, tmp_path))
    assert code == 2
    line = error_line(err)
    assert expected in line
    assert str(data) in line  # the full path of the file to fix
    assert_nothing_written(tmp_path)


def test_split_not_present_lists_the_available_ones(tiny, data, tmp_path, run_cli):
    code, _out, err = run_cli(*run(data, tmp_path, splits="1,7"))
    assert code == 2
    assert "split 7 not found (split files train_7.txt, val_7.txt, test_7.txt); available: [1, 2]" \
        in error_line(err)


def test_all_splits_refuses_to_drop_an_incomplete_split_quietly(tiny, data, tmp_path, run_cli):
    split_file(data, "test", 2).unlink()
    code, _out, err = run_cli(*run(data, tmp_path, splits="all"))
    assert code == 2
    line = error_line(err)
    assert "split 2 is incomplete: missing splits/test_2.txt; fix it or choose splits with --splits 1" in line
    assert_nothing_written(tmp_path)


# -- images ------------------------------------------------------------------------------

def image(data: Path, i: int) -> Path:
    """Image i; every split lists every image (each split is a permutation of all)."""
    return data / "images" / name(i)


def test_missing_image_fails_by_default_and_is_skipped_on_request(tiny, data, tmp_path, run_cli):
    gone = image(data, 0)
    gone.unlink()
    code, _out, err = run_cli(*run(data, tmp_path))
    assert code == 2
    line = error_line(err)
    assert f"{gone}: image listed in the split files is missing on disk" in line
    assert "--on-bad-image skip" in line
    assert_nothing_written(tmp_path)

    code, _out, err = run_cli(*run(data, tmp_path, "--on-bad-image", "skip", "--preset", "smoke"))
    assert code == 0, err
    assert "skipping 1 missing or corrupt images" in err
    import csv

    with open(tmp_path / "lb" / "results.csv", newline="") as f:
        rows = {r["split"]: r for r in csv.DictReader(f)}
    for k in ("1", "2"):
        listed = split_file(data, "test", int(k)).read_text().split()
        assert rows[k]["n_test"] == str(8 - (gone.name in listed))


def _truncate(path: Path) -> str:
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])
    return "truncated or corrupt image (OSError: image file is truncated"


def _text_named_jpg(path: Path) -> str:
    path.write_text("<html>404 not found</html>\n")
    return "not an image: no image format recognised in this file"


def _empty_jpg(path: Path) -> str:
    path.write_bytes(b"")
    return "empty file, not an image"


IMAGE_CASES = {f.__name__.strip("_"): f for f in (_truncate, _text_named_jpg, _empty_jpg)}


@pytest.mark.parametrize("case", IMAGE_CASES)
def test_unreadable_image_is_named(case, tiny, data, tmp_path, run_cli):
    bad = image(data, 4)
    expected = IMAGE_CASES[case](bad)
    code, _out, err = run_cli(*run(data, tmp_path))
    assert code == 2
    line = error_line(err)
    assert line.startswith(f"membench: error: {bad}: {expected}"), line
    assert_nothing_written(tmp_path)


def test_non_rgb_images_are_converted_and_said_once(tiny, data, tmp_path, run_cli):
    from PIL import Image

    modes = ("CMYK", "L", "P", "RGBA")
    for i, mode in enumerate(modes):
        path = image(data, i)
        with Image.open(path) as im:
            rgb = im.convert("RGB")
        if mode == "RGBA":  # JPEG cannot hold alpha: a PNG named .jpg, as found in the wild
            rgb.convert("RGBA").save(path, format="PNG")
        elif mode == "P":
            rgb.convert("P", palette=Image.ADAPTIVE).save(path, format="PNG")
        else:
            rgb.convert(mode).save(path, format="JPEG")
    code, _out, err = run_cli(*run(data, tmp_path, "--preset", "smoke"))
    assert code == 0, err
    said = [ln for ln in err.splitlines() if "converting non-RGB images to RGB" in ln]
    assert len(said) == 1, err
    for mode in modes:
        assert f"1 {mode}" in said[0]


# -- names, plugins, weights, output -------------------------------------------------------

def test_unknown_model_suggests_close_names(tiny, tmp_path, run_cli):
    code, _out, err = run_cli("run", "--model", "resnet50-lamen", "--out", tmp_path / "lb")
    assert code == 2
    assert "unknown model 'resnet50-lamen'; did you mean resnet50-lamem" in error_line(err)


def test_unknown_dataset_suggests_close_names(tiny, data, tmp_path, run_cli):
    code, _out, err = run_cli(*run(data, tmp_path, "--dataset", "lamen"))
    assert code == 2
    assert "unknown dataset 'lamen'; did you mean lamem" in error_line(err)


def test_plugin_that_fails_to_import_is_reported_and_others_work(tiny, monkeypatch, run_cli):
    monkeypatch.setattr(plugins, "DEFAULT_PLUGINS", plugins.DEFAULT_PLUGINS + ("membench_robust_broken",))
    plugins._reset_for_tests()
    code, out, err = run_cli("models", "--format", "csv")
    assert code == 0
    assert "resnet50-lamem" in out and "tiny-robust" in out
    assert ("membench: warning: plugin membench_robust_broken failed to load: ImportError: this plugin "
            "needs a package that is not installed") in err

    monkeypatch.setenv("MEMBENCH_STRICT_PLUGINS", "1")
    plugins._reset_for_tests()
    code, out, err = run_cli("models")
    assert code == 2
    assert out == ""
    line = [ln for ln in err.splitlines() if "membench_robust_broken" in ln]
    assert len(line) == 1 and line[0].startswith("membench: error: plugin 'membench_robust_broken' failed "
                                                 "to load (ImportError: this plugin needs a package")
    assert "MEMBENCH_STRICT_PLUGINS" in line[0] and "Traceback" not in err


def test_plugin_whose_registration_raises_is_reported_and_others_work(tmp_path, monkeypatch, run_cli):
    (tmp_path / "membench_robust_raises.py").write_text(textwrap.dedent('''
        from membench import hookimpl

        @hookimpl
        def register_models(register):
            raise RuntimeError("bad spec")
    '''))
    monkeypatch.syspath_prepend(str(tmp_path))
    monkeypatch.setattr(plugins, "DEFAULT_PLUGINS", plugins.DEFAULT_PLUGINS + ("membench_robust_raises",))
    plugins._reset_for_tests()
    try:
        code, out, err = run_cli("models", "--format", "csv")
        assert code == 0 and "resnet50-lamem" in out
        assert "plugin membench_robust_raises failed to load: RuntimeError: bad spec" in err
    finally:
        plugins._reset_for_tests()


def test_missing_pretrained_weights_name_file_directory_and_way_out(data, tmp_path, monkeypatch, run_cli):
    torch_home = tmp_path / "torch-home"
    torch_home.mkdir()
    monkeypatch.setenv("TORCH_HOME", str(torch_home))
    args = run(data, tmp_path, model="resnet50-lamem", splits="1")
    args.remove("--pretrained")
    args.remove("none")
    code, _out, err = run_cli(*args)  # the paper preset never falls back to random weights
    assert code == 2
    line = error_line(err)
    from torchvision.models import get_model_weights

    assert os.path.basename(get_model_weights("resnet50").IMAGENET1K_V1.url) in line
    assert str(torch_home / "hub" / "checkpoints") in line
    assert "--pretrained none" in line
    assert_nothing_written(tmp_path)


def test_output_directory_not_writable_is_caught_before_training(tiny, data, tmp_path, run_cli):
    blocker = tmp_path / "a-file"
    blocker.write_text("not a directory\n")
    args = run(data, tmp_path)
    args[args.index("--out") + 1] = str(blocker / "lb")
    code, _out, err = run_cli(*args)
    assert code == 2
    assert f"membench: error: {blocker / 'lb'}: output directory is not writable" in error_line(err)
    assert not (tmp_path / "work").exists() or not list((tmp_path / "work").rglob("*.pt"))


def test_work_directory_not_writable_is_caught_before_training(tiny, data, tmp_path, run_cli):
    blocker = tmp_path / "a-file"
    blocker.write_text("not a directory\n")
    args = run(data, tmp_path)
    args[args.index("--work-dir") + 1] = str(blocker / "work")
    code, _out, err = run_cli(*args)
    assert code == 2
    assert f"{blocker / 'work'}: output directory is not writable" in error_line(err)
    assert not (tmp_path / "lb" / "results.csv").exists()


@pytest.mark.skipif(os.geteuid() == 0, reason="root can write into a read-only directory")
def test_read_only_output_directory_is_caught_before_training(tiny, data, tmp_path, run_cli):
    out = tmp_path / "lb"
    out.mkdir()
    out.chmod(0o500)
    try:
        code, _out, err = run_cli(*run(data, tmp_path))
    finally:
        out.chmod(0o700)
    assert code == 2
    assert "output directory is not writable" in error_line(err)
    assert not list((tmp_path / "work").rglob("*.pt"))


def test_damaged_leaderboard_is_refused_not_overwritten(tiny, data, tmp_path, run_cli):
    lb = tmp_path / "lb"
    lb.mkdir()
    damaged = "run_id,model,dataset,split,rho,mse\nsomething,else\n"
    (lb / "results.csv").write_text(damaged)
    code, _out, err = run_cli(*run(data, tmp_path, "--preset", "smoke", splits="1"))
    assert code == 2
    assert f"{lb / 'results.csv'}:2: damaged leaderboard row" in error_line(err)
    assert (lb / "results.csv").read_text() == damaged


def test_real_process_prints_one_line_and_exits_2(data, tmp_path):
    _malformed(data)
    env = {**os.environ, "MEMBENCH_HOME": str(tmp_path / "home")}
    proc = subprocess.run([sys.executable, "-m", "membench", *run(data, tmp_path, model="resnet50-lamem")],
                          env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 2
    assert "train_2.txt:3: expected '<image> <score>'" in error_line(proc.stderr)
    assert_nothing_written(tmp_path)


def test_debug_lets_the_exception_through(data, tmp_path):
    from membench.cli import main
    from membench.errors import MembenchError

    _malformed(data)
    with pytest.raises(MembenchError, match="expected '<image> <score>'"):
        main(["--debug", *run(data, tmp_path, model="resnet50-lamem")])


# -- membench data check: every problem at once ---------------------------------------------

def test_data_check_reports_every_problem(data, run_cli):
    path = split_file(data, "train", 1)
    lines = path.read_text().splitlines(keepends=True)
    lines[1] = "00000002.jpg\n"
    lines[4] = f"{lines[4].split()[0]} 7\n"
    lines[6] = f"{lines[6].split()[0]} x\n"
    lines.append(lines[0])
    path.write_text("".join(lines))
    split_file(data, "val", 2).write_text("")
    image(data, 0).unlink()
    code, out, _err = run_cli("data", "check", "--data", data)
    assert code == 1
    problems = [ln for ln in out.splitlines() if ln.startswith("problem: ")]
    assert f"problem: {path}:2: expected '<image> <score>', got '00000002.jpg'" in problems
    assert any(f"{path}:5: score 7 is outside [0, 1]" in p for p in problems)
    assert any(f"{path}:7: score 'x' is not a number" in p for p in problems)
    assert any(f"{path}:13: image {lines[0].split()[0]} listed twice" in p for p in problems)
    assert f"problem: {split_file(data, 'val', 2)}: split file is empty" in problems
    assert len(problems) == 5, problems  # images of splits with bad split files are not decoded
    assert "5 problem(s) found" in out


def test_data_check_decodes_images_of_valid_splits(data, run_cli):
    gone = image(data, 0)
    gone.unlink()
    bad = image(data, 1)
    _truncate(bad)
    code, out, _err = run_cli("data", "check", "--data", data)
    assert code == 1
    problems = [ln for ln in out.splitlines() if ln.startswith("problem: ")]
    assert f"problem: {gone}: image listed in the split files but missing on disk" in problems
    assert any(p.startswith(f"problem: {bad}: truncated or corrupt image") for p in problems)
    assert len(problems) == 2


def test_data_check_reports_an_incomplete_split(data, run_cli):
    split_file(data, "val", 2).unlink()
    code, out, _err = run_cli("data", "check", "--data", data)
    assert code == 1
    problems = [ln for ln in out.splitlines() if ln.startswith("problem: ")]
    assert problems == [f"problem: {data}: split 2 is incomplete: missing splits/val_2.txt"]


def test_read_split_file_collects_every_bad_line(tmp_path):
    from membench.data.layout import read_split_file
    from membench.errors import MembenchError

    path = tmp_path / "train_1.txt"
    path.write_text("a.jpg 0.5\nb.jpg\nc.jpg -0.1\nd.jpg 0.7\na.jpg 0.2\n../e.jpg 0.3\n")
    errors: list = []
    samples = read_split_file(path, tmp_path, errors)
    assert [s.name for s in samples] == ["a.jpg", "d.jpg"]
    assert [e.line for e in errors] == [2, 3, 5, 6]
    assert all(isinstance(e, MembenchError) and e.path == str(path) for e in errors)
    with pytest.raises(MembenchError) as exc:
        read_split_file(path, tmp_path)
    assert exc.value.line == 2


def test_smoke_preset_falls_back_to_random_init_when_weights_are_absent(data, tmp_path, monkeypatch, run_cli):
    """Smoke runs check plumbing: absent ImageNet weights give a warning and random init,
    recorded as pretrained=False in the row (never silently)."""
    import csv

    torch_home = tmp_path / "torch-home"
    torch_home.mkdir()
    monkeypatch.setenv("TORCH_HOME", str(torch_home))
    args = run(data, tmp_path, model="resnet50-lamem", splits="1")
    args.remove("--pretrained")
    args.remove("none")
    code, _out, err = run_cli(*args, "--preset", "smoke")
    assert code == 0, err
    said = " ".join(err.split())  # rich wraps long lines
    assert "not available offline" in said and "random initialisation" in said
    out = Path(args[args.index("--out") + 1])
    (row,) = list(csv.DictReader(open(out / "results.csv", newline="")))
    assert row["pretrained"] == "False" and row["init"] == "random"
