"""The shared released-weights path (membench.weights.released, `membench weights`), with a small
plugin model that declares per-split released weights in an "authors' layout" of its
own: download from a local HTTP server (plain and through gdown), exact import, errors,
listing, and `membench run --train none` evaluating the installed weights."""

from __future__ import annotations

import csv
import hashlib
import io
import json
import re
import zipfile
from pathlib import Path

import pytest
import torch

from membench import BuildContext, ModelSpec, Preprocess, Stage, hookimpl, registry
from membench.errors import MembenchError
from membench.spec import ReleasedWeights
from membench.weights import released

PRE = Preprocess(size=(32, 32), train="none")


def build_toy(ctx: BuildContext):
    import torch.nn as nn

    class Toy(nn.Module):
        def __init__(self):
            super().__init__()
            self.conv = nn.Conv2d(3, 4, 3, stride=2)
            self.bn = nn.BatchNorm2d(4)
            self.head = nn.Linear(4, 1)

        def forward(self, x):
            return self.head(self.bn(self.conv(x)).relu().mean((2, 3))).squeeze(1)

    with torch.device("meta") if ctx.meta else torch.device("cpu"):
        return Toy()


def authors_checkpoints(archive):
    """The authors' layout: toy_release/split_<k>/model.pt with keys under "net."."""
    with zipfile.ZipFile(archive) as z:
        for name in sorted(z.namelist()):
            if name.endswith("/model.pt"):
                k = int(name.split("/")[-2].split("_")[1])
                state = torch.load(io.BytesIO(z.read(name)), weights_only=True)
                yield k, {key.removeprefix("net."): v for key, v in state.items()}, name


class ToyPlugin:
    url = ""
    sha256 = None

    @hookimpl
    def register_models(self, register):
        register(ModelSpec(
            name="toy-released", build=build_toy, preprocess=PRE,
            recipe=(Stage("train", epochs=1, batch_size=8),), tags=("test",),
            released_weights=(ReleasedWeights(
                name="toy_release", convert=authors_checkpoints, url=self.url, archive="toy_release.zip",
                layout="toy_release/split_<k>/model.pt", per_split=True, sha256=self.sha256,
                license="CC0", citation="nobody"),)))


@pytest.fixture
def toy():
    from membench import plugins

    plugin = ToyPlugin()
    pm = plugins.load()
    pm.register(plugin, name="tests.toy_released")
    registry.clear_cache()
    yield plugin
    pm.unregister(plugin)
    registry.clear_cache()


def authors_state(seed: int, drop: str | None = None, extra: str | None = None) -> dict:
    torch.manual_seed(seed)
    state = {f"net.{k}": torch.randn_like(v, dtype=torch.float32) if v.is_floating_point() else v
             for k, v in build_toy(BuildContext(pretrained=False)).state_dict().items()}
    state["net.bn.running_var"] = state["net.bn.running_var"].abs() + 0.5
    if drop:
        del state[f"net.{drop}"]
    if extra:
        state[f"net.{extra}"] = torch.zeros(2)
    return state


def archive_bytes(states: dict[int, dict]) -> bytes:
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as z:
        for k, state in states.items():
            b = io.BytesIO()
            torch.save(state, b)
            z.writestr(f"toy_release/split_{k}/model.pt", b.getvalue())
    return buf.getvalue()


def test_fetch_downloads_checks_and_installs_one_checkpoint_per_split(toy, server, run_cli):
    base, handler = server
    data = archive_bytes({1: authors_state(1), 2: authors_state(2)})
    handler.files["/toy_release.zip"] = data
    toy.url, toy.sha256 = f"{base}/toy_release.zip", hashlib.sha256(data).hexdigest()
    registry.clear_cache()
    code, out, err = run_cli("weights", "fetch", "toy-released")
    assert code == 0, err
    inst = released.installed(registry.get_model("toy-released"))
    assert inst.splits() == [1, 2]
    assert inst.manifest["archive"]["sha256"] == toy.sha256
    for k in (1, 2):
        got = inst.state_dict(k)
        want = authors_state(k)
        assert set(got) == {key.removeprefix("net.") for key in want}
        assert all(torch.equal(got[key.removeprefix("net.")], v) for key, v in want.items())
    code, out, err = run_cli("weights", "list", "--format", "json")
    row, = [r for r in json.loads(out) if r["model"] == "toy-released"]
    assert row["installed"] == "splits 1,2" and row["download"] == toy.url
    code, out, err = run_cli("models", "toy-released", "--format", "json")
    assert json.loads(out)[0]["released_weights"] == "toy_release"


def test_a_download_with_another_checksum_is_refused(toy, server, run_cli):
    base, handler = server
    handler.files["/toy_release.zip"] = archive_bytes({1: authors_state(1)})
    toy.url, toy.sha256 = f"{base}/toy_release.zip", "0" * 64
    registry.clear_cache()
    code, out, err = run_cli("weights", "fetch", "toy-released")
    assert code == 2 and "sha256" in err and "Traceback" not in err
    assert released.installed(registry.get_model("toy-released")) is None


def test_google_drive_path_goes_through_gdown(server, tmp_path):
    """gdown does the transfer (and, on Drive, its confirmation step); here it fetches from
    the local server, and the file must arrive whole and checked."""
    base, handler = server
    data = archive_bytes({1: authors_state(1)})
    handler.files["/file.zip"] = data
    dest = released._fetch_drive(f"{base}/file.zip", tmp_path / "a.zip", hashlib.sha256(data).hexdigest(), False)
    assert dest.read_bytes() == data and not list(tmp_path.glob("*.part"))
    with pytest.raises(MembenchError, match="sha256"):
        released._fetch_drive(f"{base}/file.zip", tmp_path / "b.zip", "f" * 64, False)
    assert not (tmp_path / "b.zip").exists()
    assert released.is_google_drive("https://drive.google.com/file/d/abc/view?usp=sharing")
    assert not released.is_google_drive(base)
    assert released.drive_file_id("https://drive.google.com/file/d/1N3t5QIi2rZng0TZJUFT5achCHyJn8Fg0/view?usp=sharing") \
        == "1N3t5QIi2rZng0TZJUFT5achCHyJn8Fg0"
    assert released.drive_file_id("https://drive.google.com/uc?id=abc&export=download") == "abc"


def test_fetch_without_a_direct_download_says_where_to_get_it(run_cli):
    code, out, err = run_cli("weights", "fetch", "memnet", "--release", "memnet_caffe")
    assert code == 2 and "LaMem download page" in err and "membench weights import memnet" in err


@pytest.mark.parametrize("drop, extra, message", [
    ("head.bias", None, r"head.bias \[1\] of toy-released is missing"),
    (None, "bn.extra", r"unexpected tensor bn.extra"),
])
def test_import_is_exact_and_all_or_nothing(toy, tmp_path, run_cli, drop, extra, message):
    good = tmp_path / "good.zip"
    good.write_bytes(archive_bytes({1: authors_state(1)}))
    assert run_cli("weights", "import", "toy-released", good)[0] == 0
    bad = tmp_path / "bad.zip"
    bad.write_bytes(archive_bytes({1: authors_state(3), 2: authors_state(2, drop=drop, extra=extra)}))
    code, out, err = run_cli("weights", "import", "toy-released", bad)
    assert code == 2 and "Traceback" not in err
    error, = [line for line in err.splitlines() if line.startswith("membench: error:")]
    assert "bad.zip:toy_release/split_2/model.pt: " in error and re.search(message, error)
    inst = released.installed(registry.get_model("toy-released"))  # the earlier import is intact
    assert inst.splits() == [1] and torch.equal(inst.state_dict(1)["head.bias"], authors_state(1)["net.head.bias"])


def test_shape_mismatch_names_the_tensor(toy, tmp_path, run_cli):
    state = authors_state(1)
    state["net.head.weight"] = torch.zeros(1, 5)
    (tmp_path / "a.zip").write_bytes(archive_bytes({1: state}))
    code, out, err = run_cli("weights", "import", "toy-released", tmp_path / "a.zip")
    assert code == 2 and "head.weight has shape [1, 5], toy-released needs [1, 4]" in err


def test_a_damaged_installed_checkpoint_is_refused(toy, tmp_path, run_cli):
    (tmp_path / "a.zip").write_bytes(archive_bytes({1: authors_state(1)}))
    run_cli("weights", "import", "toy-released", tmp_path / "a.zip")
    inst = released.installed(registry.get_model("toy-released"))
    path, _ = inst.checkpoint(1)
    path.write_bytes(path.read_bytes()[:-10] + b"0123456789")
    with pytest.raises(MembenchError, match="damaged"):
        inst.state_dict(1)


def test_run_train_none_evaluates_the_installed_weights_per_split(toy, tmp_path, demo_root, run_cli):
    (tmp_path / "a.zip").write_bytes(archive_bytes({1: authors_state(1), 2: authors_state(2)}))
    assert run_cli("weights", "import", "toy-released", tmp_path / "a.zip")[0] == 0
    lb = tmp_path / "lb"
    code, out, err = run_cli("run", "--model", "toy-released", "--train", "none", "--data", demo_root,
                             "--splits", "1,2", "--out", lb, "--work-dir", tmp_path / "w", "--device", "cpu")
    assert code == 0, err
    rows = list(csv.DictReader(open(lb / "results.csv")))
    assert len(rows) == 2
    for row in rows:
        assert "authors' weights (toy_release)" in (row.get("configuration") or row["notes"])
    from membench.engine.device import resolve_device
    from membench.engine.inference import predict

    spec = registry.get_model("toy-released")
    dataset = registry.get_dataset("lamem").opener()(demo_root, {})
    for row in rows:
        k = int(row["split"])
        model = build_toy(BuildContext(pretrained=False))
        model.load_state_dict({key.removeprefix("net."): v for key, v in authors_state(k).items()})
        test = dataset.load_split(k).test
        want = predict(model, test, spec.preprocess, resolve_device("cpu"), batch_size=4)
        with open(lb / "predictions" / row["run_id"] / f"split{k}.csv") as f:
            got = {r["image"]: float(r["pred"]) for r in csv.DictReader(f)}
        assert [got[s.name] for s in test] == pytest.approx(list(want), abs=1e-6)
    run_json = json.loads(next((lb / "runs").glob("*.json")).read_text())
    assert "toy_release" in json.dumps(run_json)


def test_fetch_from_a_mirror_url(toy, server, run_cli):
    base, handler = server
    handler.files["/mirror/toy_release.zip"] = archive_bytes({3: authors_state(3)})
    code, out, err = run_cli("weights", "fetch", "toy-released", "--url", f"{base}/mirror/toy_release.zip")
    assert code == 0, err
    assert released.installed(registry.get_model("toy-released")).splits() == [3]


def test_evaluate_from_a_released_weights_run_scores_with_those_weights(toy, tmp_path, demo_root, run_cli):
    """`evaluate --from-run` of a `--train none` run that evaluated the authors' weights loads
    those weights (it built the bare model before: other numbers under the run's name).
    Scored on the run's own data, it reproduces the run's predictions exactly; a different
    installed release is refused before any work."""
    (tmp_path / "a.zip").write_bytes(archive_bytes({1: authors_state(1), 2: authors_state(2)}))
    assert run_cli("weights", "import", "toy-released", tmp_path / "a.zip")[0] == 0
    lb, work = tmp_path / "lb", tmp_path / "w"
    common = ["--out", lb, "--work-dir", work, "--device", "cpu"]
    code, _, err = run_cli("run", "--model", "toy-released", "--train", "none", "--data", demo_root, "--splits", "1,2",
                           *common)
    assert code == 0, err
    run_id = next(csv.DictReader(open(lb / "results.csv")))["run_id"]
    code, _, err = run_cli("evaluate", "--from-run", run_id, "--data", demo_root, "--dataset", "lamem", *common)
    assert code == 0, err
    rows = list(csv.DictReader(open(lb / "results.csv")))
    evaluated = [r for r in rows if r["run_id"] != run_id]
    assert len(evaluated) == 2
    for row in evaluated:
        k = row["split"]
        read = lambda rid: {r["image"]: float(r["pred"])  # noqa: E731
                            for r in csv.DictReader(open(lb / "predictions" / rid / f"split{k}.csv"))}
        assert read(row["run_id"]) == read(run_id)

    (tmp_path / "b.zip").write_bytes(archive_bytes({1: authors_state(3), 2: authors_state(4)}))
    assert run_cli("weights", "import", "toy-released", tmp_path / "b.zip")[0] == 0
    code, _, err = run_cli("evaluate", "--from-run", run_id, "--data", demo_root, "--dataset", "lamem",
                           "--out", tmp_path / "lb2", "--work-dir", work, "--device", "cpu")
    assert code == 2 and "is not the one the run evaluated" in err and len(err.strip().splitlines()) == 1, err
    assert not (tmp_path / "lb2").exists()


def build_toy_backbone_fixed(ctx: BuildContext):
    torch.manual_seed(0)  # the same "pretrained" backbone on every build, as a real one
    model = build_toy(ctx)
    scale = float(ctx.options.get("scale", 1))
    if scale != 1:  # an option of the authors' test protocol (as MemNet port's output mapping)
        forward = model.forward
        model.forward = lambda x: forward(x) * scale
    return model


class ToyHeadPlugin:
    """Weights of the head alone (as MemCoach releases its head on a frozen backbone), with
    an option of their test protocol (as MemNet's port: ten crops, its output mapping)."""

    @hookimpl
    def register_models(self, register):
        from membench.options import Option

        register(ModelSpec(
            name="toy-head", build=build_toy_backbone_fixed, preprocess=PRE,
            recipe=(Stage("train", epochs=1, batch_size=8),), tags=("test",),
            options=(Option("scale", type="int", default=1),),
            released_weights=(ReleasedWeights(
                name="toy_release", convert=authors_checkpoints, url="", archive="toy_release.zip",
                layout="toy_release/split_<k>/model.pt", per_split=True, part="head", options={"scale": "3"},
                license="CC0", citation="nobody"),)))


def test_evaluate_from_a_run_on_released_head_weights_loads_the_head_as_the_run_did(tmp_path, demo_root, run_cli):
    """A release of one part loads onto the model the run built (it loaded the whole state
    strictly before: missing keys)."""
    from membench import plugins

    pm = plugins.load()
    pm.register(ToyHeadPlugin(), name="tests.toy_head")
    registry.clear_cache()
    try:
        head = {k: {key: v for key, v in authors_state(k).items() if key.startswith("net.head.")} for k in (1,)}
        (tmp_path / "h.zip").write_bytes(archive_bytes(head))
        assert run_cli("weights", "import", "toy-head", tmp_path / "h.zip")[0] == 0
        lb, work = tmp_path / "lb", tmp_path / "w"
        common = ["--out", lb, "--work-dir", work, "--device", "cpu"]
        code, _, err = run_cli("run", "--model", "toy-head", "--train", "none", "--data", demo_root, "--splits", "1",
                               *common)
        assert code == 0, err
        run_id = next(csv.DictReader(open(lb / "results.csv")))["run_id"]
        code, _, err = run_cli("evaluate", "--from-run", run_id, "--data", demo_root, "--dataset", "lamem", *common)
        assert code == 0, err
        evaluated = next(r for r in csv.DictReader(open(lb / "results.csv")) if r["run_id"] != run_id)
        read = lambda rid: {r["image"]: float(r["pred"])  # noqa: E731
                            for r in csv.DictReader(open(lb / "predictions" / rid / "split1.csv"))}
        assert read(evaluated["run_id"]) == read(run_id)
        # predict scores with the same weights and the same protocol as the run
        run_preds = read(run_id)
        names = sorted(run_preds)[:4]
        code, out, err = run_cli("predict", "--model", "toy-head", *(demo_root / "images" / n for n in names))
        assert code == 0, err
        scored = {Path(r["image"]).name: float(r["score"]) for r in csv.DictReader(io.StringIO(out))}
        assert scored == pytest.approx({n: run_preds[n] for n in names}, abs=1e-5)
    finally:
        pm.unregister(name="tests.toy_head")
        registry.clear_cache()


def test_an_import_never_replaces_a_folder_membench_did_not_install(toy, tmp_path, run_cli):
    spec = registry.get_model("toy-released")
    target = released.release_dir(spec, spec.released_weights[0])
    target.mkdir(parents=True)
    (target / "notes.txt").write_text("mine")
    (tmp_path / "a.zip").write_bytes(archive_bytes({1: authors_state(1)}))
    code, _, err = run_cli("weights", "import", "toy-released", tmp_path / "a.zip")
    assert code == 2 and str(target) in err and "did not install" in err and err.count("\n") == 1, err
    assert (target / "notes.txt").read_text() == "mine"
    (target / "notes.txt").unlink()
    target.rmdir()
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    target.symlink_to(elsewhere)
    code, _, err = run_cli("weights", "import", "toy-released", tmp_path / "a.zip")
    assert code == 2 and "symbolic link" in err and target.is_symlink() and not any(elsewhere.iterdir()), err
    target.unlink()
    assert run_cli("weights", "import", "toy-released", tmp_path / "a.zip")[0] == 0
    assert run_cli("weights", "import", "toy-released", tmp_path / "a.zip")[0] == 0  # its own: replaced
