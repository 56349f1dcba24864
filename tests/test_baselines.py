"""Every registered model builds, runs forward and backward, has the parameter counts its
spec states and a valid recipe; then the baselines' own behaviour (AMNet's loss, MemNet's
layout, ResMem against its package, the timm family and offline weights)."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from membench import registry
from membench.errors import MembenchError
from membench.results.params import build_meta, count
from membench.spec import BuildContext

MODELS = sorted(registry.models())
# Architectures that accept small inputs get 64x64 (CPU time); fixed-size heads (AMNet's
# 14x14 attention, MemNet's and ResMem's 9216-wide fc6, ViT's position embeddings, the
# 8x8 maps of `ours`) run at their real size.
SMALL_INPUT = {"resnet50-lamem": (64, 64), "squalli": (64, 64)}
# Forward + backward over ~20 s on a 2-core machine: MemCoach's SigLIP SO400M at 384x384.
SLOW: set[str] = {"memcoach"}


def _params(names):
    return [pytest.param(n, marks=pytest.mark.slow) if n in SLOW else n for n in names]


def _first_trained_stage(spec):
    return next((s for s in spec.recipe if s.model is None), None)


# ----------------------------------------------------------------------------- all models

@pytest.mark.parametrize("name", MODELS)
def test_parameter_counts_match_spec(name):
    spec = registry.get_model(name)
    assert spec.params_expected.get("total"), f"{name}: params_expected has no total"
    c = count(spec)
    assert c["total"] == spec.params_expected["total"]
    assert c["used"] == spec.params_expected.get("used", spec.params_expected["total"])


@pytest.mark.parametrize("name", MODELS)
def test_recipe_is_valid(name):
    spec = registry.get_model(name)
    assert spec.citation and spec.summary
    if not spec.trainable:
        return
    assert spec.recipe
    model = build_meta(spec)
    modules = dict(model.named_modules())
    for stage in spec.recipe:
        if stage.model is not None:
            assert registry.get_model(stage.model).recipe, f"{name}: chained stage {stage.name}"
            continue
        assert stage.epochs > 0 and stage.batch_size > 0 and stage.lr > 0
        for prefix in stage.frozen:
            assert prefix in modules and prefix != "", f"{name}: frozen {prefix!r} is not a submodule"
        frozen = sum(p.numel() for prefix in stage.frozen for p in modules[prefix].parameters())
        assert frozen < sum(p.numel() for p in model.parameters()), f"{name}: stage {stage.name} trains nothing"


@pytest.mark.parametrize("name", _params(MODELS))
def test_forward_and_backward(name):
    spec = registry.get_model(name)
    torch.manual_seed(0)
    model = spec.builder()(BuildContext(pretrained=False, options={"captioner": "random"}))
    stage = _first_trained_stage(spec)
    frozen = stage.frozen if stage else ()
    modules = dict(model.named_modules())
    for prefix in frozen:
        modules[prefix].requires_grad_(False)
    h, w = SMALL_INPUT.get(name, spec.preprocess.input_size)
    batch = 2 if name in SMALL_INPUT else 1  # full-size inputs: one image keeps CPU time down
    x = torch.randn(batch, 3, h, w)
    y = torch.linspace(0.6, 0.8, batch)
    model.train()
    for prefix in frozen:
        modules[prefix].eval()  # as the trainer does: frozen BatchNorm statistics stay fixed
    pred = model(x)
    assert pred.shape == (batch,) and torch.isfinite(pred).all()
    if not spec.trainable:  # evaluation only (released weights): no recipe, no gradient to check
        return
    loss = model.loss(pred, y) if hasattr(model, "loss") else F.mse_loss(pred, y)
    loss.backward()
    trainable = [p for p in model.parameters() if p.requires_grad]
    assert trainable and any(p.grad is not None and p.grad.abs().sum() > 0 for p in trainable)
    assert all(p.grad is None for p in model.parameters() if not p.requires_grad)
    model.eval()
    with torch.no_grad():
        assert model(x[:1]).shape == (1,)


# ----------------------------------------------------------------------------- AMNet

@pytest.fixture(scope="module")
def amnet():
    torch.manual_seed(0)
    return registry.get_model("amnet").builder()(BuildContext(pretrained=False))


def test_amnet_attention_and_output_scale(amnet):
    amnet.eval()
    with torch.no_grad():
        pred = amnet(torch.randn(2, 3, 224, 224))
    alphas = amnet.last_alphas
    assert alphas.shape == (2, 3, 196)
    torch.testing.assert_close(alphas.sum(2), torch.ones(2, 3))
    # A freshly initialised head outputs ~0, i.e. the score sits near the official centre.
    assert torch.all((pred - 0.754).abs() < 0.5)
    with pytest.raises(ValueError, match="224x224"):
        amnet(torch.randn(1, 3, 128, 128))


def test_amnet_loss_is_scaled_mse_plus_attention_penalty(amnet):
    rng = np.random.default_rng(0)
    alphas = rng.dirichlet(np.ones(196), size=(4, 3))  # (B, T, L)
    pred, target = rng.uniform(0.4, 1.0, 4), rng.uniform(0.4, 1.0, 4)
    amnet.last_alphas = torch.tensor(alphas, dtype=torch.float64)
    got = amnet.loss(torch.tensor(pred, dtype=torch.float64), torch.tensor(target, dtype=torch.float64)).item()
    mse = np.mean(((pred - 0.754) * 2 - (target - 0.754) * 2) ** 2)
    penalty = np.sum(np.sum(0.2 - alphas, axis=1) ** 2) / 4
    assert got == pytest.approx(mse + 1e-5 * penalty, rel=1e-12)


def test_amnet_loads_the_official_key_layout(tmp_path, amnet):
    state = {k.replace("backbone.", "core_cnn.core_cnn.", 1): v for k, v in amnet.state_dict().items()}
    torch.save(state, tmp_path / "amnet_official.pth")
    loaded = registry.get_model("amnet").builder()(
        BuildContext(pretrained=False, options={"weights": str(tmp_path / "amnet_official.pth")}))
    torch.testing.assert_close(loaded.backbone.layer3[0].conv1.weight, amnet.backbone.layer3[0].conv1.weight)
    torch.testing.assert_close(loaded.rnn.weight_hh_l0, amnet.rnn.weight_hh_l0)


# ----------------------------------------------------------------------------- MemNet

def test_memnet_is_caffenet_with_lrn_and_groups():
    model = build_meta(registry.get_model("memnet"))
    convs = [m for m in model.features if isinstance(m, torch.nn.Conv2d)]
    assert [c.groups for c in convs] == [1, 2, 1, 2, 2]
    assert [c.out_channels for c in convs] == [96, 256, 384, 384, 256]
    assert sum(isinstance(m, torch.nn.LocalResponseNorm) for m in model.features) == 2
    # The reported 62M: the same network with Hybrid-CNN's 1,183-way fc8.
    with torch.device("meta"):
        model.classifier[-1] = torch.nn.Linear(4096, 1183)
    assert sum(p.numel() for p in model.parameters()) == 61_714_975


def test_memnet_without_offline_weights_says_what_to_do():
    with pytest.raises(MembenchError, match="--pretrained none"):
        registry.get_model("memnet").builder()(BuildContext(pretrained=True))


# ----------------------------------------------------------------------------- Squalli

def test_squalli_within_three_percent_of_reported():
    import membench_plugins.models.squalli as squalli_plugin

    spec = registry.get_model("squalli")
    total = count(spec)["total"]
    assert abs(total - spec.reported.params) / spec.reported.params < 0.03
    assert "reconstruction" in spec.tags and "RECONSTRUCTED" in squalli_plugin.__doc__


# ----------------------------------------------------------------------------- ResMem

def _demo_images(root, n=2):
    from membench.data.images import open_rgb

    return [open_rgb(p) for p in sorted((root / "images").iterdir())[:n]]


@pytest.fixture(scope="module")
def resmem_pair():
    pytest.importorskip("resmem", reason="the optional `resmem` package is not installed "
                                         "(pip install 'membench[resmem]')")
    import warnings

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # the package passes torchvision's deprecated `pretrained`
        from resmem import ResMem, transformer

        ours = registry.get_model("resmem").builder()(BuildContext(pretrained=True)).eval()
        theirs = ResMem(pretrained=True).eval()
    return ours, theirs, transformer


def test_resmem_equals_the_package_forward(resmem_pair, demo_root):
    ours, theirs, transformer = resmem_pair
    x = torch.stack([transformer(im) for im in _demo_images(demo_root)])
    with torch.no_grad():
        a, b = ours(x), theirs(x).squeeze(1)
    assert (a - b).abs().max().item() < 1e-5
    assert torch.all((a > 0) & (a < 1))


def test_resmem_preprocessing_matches_the_package(resmem_pair, demo_root):
    from membench.data.transforms import Normalizer, eval_transform

    _, _, transformer = resmem_pair
    pre = registry.get_model("resmem").preprocess
    images = _demo_images(demo_root, n=8)
    ours = Normalizer(pre)(torch.stack([eval_transform(pre)(im) for im in images]))
    theirs = torch.stack([transformer(im) for im in images])
    assert ours.shape == theirs.shape == (len(images), 3, 227, 227)
    # the same PIL resize and crop; only x/255 vs x*(1/255) rounding may differ
    assert (ours - theirs).abs().max().item() <= 1e-6


def test_resmem_without_package_says_where_weights_come_from(monkeypatch):
    import membench_plugins.models.resmem as plugin

    monkeypatch.setattr(plugin, "package_weights_file", lambda: None)
    with pytest.raises(MembenchError, match=r"membench\[resmem\].*--pretrained none"):
        plugin.build_resmem(BuildContext(pretrained=True))


def test_resmem_spec_marks_licence_and_contamination():
    spec = registry.get_model("resmem")
    assert "non-commercial" in spec.license
    assert "possibly-contaminated-on-lamem" in spec.tags and "contaminated" in spec.notes
    assert spec.trainable and spec.recipe[0].frozen == ("features",)


# ----------------------------------------------------------------------------- ViTMem, timm

def test_vitmem_loads_its_checkpoint_layout(tmp_path, monkeypatch):
    import membench_plugins.models.vitmem as plugin

    monkeypatch.setattr(plugin, "VITMEM_ARCH", "vit_tiny_patch16_224")  # same layout, 1/15 the size
    spec = registry.get_model("vitmem")
    torch.manual_seed(0)
    model = spec.builder()(BuildContext(pretrained=False))
    state = {k.removeprefix("vit."): v for k, v in model.state_dict().items()}  # bare timm keys
    torch.save(state, tmp_path / "vitmem.pth")
    loaded = spec.builder()(BuildContext(pretrained=True, options={"weights": str(tmp_path / "vitmem.pth")}))
    torch.testing.assert_close(loaded.vit.head.weight, model.vit.head.weight)
    assert spec.preprocess.mean is None and spec.preprocess.input_size == (224, 224)


def test_vitmem_without_weights_names_the_file(monkeypatch, tmp_path):
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch"))
    with pytest.raises(MembenchError, match="vitmem_base_patch16_224_miil_v1-f580d24a.pth.*--pretrained none"):
        registry.get_model("vitmem").builder()(BuildContext(pretrained=True))


def test_timm_family_uses_timms_pretrained_config():
    import timm

    spec = registry.get_model("timm/resnet18")
    cfg = timm.models.get_pretrained_cfg("resnet18").to_dict()
    assert spec.name == "timm/resnet18" and spec.recipe
    assert spec.preprocess.crop == cfg["input_size"][1]
    assert spec.preprocess.size == (math.floor(224 / cfg["crop_pct"]),) * 2
    assert spec.preprocess.mean == tuple(cfg["mean"]) and spec.preprocess.std == tuple(cfg["std"])
    model = spec.builder()(BuildContext(pretrained=False))
    pred = model(torch.randn(2, 3, 64, 64))
    assert pred.shape == (2,)
    pred.sum().backward()


def test_timm_family_loads_an_explicit_file_and_replaces_the_classifier(tmp_path):
    import timm

    torch.manual_seed(0)
    source = timm.create_model("resnet18", pretrained=False)  # 1000 classes, as published
    torch.save(source.state_dict(), tmp_path / "resnet18.pth")
    model = registry.get_model("timm/resnet18").builder()(
        BuildContext(pretrained=True, options={"weights": str(tmp_path / "resnet18.pth")}))
    torch.testing.assert_close(model.net.conv1.weight, source.conv1.weight)
    assert model.net.fc.out_features == 1


def test_timm_family_offline_errors(monkeypatch, tmp_path):
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch"))
    monkeypatch.setattr("huggingface_hub.try_to_load_from_cache", lambda *a, **k: None)
    with pytest.raises(MembenchError, match="not available offline.*weights=PATH.*--pretrained none"):
        registry.get_model("timm/resnet18").builder()(BuildContext(pretrained=True))
    with pytest.raises(MembenchError, match="did you mean timm/resnet18"):
        registry.get_model("timm/resnet81")


def test_family_models_are_not_listed_but_resolve():
    assert "timm" in registry.families()
    assert not any(n.startswith("timm/") for n in registry.models())
    assert registry.select_models("timm/resnet18")[0].plugin.endswith("vitmem")
