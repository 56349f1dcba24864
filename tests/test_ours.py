"""`ours` and `resnet50-lamem-imagenet`: sizes, shapes, numerics, frozen parts, CLI."""

from __future__ import annotations

import os

import numpy as np
import pytest
import torch

from membench import registry
from membench.cli import main
from membench.errors import MembenchError
from membench.results.params import count
from membench.spec import BuildContext
from membench_plugins.captioner import sat
from membench_plugins.models import ours
from membench_plugins.models.resnet import build_resnet50_lamem

CAPTIONER = 62_984_019
RESNET50_TRUNK = 23_508_032


@pytest.fixture(scope="module")
def stage1(tmp_path_factory):
    """A stage-1 resnet50-lamem checkpoint, as the runner hands it to stage 2."""
    torch.manual_seed(0)
    model = build_resnet50_lamem(BuildContext(pretrained=False))
    path = tmp_path_factory.mktemp("stage1") / "best.pt"
    torch.save(model.state_dict(), path)
    return path, model.state_dict()


@pytest.fixture(scope="module")
def model(stage1):
    torch.manual_seed(0)
    # greedy: these tests follow each caption's steps (beam search, the default, in test_captioner)
    ctx = BuildContext(pretrained=False, upstream={"stage1": stage1[0]},
                       options={"captioner": "random", "decode": "greedy"})
    return ours.build_ours(ctx)


def end_captions_at(captioner, steps: list[int]):
    """Make caption i end at step steps[i] (the random captioner never emits <end>)."""
    calls = {"n": 0}

    def hook(module, args, out):
        calls["n"] += 1
        out = out.clone()
        out[:, captioner.end_id] = -1e9
        for i, k in enumerate(steps):
            if calls["n"] % max(steps) == k % max(steps):
                out[i, captioner.end_id] = 1e9
        return out

    return captioner.decoder.fc.register_forward_hook(hook)


@pytest.fixture(scope="module")
def batch():
    torch.manual_seed(1)
    return torch.randn(2, 3, 256, 256)


def test_parameter_counts_on_meta():
    c = count(registry.get_model("ours"))
    assert abs(c["total"] - 130_200_000) <= 0.03 * 130_200_000
    assert c["total"] == c["used"]  # every parameter takes part in the forward
    head = (2048 * 9 * 512 + 2 * 512) + (512 * 9 * 512 + 2 * 512) + (32768 * 128 + 128) + (128 + 1)
    assert c["total"] == 2 * RESNET50_TRUNK + 2 * (2048 * 1024 + 1024) + CAPTIONER + head
    assert c["total"] == registry.get_model("ours").params_expected["total"]
    assert c["trainable"]["stage2"] == c["total"] - 2 * RESNET50_TRUNK - CAPTIONER
    ablation = count(registry.get_model("resnet50-lamem-imagenet"))
    assert ablation["total"] == c["total"] - CAPTIONER
    assert ablation["trainable"]["stage2"] == c["trainable"]["stage2"]
    assert ablation["total"] == registry.get_model("resnet50-lamem-imagenet").params_expected["total"]


def test_recipes_chain_stage1_and_freeze_real_submodules():
    for name, frozen in (("ours", ("backbone_a", "backbone_b", "captioner")),
                         ("resnet50-lamem-imagenet", ("backbone_a", "backbone_b"))):
        spec = registry.get_model(name)
        s1, s2 = spec.recipe
        assert s1.name == "stage1" and s1.model == "resnet50-lamem"
        assert (s2.epochs, s2.batch_size, s2.lr, s2.optimizer, s2.frozen) == (50, 16, 5e-5, "adam", frozen)
        with torch.device("meta"):
            m = spec.builder()(BuildContext(device="meta", pretrained=False))
        names = [n for n, _ in m.named_parameters()]
        for prefix in frozen:
            assert any(n.startswith(prefix + ".") for n in names), prefix
    assert registry.get_model("ours").reported.params == 130_000_000


def test_output_shape_at_256_and_backbone_a_is_stage1(model, stage1, batch):
    model.eval()
    with torch.no_grad():
        y = model(batch)
    assert y.shape == (2,) and torch.isfinite(y).all()
    for k, v in model.backbone_a.state_dict().items():
        assert torch.equal(v, stage1[1]["backbone." + k]), k


def test_l2_normalise_by_hand():
    t = torch.randn(3, 4, 2, 2, dtype=torch.float64)
    a = t.numpy()
    expected = np.stack([a[i] / np.sqrt((a[i] ** 2).sum()) for i in range(3)])
    np.testing.assert_allclose(ours.l2_normalise(t).numpy(), expected, rtol=1e-12)
    assert torch.allclose(ours.l2_normalise(t).flatten(1).norm(dim=1), torch.ones(3, dtype=torch.float64))
    assert torch.equal(ours.l2_normalise(torch.zeros(1, 2, 1, 1)), torch.zeros(1, 2, 1, 1))


def test_features_are_normalised_concatenated_and_attention_weighted(model, batch):
    """Recompute the head's input step by step and compare with the model's."""
    model.eval()
    handle = end_captions_at(model.captioner, [3, 5])
    try:
        with torch.no_grad():
            got = model.features(batch)
            a = model.reduce_a(model.backbone_a(batch)).numpy().astype(np.float64)
            b = model.reduce_b(model.backbone_b(batch)).numpy().astype(np.float64)
            feats = model.captioner.encode(batch)
            _, alphas, lengths = model.captioner.greedy(feats)
    finally:
        handle.remove()
    assert lengths.tolist() == [3, 5]
    att = np.stack([alphas[i, :lengths[i]].numpy().mean(axis=0).reshape(8, 8) for i in range(2)])
    norm = lambda f: f / np.sqrt((f ** 2).sum(axis=(1, 2, 3), keepdims=True))  # noqa: E731
    expected = np.concatenate([norm(a), norm(b)], axis=1) * att[:, None]
    assert got.shape == (2, 2048, 8, 8)
    np.testing.assert_allclose(got.numpy(), expected, rtol=1e-4, atol=1e-9)


def test_frozen_parts_bit_identical_after_stage2_steps(model, batch):
    """What the runner does in stage 2: requires_grad off under the frozen prefixes, Adam
    on the rest, training mode; frozen weights AND BatchNorm statistics must not move."""
    stage2 = registry.get_model("ours").recipe[1]
    frozen = lambda n: any(n == p or n.startswith(p + ".") for p in stage2.frozen)  # noqa: E731
    for n, p in model.named_parameters():
        p.requires_grad = not frozen(n)
    before = {n: t.detach().clone() for n, t in model.state_dict().items()}
    opt = torch.optim.Adam([p for p in model.parameters() if p.requires_grad], lr=stage2.lr)
    model.train()
    assert not model.backbone_a.training and not model.captioner.training and model.head.training
    target = torch.tensor([0.6, 0.8])
    handle = end_captions_at(model.captioner, [2, 4])  # short captions: a faster test
    try:
        for _ in range(2):
            opt.zero_grad()
            loss = torch.nn.functional.mse_loss(model(batch), target)
            loss.backward()
            opt.step()
    finally:
        handle.remove()
    after = model.state_dict()
    changed = {n for n in before if not torch.equal(before[n], after[n])}
    assert changed, "stage 2 trained nothing"
    assert not [n for n in changed if frozen(n)]
    assert "head.7.weight" in changed and "reduce_a.weight" in changed and "head.1.running_mean" in changed
    assert all(p.grad is None for n, p in model.named_parameters() if frozen(n))


def test_missing_captioner_names_the_three_ways_out(tmp_path, monkeypatch, stage1):
    monkeypatch.setenv("MEMBENCH_HOME", str(tmp_path))
    with pytest.raises(MembenchError) as err:
        ours.build_ours(BuildContext(pretrained=False, upstream={"stage1": stage1[0]}))
    msg = str(err.value)
    assert "membench captioner train --coco DIR" in msg
    assert "membench captioner import CHECKPOINT --word-map JSON" in msg
    assert "--model-option captioner=random" in msg
    assert str(tmp_path / "captioner") in msg
    # On the meta device (parameter counting) no captioner is needed.
    ours.build_ours(BuildContext(device="meta", pretrained=False))


def test_stage1_checkpoint_and_options_are_checked(tmp_path):
    # Without stage 1 (predict/bench load a whole checkpoint on top) backbone A stays random.
    torch.manual_seed(0)
    m = ours.build_lamem_imagenet(BuildContext(pretrained=False))
    assert m.captioner is None and m.backbone_a[0].weight.shape == (64, 3, 7, 7)
    with pytest.raises(MembenchError, match="unknown model option.*capitoner"):
        ours.build_ours(BuildContext(pretrained=False, options={"capitoner": "random"}))
    with pytest.raises(MembenchError, match="beam must be a positive integer"):
        ours.build_ours(BuildContext(pretrained=False, options={"captioner": "random", "beam": "0"}))
    bad = tmp_path / "not_stage1.pt"
    torch.save({"head.weight": torch.zeros(1, 2048)}, bad)
    with pytest.raises(MembenchError, match="no backbone"):
        ours.build_lamem_imagenet(BuildContext(pretrained=False, upstream={"stage1": bad}))


def test_installed_captioner_is_used_by_default(tmp_path, monkeypatch, stage1):
    monkeypatch.setenv("MEMBENCH_HOME", str(tmp_path))
    torch.manual_seed(3)
    cap = sat.Captioner(sat.default_word_map(20))
    sat.save_captioner(cap.state_dict(), cap.word_map, tmp_path / "captioner")
    m = ours.build_ours(BuildContext(pretrained=False, upstream={"stage1": stage1[0]}))
    assert m.captioner.decoder.vocab_size == 20
    assert torch.equal(m.captioner.decoder.fc.weight, cap.decoder.fc.weight)


def test_attention_command_writes_overlay_pngs(tmp_path, monkeypatch, capsys):
    from PIL import Image

    monkeypatch.setenv("MEMBENCH_HOME", str(tmp_path / "home"))
    img = tmp_path / "tiny.jpg"
    Image.new("RGB", (40, 30), (10, 200, 30)).save(img)
    out = tmp_path / "att"
    assert main(["attention", "--model", "ours", str(img), "--out", str(out),
                 "--model-option", "captioner=random"]) == 0
    png = out / "tiny_attention.png"
    assert str(png) in capsys.readouterr().out
    with Image.open(png) as im:
        assert im.format == "PNG" and im.width > 100
        pixels = np.asarray(im.convert("RGB"), dtype=np.int16)
    # The overlay tints the flat green image: many colours, not the plain image.
    assert len(np.unique(pixels.reshape(-1, 3), axis=0)) > 20
    assert main(["attention", "--model", "resnet50-lamem", str(img), "--out", str(out)]) == 2
    assert "has no attention map" in capsys.readouterr().err
    assert main(["attention", str(img), "--out", str(out)]) == 2  # no captioner installed
    assert "captioner train" in capsys.readouterr().err


def test_attention_command_never_replaces_a_users_file_or_writes_through_a_link(tmp_path, monkeypatch, capsys):
    from PIL import Image

    monkeypatch.setenv("MEMBENCH_HOME", str(tmp_path / "home"))
    img = tmp_path / "tiny.jpg"
    Image.new("RGB", (40, 30), (10, 200, 30)).save(img)
    out, elsewhere = tmp_path / "att", tmp_path / "elsewhere"
    out.mkdir()
    elsewhere.mkdir()
    args = ["attention", "--model", "ours", str(img), "--out", str(out), "--model-option", "captioner=random"]
    (out / "tiny_attention.png").write_bytes(b"my figure")
    assert main(args) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and str(out / "tiny_attention.png") in err and "did not write" in err
    assert (out / "tiny_attention.png").read_bytes() == b"my figure"
    (out / "tiny_attention.png").unlink()
    assert main(args) == 0 and main(args) == 0  # its own file: replaced
    (out / "tiny_attention.png").unlink()
    (out / "tiny_attention.png").symlink_to(elsewhere / "target.png")
    assert main(args) == 2 and "symbolic link" in capsys.readouterr().err
    assert os.listdir(elsewhere) == []


def test_captioner_info_reports_exact_size_and_installation(tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("MEMBENCH_HOME", str(tmp_path))
    assert main(["captioner", "info"]) == 0
    out = capsys.readouterr().out
    assert f"{CAPTIONER} parameters with a 9490-word vocabulary" in out
    assert "encoder 42500160, decoder 20483859" in out and "installed: none" in out
    with torch.device("meta"):
        cap = sat.Captioner(sat.default_word_map(20))
    sat.save_captioner({}, cap.word_map, tmp_path / "captioner", {"kind": "imported", "epoch": 3})
    assert main(["captioner", "info"]) == 0
    assert "20-word map, kind imported, epoch 3" in capsys.readouterr().out


def test_validation_cache_is_exact_for_ours():
    """membench.engine.cache runs only the trainable part on cached frozen outputs: same numbers."""
    import torch

    from membench import BuildContext, registry
    from membench.engine.cache import supports

    torch.manual_seed(0)
    model = registry.get_model("resnet50-lamem-imagenet").builder()(BuildContext(pretrained=False)).eval()
    assert supports(model)
    x = torch.rand(2, 3, 256, 256)
    with torch.no_grad():
        assert torch.equal(model(x), model.from_frozen(model.frozen_outputs(x)))
