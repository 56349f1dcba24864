"""Released weights and pretrained backbones downloaded on 127.0.0.1, each in its source's
exact format: ViTMem's checkpoint (the vitmem package's state_dict, `vit.*` keys) through
`membench weights fetch` and then `membench predict` without flags; timm weights as the
Hugging Face Hub serves them (HEAD with the Hub's headers, then the file) into the
Hugging Face cache; MemNet's PyTorch port (pretorched-x keys + GANalyze's memnet_mean.mat)
with its ten crops and output mapping against a GANalyze-style reference forward; MemCoach's
head (its torch.save dict) loaded onto a backbone. Full-size architectures are checked on
the meta device; the default tests use tiny stand-ins where a file would be hundreds of MB."""

from __future__ import annotations

import csv
import dataclasses
import hashlib
import io
import json

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from membench import BuildContext, registry
from membench.weights import released


def _saved(obj) -> bytes:
    buf = io.BytesIO()
    torch.save(obj, buf)
    return buf.getvalue()


def _release(monkeypatch, module, attr: str, **changes):
    """The module's declared release with another address/checksum (the published ones cannot
    be served here), registered afresh."""
    monkeypatch.setattr(module, attr, dataclasses.replace(getattr(module, attr), **changes))
    registry.clear_cache()


@pytest.fixture
def fresh_registry():
    yield
    registry.clear_cache()


# ----------------------------------------------------------------------------- ViTMem

@pytest.fixture
def tiny_vitmem(monkeypatch, fresh_registry):
    import membench_plugins.models.vitmem as plugin

    monkeypatch.setattr(plugin, "VITMEM_ARCH", "vit_tiny_patch16_224")  # the package's layout, 1/15 the size
    torch.manual_seed(0)
    model = registry.get_model("vitmem").builder()(BuildContext(pretrained=False))
    state = {k: v + 0.01 * torch.randn_like(v) if v.is_floating_point() else v for k, v in model.state_dict().items()}
    return plugin, state


def test_vitmem_release_is_the_packages_published_file():
    spec = registry.get_model("vitmem")
    rw, = spec.released_weights
    assert rw.url == ("https://huggingface.co/brainpriority/vitmem/resolve/main/"
                      "vitmem_base_patch16_224_miil_v1-f580d24a.pth")  # vitmem 1.0.1, ViTMem.__init__
    assert rw.sha256 == "f580d24a" and not rw.per_split
    # full size on the meta device: the package's ViTMem_model keys are membench's, every shape
    expected = {k: tuple(v.shape) for k, v in released.expected_state(spec, rw).items()}
    assert expected["vit.head.weight"] == (1, 768)
    assert sum(int(np.prod(s)) for s in expected.values()) == 85_771_777
    vitmem = pytest.importorskip("vitmem")
    with torch.device("meta"):
        theirs = vitmem.ViTMem_model()  # what the package loads the checkpoint into, strictly
    assert expected == {k: tuple(v.shape) for k, v in theirs.state_dict().items()}


def test_weights_fetch_vitmem_installs_what_predict_uses(server, tiny_vitmem, monkeypatch, demo_root, run_cli):
    base, hub = server
    plugin, state = tiny_vitmem
    data = _saved(state)
    path = f"/brainpriority/vitmem/resolve/main/{plugin.VITMEM_FILE}"
    hub.files[path] = data
    _release(monkeypatch, plugin, "RELEASE", url=base + path, sha256=hashlib.sha256(data).hexdigest()[:8])
    code, out, err = run_cli("weights", "fetch", "vitmem")
    assert code == 0, err
    assert "installed vitmem_v1 for vitmem" in out
    images = sorted((demo_root / "images").iterdir())[:3]
    code, out, err = run_cli("predict", "--model", "vitmem", "--device", "cpu", *images)
    assert code == 0, err
    assert "authors' weights (vitmem_v1)" in err
    got = [float(r["score"]) for r in csv.DictReader(io.StringIO(out))]

    from membench.data.images import open_rgb
    from membench.data.transforms import Normalizer, eval_transform

    spec = registry.get_model("vitmem")
    model = spec.builder()(BuildContext(pretrained=False)).eval()
    model.load_state_dict(state)
    x = torch.stack([eval_transform(spec.preprocess)(open_rgb(p)) for p in images])
    with torch.no_grad():
        expected = model(Normalizer(spec.preprocess)(x))
    assert got == pytest.approx(expected.tolist(), abs=1e-6)  # printed with 6 decimals
    assert len(set(got)) > 1
    assert hub.requests.count(f"GET {path}") == 1  # installed once; predict downloads nothing


def test_a_file_that_is_not_the_published_one_is_refused(server, tiny_vitmem, monkeypatch, run_cli):
    base, hub = server
    plugin, state = tiny_vitmem
    hub.files["/v.pth"] = _saved(state)
    _release(monkeypatch, plugin, "RELEASE", url=base + "/v.pth")  # the published prefix f580d24a
    code, out, err = run_cli("weights", "fetch", "vitmem")
    assert code == 2 and "refused" in err and "f580d24a" in err and "Traceback" not in err
    assert released.installed(registry.get_model("vitmem")) is None


def test_vitmem_offline_names_the_address_and_where_to_put_the_file(tmp_path, monkeypatch, demo_root, run_cli):
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch"))
    image = sorted((demo_root / "images").iterdir())[0]
    code, out, err = run_cli("predict", "--model", "vitmem", image)
    assert code == 2 and len(err.strip().splitlines()) == 1, err
    assert "https://huggingface.co/brainpriority/vitmem/resolve/main/vitmem_base_patch16_224_miil_v1-f580d24a.pth" \
        in err and "downloads/vitmem_base_patch16_224_miil_v1-f580d24a.pth" in err
    assert "--pretrained none" not in err  # random weights are no way to score photos: predict never offers them


def test_the_vitmem_packages_own_download_is_used_without_network(tmp_path, tiny_vitmem, monkeypatch):
    """A file the vitmem package already put in torch's hub cache is imported (checked) offline."""
    plugin, state = tiny_vitmem
    data = _saved(state)
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch"))
    name = f"vitmem_base_patch16_224_miil_v1-{hashlib.sha256(data).hexdigest()[:8]}.pth"
    (tmp_path / "torch" / "hub" / "checkpoints").mkdir(parents=True)
    (tmp_path / "torch" / "hub" / "checkpoints" / name).write_bytes(data)
    _release(monkeypatch, plugin, "RELEASE", archive=name, sha256=hashlib.sha256(data).hexdigest()[:8])
    model = registry.get_model("vitmem").builder()(BuildContext(pretrained=True))
    torch.testing.assert_close(model.vit.head.weight, state["vit.head.weight"])


def test_weights_list_shows_download_addresses(run_cli):
    code, out, err = run_cli("weights", "list", "--format", "csv")
    assert code == 0, err
    rows = {(r["model"], r["release"]): r["download"] for r in csv.DictReader(io.StringIO(out))}
    assert rows[("vitmem", "vitmem_v1")].startswith("https://huggingface.co/brainpriority/vitmem/")
    assert rows[("memnet", "memnet_pretorched")] == "http://pretorched-x.csail.mit.edu/models/memnet_lamem-a92fdac2.pth"
    assert rows[("amnet", "lamem_ResNet50FC_lstm3")].startswith("https://drive.google.com/")
    assert rows[("memcoach", "memcoach_head")].startswith("https://raw.githubusercontent.com/laitifranz/MemCoach/")


# ----------------------------------------------------------------------------- timm via the Hub

def test_timm_weights_download_from_the_hub_into_its_cache(server, tmp_path, monkeypatch):
    import timm
    from huggingface_hub import constants
    from safetensors.torch import save

    base, hub = server
    monkeypatch.setattr(constants, "ENDPOINT", base)  # what HF_ENDPOINT sets when huggingface_hub is imported
    monkeypatch.setattr(constants, "HUGGINGFACE_CO_URL_TEMPLATE", base + "/{repo_id}/resolve/{revision}/{filename}")
    monkeypatch.setattr(constants, "HF_HUB_CACHE", str(tmp_path / "hf"))
    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", False)
    torch.manual_seed(3)
    source = timm.create_model("test_resnet.r160_in1k", pretrained=False)  # with its classifier, as published
    hub.files["/timm/test_resnet.r160_in1k/resolve/main/model.safetensors"] = save(source.state_dict())
    model = registry.get_model("probe/test_resnet.r160_in1k").builder()(BuildContext(pretrained=True))
    torch.testing.assert_close(model.backbone.conv1[0].weight, source.conv1[0].weight)
    cached = list((tmp_path / "hf").glob("models--timm--test_resnet.r160_in1k/snapshots/*/model.safetensors"))
    assert len(cached) == 1
    hub.requests.clear()
    monkeypatch.setenv("MEMBENCH_OFFLINE", "1")  # now cached: no network needed
    registry.get_model("timm/test_resnet.r160_in1k").builder()(BuildContext(pretrained=True))
    assert hub.requests == []


def test_open_clip_weights_download_under_the_names_open_clip_uses(server, tmp_path, monkeypatch):
    """SigLIP's weights as open_clip fetches them: repository timm/ViT-SO400M-14-SigLIP-384,
    open_clip_model.safetensors first, else open_clip_pytorch_model.bin (here only the .bin)."""
    pytest.importorskip("open_clip")
    from huggingface_hub import constants

    from membench.weights.hub import open_clip_file

    base, hub = server
    monkeypatch.setattr(constants, "ENDPOINT", base)
    monkeypatch.setattr(constants, "HUGGINGFACE_CO_URL_TEMPLATE", base + "/{repo_id}/resolve/{revision}/{filename}")
    monkeypatch.setattr(constants, "HF_HUB_CACHE", str(tmp_path / "hf"))
    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", False)
    hub.files["/timm/ViT-SO400M-14-SigLIP-384/resolve/main/open_clip_pytorch_model.bin"] = b"weights"
    path = open_clip_file("ViT-SO400M-14-SigLIP-384", "webli")
    assert path.endswith("open_clip_pytorch_model.bin") and open(path, "rb").read() == b"weights"
    assert str(tmp_path / "hf") in path
    assert "HEAD /timm/ViT-SO400M-14-SigLIP-384/resolve/main/open_clip_model.safetensors" in hub.requests


# ----------------------------------------------------------------------------- MemNet's PyTorch port

PORT_SHAPES = {"conv1": (96, 3, 11, 11), "conv2": (256, 48, 5, 5), "conv3": (384, 256, 3, 3),
               "conv4": (384, 192, 3, 3), "conv5": (256, 192, 3, 3), "fc6": (4096, 9216), "fc7": (4096, 4096),
               "fc8": (1, 4096)}


def port_files(folder, seed=0):
    """pretorched-x's state_dict (conv1..fc8) and GANalyze's memnet_mean.mat (image_mean,
    256x256x3 float32, BGR), random but MemNet-shaped, as the release folder holds them."""
    import scipy.io

    gen = torch.Generator().manual_seed(seed)
    state = {}
    for name, shape in PORT_SHAPES.items():
        fan_in = int(np.prod(shape[1:]))
        state[f"{name}.weight"] = torch.randn(shape, generator=gen) * (2 / fan_in) ** 0.5
        state[f"{name}.bias"] = torch.randn(shape[0], generator=gen) * 0.01
    state["fc8.weight"] *= 1e-3  # fc8 near the mapping's centre (0.76 +- ~0.1), so the clip rarely bites
    state["fc8.bias"] += 0.76
    folder.mkdir(parents=True, exist_ok=True)
    torch.save(state, folder / "memnet_lamem-a92fdac2.pth")
    mean = np.random.default_rng(seed).uniform(80, 140, (256, 256, 3)).astype(np.float32)
    scipy.io.savemat(folder / "memnet_mean.mat", {"image_mean": mean})
    return state, mean


def ganalyze_forward(state, mean, rgb256):
    """GANalyze's memnet (tensorflow/assessors/memnet.py) in torch: BGR 0..255 minus the mean
    image, ten 227 crops (corners at 0 and 29, centre at 15, each mirrored), fc8 averaged,
    (fc8 - 0.7626) * 2 + 0.65 clipped to [0, 1]."""
    lrn = lambda x: F.local_response_norm(x, 5, alpha=1e-4, beta=0.75, k=1.0)  # noqa: E731
    s = state
    x = rgb256.flip(1) - torch.from_numpy(mean).permute(2, 0, 1)
    crops = []
    for i, j in ((0, 0), (0, 29), (29, 0), (29, 29), (15, 15)):
        c = x[..., i:i + 227, j:j + 227]
        crops += [c, c.flip(-1)]
    out = []
    for c in crops:
        h = lrn(F.max_pool2d(F.relu(F.conv2d(c, s["conv1.weight"], s["conv1.bias"], stride=4)), 3, 2))
        h = lrn(F.max_pool2d(F.relu(F.conv2d(h, s["conv2.weight"], s["conv2.bias"], padding=2, groups=2)), 3, 2))
        h = F.relu(F.conv2d(h, s["conv3.weight"], s["conv3.bias"], padding=1))
        h = F.relu(F.conv2d(h, s["conv4.weight"], s["conv4.bias"], padding=1, groups=2))
        h = F.max_pool2d(F.relu(F.conv2d(h, s["conv5.weight"], s["conv5.bias"], padding=1, groups=2)), 3, 2)
        h = F.relu(F.linear(h.flatten(1), s["fc6.weight"], s["fc6.bias"]))
        h = F.relu(F.linear(h, s["fc7.weight"], s["fc7.bias"]))
        out.append(F.linear(h, s["fc8.weight"], s["fc8.bias"]).squeeze(1))
    fc8 = torch.stack(out).mean(0)
    return ((fc8 - 0.7626) * 2 + 0.65).clamp(0, 1), fc8


def test_memnet_port_converts_exactly_and_evaluates_with_its_protocol(tmp_path, demo_root):
    from membench.data.images import open_rgb
    from membench.data.transforms import Normalizer, eval_transform
    from membench_plugins.models.memnet import port_checkpoint

    state, mean = port_files(tmp_path / "port")
    spec = registry.get_model("memnet")
    rw = released.find_release(spec, "memnet_pretorched")
    assert rw.options == {"crops": "10", "output": "port"} and rw.files[0].name == "memnet_mean.mat"
    (split, converted, member), = port_checkpoint(tmp_path / "port")
    released.check_exact(released.expected_state(spec, rw), converted, "port", "memnet")  # every key and shape
    model = spec.builder()(BuildContext(pretrained=False, options=dict(rw.options))).eval()
    model.load_state_dict(converted)
    images = sorted((demo_root / "images").iterdir())[:3]
    pixels = torch.stack([eval_transform(rw.preprocess)(open_rgb(p)) for p in images])  # uint8, 256x256, no crop
    with torch.no_grad():
        ours = model(Normalizer(rw.preprocess)(pixels))
        reference, fc8 = ganalyze_forward(state, mean, pixels.float())
        raw = spec.builder()(BuildContext(pretrained=False, options={"crops": "10"})).eval()
        raw.load_state_dict(converted)
        raw_fc8 = raw(Normalizer(rw.preprocess)(pixels))
    assert pixels.shape[-2:] == (256, 256)
    assert torch.allclose(raw_fc8, fc8, rtol=1e-5, atol=1e-6)  # measured: 1.2e-7 on fc8 near 0.77
    assert torch.allclose(ours, reference, atol=1e-6)
    assert ((reference > 0) & (reference < 1)).all() and reference.std() > 1e-3


def test_the_ten_crop_option_needs_the_whole_image():
    model = registry.get_model("memnet").builder()(BuildContext(pretrained=False, options={"crops": "10"}))
    with pytest.raises(ValueError, match="crops=10 needs 256x256"):
        model(torch.zeros(1, 3, 227, 227))


def test_an_old_227_mean_checkpoint_still_loads():
    spec = registry.get_model("memnet")
    model = spec.builder()(BuildContext(pretrained=False))
    state = model.state_dict()
    state["input_mean"] = torch.ones(3, 227, 227)  # written before the mean became 256x256
    model.load_state_dict(state)
    assert model.input_mean[:, 14:241, 14:241].eq(1).all() and model.input_mean.sum() == 3 * 227 * 227


@pytest.mark.slow
def test_weights_fetch_memnet_port_then_run_train_none(server, tmp_path, monkeypatch, demo_root, run_cli):
    """The whole path at full size (a ~230 MB file): fetch both files, import, evaluate with the
    port's protocol; the rows show it."""
    import membench_plugins.models.memnet as plugin

    base, hub = server
    port_files(tmp_path / "port")
    hub.files["/models/memnet_lamem-a92fdac2.pth"] = (tmp_path / "port" / "memnet_lamem-a92fdac2.pth").read_bytes()
    hub.files["/mean/memnet_mean.mat"] = (tmp_path / "port" / "memnet_mean.mat").read_bytes()
    spec = registry.get_model("memnet")
    mean_file = dataclasses.replace(plugin.GANALYZE_MEAN, url=base + "/mean/memnet_mean.mat", git_blob_sha1=None)
    port = dataclasses.replace(released.find_release(spec, "memnet_pretorched"),
                               url=base + "/models/memnet_lamem-a92fdac2.pth", files=(mean_file,))
    monkeypatch.setattr(registry, "get_model", lambda name, _get=registry.get_model: dataclasses.replace(
        _get(name), released_weights=(port,)) if name == "memnet" else _get(name))
    code, out, err = run_cli("weights", "fetch", "memnet")
    assert code == 0, err
    manifest = json.loads((released.release_dir(spec, port) / "manifest.json").read_text())
    assert set(manifest["archive"]["files"]) == {"memnet_lamem-a92fdac2.pth", "memnet_mean.mat"}
    assert manifest["archive"]["published_sha256"] is None  # none published: the first download's is recorded
    lb = tmp_path / "lb"
    code, out, err = run_cli("run", "--model", "memnet", "--train", "none", "--data", demo_root, "--splits", "1",
                             "--out", lb, "--work-dir", tmp_path / "w", "--device", "cpu")
    assert code == 0, err
    row, = csv.DictReader(open(lb / "results.csv"))
    assert row["configuration"].startswith("crops=10; output=port") and "memnet_pretorched" in row["configuration"]
    with open(lb / "predictions" / row["run_id"] / "split1.csv") as f:
        preds = [float(r["pred"]) for r in csv.DictReader(f)]
    assert all(0.0 <= p <= 1.0 for p in preds) and len(set(preds)) > 1


# ----------------------------------------------------------------------------- MemCoach

TINY_SIGLIP = "membench-test-tiny-siglip"


@pytest.fixture
def tiny_siglip(tmp_path, monkeypatch, fresh_registry):
    """An open_clip model config with SigLIP SO400M's 1152-d embedding but one narrow layer."""
    open_clip = pytest.importorskip("open_clip")
    import membench_plugins.models.probe as plugin

    cfg = {"embed_dim": 1152, "vision_cfg": {"image_size": 384, "layers": 1, "width": 32, "patch_size": 64,
                                             "head_width": 16},
           "text_cfg": {"context_length": 8, "vocab_size": 64, "width": 32, "heads": 2, "layers": 1}}
    (tmp_path / f"{TINY_SIGLIP}.json").write_text(json.dumps(cfg))
    open_clip.add_model_config(tmp_path / f"{TINY_SIGLIP}.json")
    monkeypatch.setattr(plugin, "MEMCOACH_BACKBONE", (TINY_SIGLIP, ""))
    return plugin


def test_memcoach_full_size_and_its_released_head_format():
    pytest.importorskip("open_clip")
    from membench.results.params import build_meta

    spec = registry.get_model("memcoach")
    model = build_meta(spec)
    assert sum(p.numel() for p in model.backbone.parameters()) == 428_225_600  # SigLIP SO400M/14 image tower
    assert sum(p.numel() for p in model.parameters()) == spec.params_expected["total"]
    rw, = spec.released_weights
    assert rw.part == "head" and rw.license == "Apache-2.0"
    from membench_plugins.models.probe import MEMCOACH_BACKBONE, open_clip_preprocess

    assert spec.preprocess == open_clip_preprocess(*MEMCOACH_BACKBONE)  # written out, so registering needs no open_clip
    assert {k: tuple(v.shape) for k, v in released.expected_state(spec, rw).items()} == {
        "head.fc1.weight": (256, 1152), "head.fc1.bias": (256,),
                                                 "head.fc2.weight": (1, 256), "head.fc2.bias": (1,)}


def test_memcoach_head_fetched_and_evaluated_on_its_backbone(server, tiny_siglip, monkeypatch, demo_root, tmp_path,
                                                             run_cli):
    base, hub = server
    gen = torch.Generator().manual_seed(5)
    head = {"fc1.weight": torch.randn(256, 1152, generator=gen) * 0.05, "fc1.bias": torch.zeros(256),
            "fc2.weight": torch.randn(1, 256, generator=gen) * 0.05, "fc2.bias": torch.tensor([0.6])}
    data = _saved({"model": head, "input_dim": 1152, "hidden_dim": 256,  # MemCoach's own checkpoint dict
                   "backbone_model": "ViT-SO400M-14-SigLIP-384", "pretrained_backbone_model": "webli"})
    hub.files["/model_weights.pth"] = data
    _release(monkeypatch, tiny_siglip, "MEMCOACH_HEAD", url=base + "/model_weights.pth",
             sha256=hashlib.sha256(data).hexdigest())
    lb = tmp_path / "lb"
    code, out, err = run_cli("run", "--model", "memcoach", "--train", "none", "--pretrained", "none", "--data",
                             demo_root, "--splits", "1", "--out", lb, "--work-dir", tmp_path / "w", "--device", "cpu")
    assert code == 0, err
    row, = csv.DictReader(open(lb / "results.csv"))
    assert "authors' weights (memcoach_head)" in row["configuration"] + row["notes"]
    with open(lb / "predictions" / row["run_id"] / "split1.csv") as f:
        got = {r["image"]: float(r["pred"]) for r in csv.DictReader(f)}
    spec = registry.get_model("memcoach")
    from membench.engine.device import resolve_device
    from membench.engine.inference import predict
    from membench.engine.seeds import epoch_seed

    test = registry.get_dataset("lamem").opener()(demo_root, {}).load_split(1).test
    torch.manual_seed(epoch_seed(1, "build:memcoach:evaluate", 0))  # the run's random tiny backbone, rebuilt
    model = spec.builder()(BuildContext(pretrained=False)).eval()
    model.head.load_state_dict(head)
    expected = predict(model, test, spec.preprocess, resolve_device("cpu"), batch_size=8)
    with torch.no_grad():
        feats = model.backbone(torch.zeros(1, 3, 384, 384))
        manual = (F.linear(F.relu(F.linear(feats, head["fc1.weight"], head["fc1.bias"])), head["fc2.weight"],
                           head["fc2.bias"]).squeeze(1)).clamp(0, 1)
    assert torch.allclose(model(torch.zeros(1, 3, 384, 384)), manual)
    assert [got[s.name] for s in test] == pytest.approx(list(expected), abs=1e-6)
