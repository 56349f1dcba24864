"""`membench explain`: the model's own attention (ours: the captioner's averaged map; AMNet:
one map per LSTM step) sums to 1 per map; Grad-CAM of a CNN and of a ViT equals what
pytorch_grad_cam itself computes on the same model, input and layer."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from membench.errors import MembenchError


@pytest.fixture
def image(demo_root):
    return sorted((demo_root / "images").glob("*.jpg"))[0]


def _input(spec, path):
    from membench.data.images import open_rgb
    from membench.data.transforms import Normalizer, eval_transform

    return Normalizer(spec.preprocess)(eval_transform(spec.preprocess)(open_rgb(path))[None])


def test_ours_attention_is_the_captioners_map_and_sums_to_one(image, tmp_path, run_cli):
    out = tmp_path / "maps"
    code, stdout, err = run_cli("explain", "--model", "ours", "--model-option", "captioner=random",
                                "--model-option", "decode=greedy", "--pretrained", "none", image, "--out", out)
    assert code == 0, err
    maps = np.load(out / f"{image.stem}_ours_attention.npy")
    assert maps.shape == (1, 8, 8)  # the feature grid the head's features are weighted on
    assert (maps >= 0).all() and maps.sum(axis=(1, 2)) == pytest.approx([1.0], abs=1e-5)
    png = out / f"{image.stem}_ours_attention.png"
    assert f"wrote {png}" in stdout and png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_amnet_has_one_map_per_lstm_step_each_summing_to_one(image):
    from membench import registry
    from membench.explain.maps import explain
    from membench.spec import BuildContext

    spec = registry.get_model("amnet")
    model = spec.builder()(BuildContext(pretrained=False)).eval()
    x = _input(spec, image)
    maps = explain(model, x)
    assert maps.method == "attention" and maps.names == ["LSTM step 1", "LSTM step 2", "LSTM step 3"]
    assert maps.maps.shape == (3, 14, 14)
    assert maps.maps.sum(axis=(1, 2)) == pytest.approx([1.0] * 3, abs=1e-5)
    with torch.no_grad():
        model(x)
    assert np.array_equal(maps.maps, model.last_alphas[0].reshape(3, 14, 14).numpy())  # the model's own alphas


def test_cnn_grad_cam_equals_the_librarys_own(image, tmp_path, run_cli):
    """resnet50-lamem from a checkpoint through the CLI; the library on the same weights and
    input, at the trunk's output (ResNet's usual Grad-CAM layer), targeting the score."""
    pytest.importorskip("pytorch_grad_cam", reason="Grad-CAM needs the grad-cam package (extra: explain)")
    from pytorch_grad_cam import GradCAM
    from pytorch_grad_cam.utils.model_targets import RawScoresOutputTarget

    from membench import registry
    from membench.spec import BuildContext

    spec = registry.get_model("resnet50-lamem")
    torch.manual_seed(3)
    model = spec.builder()(BuildContext(pretrained=False)).eval()

    def library():
        with GradCAM(model=model, target_layers=[model.backbone]) as cam:
            return cam(input_tensor=_input(spec, image), targets=[RawScoresOutputTarget()])

    expected = library()
    if expected.max() == 0:  # random weights whose Grad-CAM is negative everywhere (ReLU'd to 0)
        with torch.no_grad():
            model.head.weight.neg_()
        expected = library()
    assert expected.max() > 0.5  # a map worth comparing, not zeros
    torch.save(model.state_dict(), tmp_path / "best.pt")
    code, _, err = run_cli("explain", "--model", "resnet50-lamem", "--checkpoint", tmp_path / "best.pt", image,
                           "--out", tmp_path / "maps")
    assert code == 0, err
    written = np.load(tmp_path / "maps" / f"{image.stem}_resnet50-lamem_grad-cam.npy")
    assert written.shape == expected.shape == (1, 256, 256)
    assert np.allclose(written, expected, atol=1e-6)


def test_vit_grad_cam_equals_the_librarys_own(image):
    """A timm ViT: the library's recipe (last block's norm1, patch tokens back on their grid)."""
    pytest.importorskip("pytorch_grad_cam", reason="Grad-CAM needs the grad-cam package (extra: explain)")
    from pytorch_grad_cam import GradCAM
    from pytorch_grad_cam.utils.model_targets import RawScoresOutputTarget

    from membench import registry
    from membench.explain.maps import explain
    from membench.spec import BuildContext

    spec = registry.get_model("timm/vit_tiny_patch16_224")
    torch.manual_seed(0)
    model = spec.builder()(BuildContext(pretrained=False)).eval()
    x = _input(spec, image)
    maps = explain(model, x)
    assert maps.method == "grad-cam" and maps.layer == "net.blocks.11.norm1"

    def reshape(tokens):  # the library's ViT example: drop the class token, 14x14 patches
        return tokens[:, 1:, :].reshape(tokens.size(0), 14, 14, tokens.size(2)).permute(0, 3, 1, 2)

    with GradCAM(model=model, target_layers=[model.net.blocks[-1].norm1], reshape_transform=reshape) as cam:
        expected = cam(input_tensor=x, targets=[RawScoresOutputTarget()])
    assert np.allclose(maps.maps, expected, atol=1e-6)


def test_explain_errors_are_one_line(image, tmp_path, run_cli, tiny_plugin):
    def error(*args) -> str:
        code, _, err = run_cli("explain", "--model", "tiny-cnn", *args, "--out", tmp_path)
        errors = [line for line in err.splitlines() if line.startswith("membench: error:")]
        assert code == 2 and len(errors) == 1 and "Traceback" not in err
        return errors[0]

    assert "this model has no attention of its own (models with one: ours, amnet)" in error("--method", "attention",
                                                                                          image)
    assert "--layer 'nope': no such module in the model (e.g. features.0)" in error("--layer", "nope", image)
    assert "missing.jpg" in error(tmp_path / "missing.jpg")
    assert not list(tmp_path.glob("*.png"))


def test_grad_cam_without_the_package_says_how_to_install(monkeypatch):
    import builtins

    from membench.explain.maps import grad_cam

    real = builtins.__import__

    def no_grad_cam(name, *args, **kwargs):
        if name.startswith("pytorch_grad_cam"):
            raise ImportError(name)
        return real(name, *args, **kwargs)

    monkeypatch.setattr(builtins, "__import__", no_grad_cam)
    with pytest.raises(MembenchError, match=r"pip install 'membench\[explain\]'"):
        grad_cam(torch.nn.Conv2d(3, 1, 3), torch.zeros(1, 3, 8, 8))


def test_grad_cam_finds_its_layer_once_per_model_not_per_image(demo_root, tmp_path, run_cli, tiny_plugin,
                                                               monkeypatch):
    pytest.importorskip("pytorch_grad_cam", reason="Grad-CAM needs the grad-cam package (extra: explain)")
    from membench.explain import maps

    calls = []
    find = maps._find_last_feature_map
    monkeypatch.setattr(maps, "_find_last_feature_map", lambda m, x: calls.append(1) or find(m, x))
    images = sorted((demo_root / "images").glob("*.jpg"))[:3]
    code, _, err = run_cli("explain", "--model", "tiny-cnn", "--pretrained", "none", *images, "--out", tmp_path)
    assert code == 0 and len(list(tmp_path.glob("*_grad-cam.npy"))) == 3, err
    assert len(calls) == 1
