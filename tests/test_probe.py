"""The `probe/<backbone>` family and the `fit="frozen-outputs"` stage: the ridge head against a
closed-form numpy reference, a whole `membench run` on the demo data with a tiny random timm
backbone (the head checked against the reference on the embeddings it was fitted on), the
feature store embedding each image once, the MLP head, the ResMem backbones against the
`resmem` package, and the errors."""

from __future__ import annotations

import csv
import json
import math

import numpy as np
import pytest
import torch
from scipy.stats import spearmanr

from membench import BuildContext, registry
from membench.errors import MembenchError
from membench.spec import Stage

TINY = "probe/test_resnet.r160_in1k"  # a timm test model: 0.37M parameters, 160x160


def numpy_ridge(x, y, alpha):
    """min |y - x w - b|^2 + alpha |w|^2 with an unpenalised intercept, by the normal equations."""
    mean_x, mean_y = x.mean(0), y.mean()
    xc, yc = x - mean_x, y - mean_y
    w = np.linalg.solve(xc.T @ xc + alpha * np.eye(x.shape[1]), xc.T @ yc)
    return w, mean_y - mean_x @ w


def reference_choice(x, y, xv, yv):
    """The grid's penalty with the best validation rho (ties: the larger), by numpy."""
    from membench_plugins.models.probe_net import ALPHAS

    scale = ((x - x.mean(0)) ** 2).sum() / x.shape[1]
    best = None
    for a in ALPHAS:
        w, b = numpy_ridge(x, y, a * scale)
        rho = spearmanr(xv @ w + b, yv).statistic
        if best is None or rho >= best[0]:
            best = (rho, a * scale, w, b)
    return best


@pytest.mark.parametrize("n, dim", [(60, 12), (25, 40)])  # more images than features, and fewer
def test_ridge_head_equals_the_closed_form_numpy_reference(n, dim):
    from membench_plugins.models.probe_net import Probe

    rng = np.random.default_rng(n)
    x, xv = rng.normal(size=(n, dim)), rng.normal(size=(30, dim))
    w_true = rng.normal(size=dim)
    y = x @ w_true * 0.05 + 0.7 + rng.normal(scale=0.05, size=n)
    yv = xv @ w_true * 0.05 + 0.7 + rng.normal(scale=0.05, size=30)
    probe = Probe(torch.nn.Identity(), dim)
    record = probe.fit_frozen((torch.tensor(x, dtype=torch.float32),), torch.tensor(y),
                              (torch.tensor(xv, dtype=torch.float32),), torch.tensor(yv))
    x32, xv32 = x.astype(np.float32).astype(np.float64), xv.astype(np.float32).astype(np.float64)
    rho, alpha, w, b = reference_choice(x32, y, xv32, yv)
    assert record["alpha"] == pytest.approx(alpha, rel=1e-9)
    assert np.abs(probe.head.weight.detach().double().numpy()[0] - w).max() < 1e-6
    assert abs(probe.head.bias.item() - b) < 1e-6
    assert max(r for r in record["val_rho_by_alpha"] if r is not None) == pytest.approx(rho, abs=1e-12)


def test_a_frozen_outputs_stage_needs_a_frozen_part_and_the_contract(tmp_path):
    with pytest.raises(ValueError, match="frozen"):
        Stage("fit", fit="frozen-outputs")
    with pytest.raises(ValueError, match="fit must be one of"):
        Stage("fit", fit="closed-form", frozen=("x",))

    from membench.engine.device import resolve_device
    from membench.engine.stage import train_stage
    from membench.spec import Preprocess

    class NoFit(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.backbone = torch.nn.Linear(2, 2)

    with pytest.raises(MembenchError, match="fit_frozen"):
        train_stage(NoFit(), Stage("fit", fit="frozen-outputs", frozen=("backbone",)), (), (), Preprocess(),
                    resolve_device("cpu"), tmp_path, seed=0, patience=1, resume=False, progress=None)


def _run(run_cli, tmp_path, *extra, out="lb"):
    code, stdout, err = run_cli("run", "--model", TINY, "--data", "demo", "--preset", "smoke", "--splits", "1",
                                "--pretrained", "none", "--out", tmp_path / out, "--work-dir", tmp_path / "work",
                                "--device", "cpu", "--feature-store", tmp_path / "store", "--keep-checkpoints", *extra)
    assert code == 0, err
    return stdout, err


def _rows(lb):
    with open(lb / "results.csv") as f:
        return list(csv.DictReader(f))


def test_run_on_demo_fits_the_closed_form_ridge_on_the_embeddings(tmp_path, run_cli):
    """`membench run --model probe/<tiny timm arch> --data demo`: the fitted head equals the
    numpy ridge on the training images' embeddings, with the penalty the validation rho chose."""
    from membench.engine.cache import FrozenCache
    from membench.engine.checkpoints import load_trained
    from membench.engine.device import resolve_device
    from membench.engine.job import subset
    from membench.engine.seeds import epoch_seed
    from membench.engine.stage import load_checkpoint

    _run(run_cli, tmp_path)
    row, = _rows(tmp_path / "lb")
    assert row["model"] == TINY and row["configuration"] == "preset=smoke; pretrained=none" and row["epochs_run"] == "1"
    run = json.loads(next((tmp_path / "lb" / "runs").glob("*.json")).read_text())
    fit, = run["stages"]["fit"]["history"]
    assert fit["head"] == "ridge" and fit["fit"] == "frozen-outputs"

    spec = registry.get_model(TINY)
    torch.manual_seed(epoch_seed(1, f"build:{TINY}:fit", 0))  # the runner's seeded build
    model = spec.builder()(BuildContext(pretrained=False))
    best = next((tmp_path / "work").glob("*/split1/fit/best.pt"))
    load_trained(model, load_checkpoint(best), best)  # checks the rebuilt backbone is the one fitted on
    split = subset(registry.get_dataset("demo").opener()(None, {}).load_split(1), "smoke")
    device = resolve_device("cpu")
    feats = {}
    for part in ("train", "val"):
        cache = FrozenCache(getattr(split, part), spec.preprocess, device, batch_size=32, store="cpu")
        cache.build(model)
        feats[part] = cache.outputs[0].double().numpy()
    y = np.array([s.score for s in split.train])
    yv = np.array([s.score for s in split.val])
    _, alpha, w, b = reference_choice(feats["train"], y, feats["val"], yv)
    assert fit["alpha"] == pytest.approx(alpha, rel=1e-9)
    scale = max(1.0, np.abs(w).max())
    assert np.abs(model.head.weight.detach().double().numpy()[0] - w).max() < 1e-6 * scale
    assert abs(model.head.bias.item() - b) < 1e-6 * scale

    with open(next((tmp_path / "lb" / "predictions").glob("*/split1.csv"))) as f:
        preds = {r["image"]: float(r["pred"]) for r in csv.DictReader(f)}
    cache = FrozenCache(split.test, spec.preprocess, device, batch_size=32, store="cpu")
    expected = cache.predict(model)
    assert [preds[s.name] for s in split.test] == pytest.approx(list(expected), abs=2e-6)
    assert float(row["rho"]) == pytest.approx(spearmanr(expected, [s.score for s in split.test]).statistic, abs=1e-6)


def test_each_image_is_embedded_once_and_the_mlp_head_is_its_own_configuration(tmp_path, run_cli):
    _run(run_cli, tmp_path)
    _run(run_cli, tmp_path, "--model-option", "head=mlp", "--model-option", "hidden=16")
    rows = _rows(tmp_path / "lb")
    assert [r["configuration"] for r in rows] == ["preset=smoke; pretrained=none", "preset=smoke; head=mlp; hidden=16; pretrained=none"]
    runs = {json.loads(p.read_text())["run_id"]: json.loads(p.read_text()) for p in (tmp_path / "lb" / "runs").glob("*")}
    first, second = (runs[r["run_id"]] for r in rows)
    assert first["feature_store"]["misses"] == 40 and first["feature_store"]["hits"] == 0  # 16 + 8 + 16 images
    assert second["feature_store"]["hits"] == 40 and second["feature_store"]["misses"] == 0
    mlp, = second["stages"]["fit"]["history"]
    assert mlp["head"] == "mlp" and mlp["hidden"] == 16 and mlp["steps"] >= 20
    assert int(rows[1]["params_total"]) > int(rows[0]["params_total"])


def test_probe_names_and_options_are_checked(run_cli):
    with pytest.raises(MembenchError, match="did you mean probe/test_resnet.r160_in1k"):
        registry.get_model("probe/test_resnet.r160_in1kk")
    with pytest.raises(MembenchError, match="unknown probe backbone ''"):
        registry.get_model("probe/")
    code, _, err = run_cli("params", TINY, "--model-option", "head=lasso")
    assert code == 2 and "head" in err and "ridge" in err
    spec = registry.get_model("probe/resmem-resnet152")
    assert spec.recipe[0].fit == "frozen-outputs" and spec.recipe[0].frozen == ("backbone",)
    assert (spec.preprocess.size, spec.preprocess.crop, spec.preprocess.mean) == ((256, 256), 227, None)
    assert {o.name for o in spec.options} == {"head", "hidden", "normalize", "weights"}


def test_the_frozen_train_cache_does_not_apply_to_a_fit_stage(tmp_path, run_cli):
    _, err = _run(run_cli, tmp_path, "--frozen-train-cache", "2")
    assert "ignored for stage fit" in " ".join(err.split())
    row, = _rows(tmp_path / "lb")
    assert "frozen-train-cache" not in row["configuration"]


def test_a_finished_fit_is_reused_on_resume(tmp_path, run_cli):
    _run(run_cli, tmp_path)
    stage_dir = next((tmp_path / "work").glob("*/split1/fit"))
    (next(stage_dir.parent.glob("result.json"))).unlink()  # as if killed after the fit, before testing
    before = (stage_dir / "best.pt").stat().st_mtime_ns
    _run(run_cli, tmp_path, "--resume", out="lb2")
    assert (stage_dir / "best.pt").stat().st_mtime_ns == before
    assert _rows(tmp_path / "lb")[0]["rho"] == _rows(tmp_path / "lb2")[0]["rho"]


# ----------------------------------------------------------------------------- ResMem backbones

@pytest.fixture(scope="module")
def resmem_package():
    pytest.importorskip("resmem", reason="the optional `resmem` package is not installed")
    import warnings

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        from resmem import ResMem, transformer

        return ResMem(pretrained=True).eval(), transformer


def _images(root, n=2):
    from membench.data.images import open_rgb

    return [open_rgb(p) for p in sorted((root / "images").iterdir())[:n]]


def test_resmem_trunk_is_the_packages_resnet152_pooled(resmem_package, demo_root):
    theirs, transformer = resmem_package
    x = torch.stack([transformer(im) for im in _images(demo_root)])
    spec = registry.get_model("probe/resmem-resnet152")
    ours = spec.builder()(BuildContext(pretrained=True)).eval()
    imagenet = spec.builder()(BuildContext(pretrained=True, options={"normalize": "imagenet"})).eval()
    trunk = theirs.features
    with torch.no_grad():
        pooled = torch.nn.Sequential(*list(trunk.children())[:-1])  # up to the average pool
        expected = pooled(x).flatten(1)
        mean, std = torch.tensor([0.485, 0.456, 0.406]).view(1, 3, 1, 1), torch.tensor([0.229, 0.224, 0.225]).view(1, 3, 1, 1)
        expected_imagenet = pooled((x - mean) / std).flatten(1)
        got, got_imagenet = ours.frozen_outputs(x)[0], imagenet.frozen_outputs(x)[0]
    assert got.shape == (2, 2048)
    assert (got - expected).abs().max().item() < 1e-4 * expected.abs().max().item()
    assert (got_imagenet - expected_imagenet).abs().max().item() < 1e-4 * expected_imagenet.abs().max().item()
    assert (got - got_imagenet).abs().max().item() > 1e-2  # the option changes the embedding


def test_resmem_penultimate_is_what_its_fc12_reads(resmem_package, demo_root):
    theirs, transformer = resmem_package
    x = torch.stack([transformer(im) for im in _images(demo_root)])
    seen = []
    hook = theirs.fc12.register_forward_pre_hook(lambda mod, args: seen.append(args[0]))
    with torch.no_grad():
        theirs(x)
        ours = registry.get_model("probe/resmem").builder()(BuildContext(pretrained=True)).eval()
        got = ours.frozen_outputs(x)[0]
    hook.remove()
    assert got.shape == (2, 256)
    assert (got - seen[0]).abs().max().item() < 1e-4 * max(1.0, seen[0].abs().max().item())


def test_open_clip_probe_follows_its_preprocessing_and_embeds(monkeypatch):
    open_clip = pytest.importorskip("open_clip")
    from membench_plugins.models.probe import open_clip_preprocess

    pre = open_clip_preprocess("ViT-SO400M-14-SigLIP-384", "webli")  # SigLIP: squash, bicubic, 0.5
    assert (pre.size, pre.crop, pre.mean, pre.interpolation) == ((384, 384), None, (0.5,) * 3, "bicubic")
    pre = open_clip_preprocess("ViT-B-32", "openai")  # CLIP: shorter side, centre crop, OpenAI mean
    assert (pre.size, pre.crop, pre.resize) == ((224, 224), 224, "shorter")
    assert pre.mean == tuple(open_clip.OPENAI_DATASET_MEAN)
    from membench.results.params import build_meta

    model = build_meta(registry.get_model("probe/open_clip/ViT-SO400M-14-SigLIP-384/webli"))
    assert sum(p.numel() for p in model.backbone.parameters()) == 428_225_600  # the SO400M image tower
    assert model.head.in_features == 1152
    assert model(torch.empty(2, 3, 384, 384, device="meta")).shape == (2,)


def test_missing_backbone_weights_offline_name_the_address(monkeypatch, tmp_path):
    monkeypatch.setattr("huggingface_hub.try_to_load_from_cache", lambda *a, **k: None)
    with pytest.raises(MembenchError, match=r"not available offline: https://huggingface.co/timm/test_resnet"
                                            r".*weights=PATH.*--pretrained none"):
        registry.get_model(TINY).builder()(BuildContext(pretrained=True))
    pytest.importorskip("open_clip")
    with pytest.raises(MembenchError, match=r"huggingface.co/timm/ViT-SO400M-14-SigLIP-384/resolve/main/"
                                            r"open_clip_model.safetensors"):
        registry.get_model("probe/open_clip/ViT-SO400M-14-SigLIP-384/webli").builder()(BuildContext(pretrained=True))
    assert math.isfinite(1.0)


def test_a_finished_fit_whose_record_has_unknown_fields_is_one_line(tmp_path, run_cli):
    """As a training stage's: a record from another membench version, not a traceback."""
    from membench.util.sealed import read_sealed, seal

    _run(run_cli, tmp_path)
    stage_dir = next((tmp_path / "work").glob("*/split1/fit"))
    (stage_dir.parent / "result.json").unlink()  # as if killed after the fit, before testing
    record = read_sealed(stage_dir / "stage.json", "record", "")
    record["outcome"]["from_the_future"] = 1
    (stage_dir / "stage.json").write_text(json.dumps(seal(record)))
    code, _, err = run_cli("run", "--model", TINY, "--data", "demo", "--preset", "smoke", "--splits", "1",
                           "--pretrained", "none", "--out", tmp_path / "lb2", "--work-dir", tmp_path / "work",
                           "--device", "cpu", "--feature-store", tmp_path / "store", "--resume")
    assert code == 2 and "unknown fields (from_the_future)" in err and "Traceback" not in err, err
