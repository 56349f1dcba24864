"""The Show-Attend-and-Tell captioner: sizes, decoding, BLEU, import and COCO training."""

from __future__ import annotations

import json
import math
import sys
import types
import warnings

import pytest
import torch

from membench.cli import main
from membench.errors import MembenchError
from membench_plugins.captioner import sat, sat_coco, sat_import

SMALL_VOCAB = 12  # 8 words + <unk> <start> <end> <pad>


@pytest.fixture(scope="module")
def captioner():
    torch.manual_seed(0)
    return sat.Captioner(sat.default_word_map(SMALL_VOCAB)).eval()


def force_end(captioner, end_at: dict[int, int]):
    """Make sample i emit <end> exactly at step end_at[i] (1-based) through the output
    layer; other steps can never pick <end>."""
    calls = {"n": 0}

    def hook(module, args, out):
        calls["n"] += 1
        out = out.clone()
        out[:, captioner.end_id] = -1e9
        for i, k in end_at.items():
            if calls["n"] == k:
                out[i, captioner.end_id] = 1e9
        return out

    return captioner.decoder.fc.register_forward_hook(hook)


def test_parameter_count_exact_on_meta():
    with torch.device("meta"):
        m = sat.Captioner()
    assert sum(p.numel() for p in m.encoder.parameters()) == 42_500_160
    assert sum(p.numel() for p in m.decoder.parameters()) == 20_483_859
    assert sum(p.numel() for p in m.parameters()) == 62_984_019
    assert m.decoder.vocab_size == 9_490


def test_meta_decoding_runs_fixed_steps():
    with torch.device("meta"):
        m = sat.Captioner()
    att = m.attention_map(torch.empty(3, 3, 256, 256, device="meta"))
    assert att.shape == (3, 8, 8) and att.is_meta


@pytest.mark.parametrize("k", [1, 4, 17])
def test_greedy_stops_at_end(captioner, k):
    feats = torch.randn(1, 64, 2048)
    handle = force_end(captioner, {0: k})
    try:
        with torch.no_grad():
            tokens, alphas, lengths = captioner.greedy(feats)
    finally:
        handle.remove()
    assert tokens.shape == (1, k) and alphas.shape == (1, k, 64)
    assert lengths.tolist() == [k]
    assert tokens[0, -1] == captioner.end_id and (tokens[0, :-1] != captioner.end_id).all()
    torch.testing.assert_close(alphas.sum(-1), torch.ones(1, k))


def test_greedy_stops_after_50_steps_without_end(captioner):
    handle = force_end(captioner, {})
    try:
        with torch.no_grad():
            tokens, alphas, lengths = captioner.greedy(torch.randn(2, 64, 2048))
    finally:
        handle.remove()
    assert tokens.shape == (2, 50) and alphas.shape == (2, 50, 64) and lengths.tolist() == [50, 50]


def test_attention_map_averages_each_captions_own_steps(captioner):
    """Sample 0 ends at step 3, sample 1 at step 6: each map is the mean of its own
    word maps only (the placeholder for <start> is not one of them)."""
    x = torch.randn(2, 3, 64, 64)
    with torch.no_grad():
        feats = captioner.encode(x)
        handle = force_end(captioner, {0: 3, 1: 6})
        try:
            _, alphas, lengths = captioner.greedy(feats)
        finally:
            handle.remove()
        handle = force_end(captioner, {0: 3, 1: 6})
        try:
            avg = captioner.attention_map(x)
        finally:
            handle.remove()
    assert lengths.tolist() == [3, 6] and alphas.shape[1] == 6
    by_hand = torch.stack([sum(alphas[0, t] for t in range(3)) / 3,
                           sum(alphas[1, t] for t in range(6)) / 6]).reshape(2, 8, 8)
    torch.testing.assert_close(avg, by_hand)
    torch.testing.assert_close(avg.sum((1, 2)), torch.ones(2))


def test_decode_lists_and_beam_stop_at_end(captioner):
    feats = torch.randn(1, 64, 2048)
    handle = force_end(captioner, {0: 5, 1: 5, 2: 5})
    try:
        with torch.no_grad():
            tokens, alphas = captioner.beam(feats, beam_size=3)
    finally:
        handle.remove()
    assert tokens.shape == (5,) and alphas.shape == (5, 64) and tokens[-1] == captioner.end_id
    handle = force_end(captioner, {})
    try:
        with torch.no_grad():
            tokens, alphas = captioner.beam(feats, beam_size=3)
    finally:
        handle.remove()
    assert tokens.shape == (50,) and alphas.shape == (50, 64)


def test_teacher_forcing_shapes_and_mask(captioner):
    caps = torch.tensor([[9, 1, 2, 10, 0], [9, 3, 4, 5, 10]])
    lengths = torch.tensor([4, 5])
    logits, alphas, mask = captioner.decoder(torch.randn(2, 64, 2048), caps, lengths)
    assert logits.shape == (2, 4, SMALL_VOCAB) and alphas.shape == (2, 4, 64)
    assert mask.tolist() == [[True, True, True, False], [True, True, True, True]]
    assert (alphas[0, 3] == 0).all()


# ---- BLEU ---------------------------------------------------------------------------------

def test_bleu_hand_computed():
    # hyp a b c d e f vs ref a b c d x f g: p1 5/6, p2 3/5, p3 2/4, p4 1/3; c=6 < r=7.
    hyp, ref = "a b c d e f".split(), "a b c d x f g".split()
    expected = math.exp(1 - 7 / 6) * (5 / 6 * 3 / 5 * 2 / 4 * 1 / 3) ** 0.25
    assert sat_coco.corpus_bleu([[ref]], [hyp]) == pytest.approx(expected, rel=1e-12)


def test_bleu_clipping_closest_reference_and_corpus_sums():
    # Counts are clipped by the max count in any one reference; "the" x4 -> 2 matches.
    hyp = "the the the the cat sat on mat".split()
    refs = ["the cat sat on the mat".split(), "a cat sat on a mat today".split()]
    # 1-grams: the->2 (clipped), cat sat on mat -> 6/8; 2-grams: the the x3 -> 0, the cat 1,
    # cat sat 1, sat on 1, on mat 0 -> 3/7; 3-grams: the the the x2, the the cat, the cat sat 1,
    # cat sat on 1, sat on mat 0 -> 2/6; 4-grams: the cat sat on 1 -> 1/5. Closest ref length to
    # 8 is 7 (|6-8|=2, |7-8|=1) so no brevity penalty.
    expected = (6 / 8 * 3 / 7 * 2 / 6 * 1 / 5) ** 0.25
    assert sat_coco.corpus_bleu([refs], [hyp]) == pytest.approx(expected, rel=1e-12)
    # Corpus level: clipped counts and totals are summed before dividing (a perfect 4-word
    # hypothesis adds 4/4, 3/3, 2/2, 1/1); lengths c = 8+4 = 12 > r = 7+4 = 11.
    hyp2, ref2 = "a b c d".split(), "a b c d".split()
    expected2 = (10 / 12 * 6 / 10 * 4 / 8 * 2 / 6) ** 0.25
    assert sat_coco.corpus_bleu([refs, [ref2]], [hyp, hyp2]) == pytest.approx(expected2, rel=1e-12)
    assert sat_coco.corpus_bleu([[ref2]], [hyp2]) == pytest.approx(1.0)
    assert sat_coco.corpus_bleu([[ref2]], [["z"]]) == 0.0


def test_word_map_reference_rule():
    caps = [[["a", "dog", "runs"], ["a", "dog"]], [["a", "cat"], ["dog"]]]
    wm = sat_coco.build_word_map(caps, min_word_freq=1)  # kept: seen MORE than once
    assert wm == {"a": 1, "dog": 2, "<unk>": 3, "<start>": 4, "<end>": 5, "<pad>": 0}
    enc = sat_coco.encode_captions([["a", "cat"]], wm)
    assert enc == [[4, 1, 3, 5]] * 5


# ---- import of the shared checkpoint --------------------------------------------------------

def _reference_classes():
    """Classes named and laid out like the reference implementation's models.py."""
    import torch.nn as nn
    import torchvision

    class Encoder(nn.Module):
        def __init__(self, encoded_image_size=14):
            super().__init__()
            self.enc_image_size = encoded_image_size
            resnet = torchvision.models.resnet101(weights=None)
            self.resnet = nn.Sequential(*list(resnet.children())[:-2])
            self.adaptive_pool = nn.AdaptiveAvgPool2d((encoded_image_size, encoded_image_size))

    class Attention(nn.Module):
        def __init__(self, encoder_dim, decoder_dim, attention_dim):
            super().__init__()
            self.encoder_att = nn.Linear(encoder_dim, attention_dim)
            self.decoder_att = nn.Linear(decoder_dim, attention_dim)
            self.full_att = nn.Linear(attention_dim, 1)
            self.relu = nn.ReLU()
            self.softmax = nn.Softmax(dim=1)

    class DecoderWithAttention(nn.Module):
        def __init__(self, attention_dim, embed_dim, decoder_dim, vocab_size, encoder_dim=2048, dropout=0.5):
            super().__init__()
            self.vocab_size = vocab_size
            self.attention = Attention(encoder_dim, decoder_dim, attention_dim)
            self.embedding = nn.Embedding(vocab_size, embed_dim)
            self.dropout = nn.Dropout(p=dropout)
            self.decode_step = nn.LSTMCell(embed_dim + encoder_dim, decoder_dim, bias=True)
            self.init_h = nn.Linear(encoder_dim, decoder_dim)
            self.init_c = nn.Linear(encoder_dim, decoder_dim)
            self.f_beta = nn.Linear(decoder_dim, encoder_dim)
            self.sigmoid = nn.Sigmoid()
            self.fc = nn.Linear(decoder_dim, vocab_size)

    for cls in (Encoder, Attention, DecoderWithAttention):
        cls.__module__ = "models"
        cls.__qualname__ = cls.__name__
    return Encoder, Attention, DecoderWithAttention


class ThnnBackend:
    """Pickles as PyTorch 0.4's module `_backend` did: a call of _get_thnn_function_backend."""

    def __reduce__(self):
        from torch.nn.backends import thnn

        return thnn._get_thnn_function_backend, ()


def make_shared_checkpoint(tmp_path, legacy: bool):
    """A checkpoint in the shared format, saved while a module `models` existed; the fake
    module is removed again so the import cannot rely on it. `legacy` imitates the shared
    file itself: the pre-1.6 serialisation (module classes as persistent records), no
    BatchNorm num_batches_tracked buffers, and PyTorch 0.4's `_backend` on every module."""
    Encoder, Attention, DecoderWithAttention = _reference_classes()
    fake = types.ModuleType("models")
    fake.Encoder, fake.Attention, fake.DecoderWithAttention = Encoder, Attention, DecoderWithAttention
    wm = sat.default_word_map(SMALL_VOCAB)
    torch.manual_seed(1)
    enc, dec = Encoder(), DecoderWithAttention(512, 512, 512, len(wm))
    if legacy:
        for m in enc.modules():
            m._buffers.pop("num_batches_tracked", None)
        for m in (*enc.modules(), *dec.modules()):
            m._backend = ThnnBackend()
    path = tmp_path / "BEST_checkpoint_coco_5_cap_per_img_5_min_word_freq.pth.tar"
    saved_models = sys.modules.get("models")
    sys.modules["models"] = fake
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # no source to record for these test-local classes
            torch.save({"epoch": 7, "epochs_since_improvement": 2, "bleu-4": 0.2434, "encoder": enc,
                        "decoder": dec, "encoder_optimizer": None,
                        "decoder_optimizer": torch.optim.Adam(dec.parameters(), lr=4e-4)}, path,
                       _use_new_zipfile_serialization=not legacy)
    finally:
        if saved_models is None:
            del sys.modules["models"]
        else:
            sys.modules["models"] = saved_models
    wm_path = tmp_path / "WORDMAP_coco_5_cap_per_img_5_min_word_freq.json"
    wm_path.write_text(json.dumps(wm))
    expected = {**{f"encoder.{k}": v for k, v in enc.state_dict().items()},
                **{f"decoder.{k}": v for k, v in dec.state_dict().items()}}
    return path, wm_path, expected


@pytest.mark.parametrize("legacy", [False, True], ids=["zip", "legacy-0.4"])
def test_import_shared_checkpoint(legacy, tmp_path, monkeypatch, capsys):
    path, wm_path, expected = make_shared_checkpoint(tmp_path, legacy)
    monkeypatch.setenv("MEMBENCH_HOME", str(tmp_path / "home"))
    assert "models" not in sys.modules or not hasattr(sys.modules["models"], "DecoderWithAttention")
    assert main(["captioner", "import", str(path), "--word-map", str(wm_path)]) == 0
    home = tmp_path / "home" / "captioner"
    printed = capsys.readouterr().out
    assert "captioner installed" in printed and "`ours` now uses it by default" in printed
    state = torch.load(home / "captioner.pt", weights_only=True)  # a plain state_dict now
    assert set(state) - set(expected) <= {k for k in state if k.endswith("num_batches_tracked")}
    for k, v in expected.items():
        assert torch.equal(state[k], v), k
    info = json.loads((home / "info.json").read_text())
    assert info["epoch"] == 7 and info["bleu-4"] == 0.2434 and info["kind"] == "imported"
    loaded = sat.load_captioner(home / "captioner.pt")
    assert loaded.end_id == SMALL_VOCAB - 1 and torch.equal(loaded.decoder.fc.weight, expected["decoder.fc.weight"])


def test_import_rejects_a_word_map_of_another_size(tmp_path, capsys):
    path, _, _ = make_shared_checkpoint(tmp_path, legacy=False)
    other = tmp_path / "other.json"
    other.write_text(json.dumps(sat.default_word_map(SMALL_VOCAB + 3)))
    assert main(["captioner", "import", str(path), "--word-map", str(other), "--out", str(tmp_path / "o")]) == 2
    err = capsys.readouterr().err
    assert "does not fit" in err and f"{SMALL_VOCAB + 3}-word map" in err
    with pytest.raises(MembenchError, match="not a Show-Attend-and-Tell checkpoint"):
        bad = tmp_path / "bad.pt"
        torch.save({"model": {}}, bad)
        sat_import.read_shared_checkpoint(bad)


# ---- COCO training --------------------------------------------------------------------------

def _tiny_coco(root):
    from PIL import Image

    words = ["a dog runs on grass", "a dog plays", "a cat sits on a mat", "a cat sleeps",
             "a red car on a road", "a car drives"]
    for split, n, offset in (("train", 4, 0), ("val", 2, 100)):
        (root / f"{split}2014").mkdir(parents=True)
        images, anns = [], []
        for i in range(n):
            name = f"COCO_{split}2014_{i:012d}.jpg"
            Image.new("RGB", (48, 40), (40 * i, 90, 200 - 30 * i)).save(root / f"{split}2014" / name)
            images.append({"id": offset + i, "file_name": name})
            for j in range(3):
                anns.append({"image_id": offset + i, "id": len(anns), "caption": words[(i + j) % len(words)].title()})
        (root / "annotations").mkdir(exist_ok=True)
        (root / "annotations" / f"captions_{split}2014.json").write_text(json.dumps({"images": images,
                                                                                     "annotations": anns}))


def _train_args(tmp_path):
    return ["captioner", "train", "--coco", str(tmp_path / "coco"), "--min-word-freq", "1",
            "--batch-size", "2", "--image-size", "64", "--pretrained", "none", "--device", "cpu",
            "--workers", "0"]


def test_train_one_epoch_installs_a_captioner(tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("MEMBENCH_HOME", str(tmp_path / "home"))
    _tiny_coco(tmp_path / "coco")
    assert main(_train_args(tmp_path) + ["--epochs", "1", "--limit", "2"]) == 0
    home = tmp_path / "home" / "captioner"
    assert "epoch 1: validation BLEU-4" in capsys.readouterr().out
    wm = json.loads((home / "word_map.json").read_text())
    info = json.loads((home / "info.json").read_text())
    assert info["kind"] == "trained" and info["epoch"] == 1 and 0.0 <= info["bleu-4"] <= 1.0
    assert sat.load_captioner(home / "captioner.pt").decoder.vocab_size == len(wm)


@pytest.mark.slow
def test_train_on_tiny_coco_then_resume(tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("MEMBENCH_HOME", str(tmp_path / "home"))
    _tiny_coco(tmp_path / "coco")
    base = _train_args(tmp_path)
    assert main(base + ["--epochs", "1"]) == 0
    home = tmp_path / "home" / "captioner"
    out = capsys.readouterr().out
    assert "epoch 1: validation BLEU-4" in out
    wm = json.loads((home / "word_map.json").read_text())
    assert wm["<pad>"] == 0 and "dog" in wm and "grass" not in wm  # grass occurs once
    state = torch.load(home / "training" / "state.pt", weights_only=False)
    assert state["epoch"] == 1 and state["step"] == 0
    assert main(base + ["--epochs", "1"]) == 2  # a second fresh start would overwrite it
    assert "--resume" in capsys.readouterr().err
    assert main(base + ["--epochs", "2", "--resume"]) == 0
    out = capsys.readouterr().out
    assert "epoch 2: validation BLEU-4" in out and "epoch 1:" not in out
    assert torch.load(home / "training" / "state.pt", weights_only=False)["epoch"] == 2
    assert sat.load_captioner(home / "captioner.pt").decoder.vocab_size == len(wm)


def test_karpathy_split_reader(tmp_path):
    data = {"images": [
        {"filepath": "val2014", "filename": "x.jpg", "split": "restval", "sentences": [{"tokens": ["a", "b"]}]},
        {"filepath": "val2014", "filename": "y.jpg", "split": "val", "sentences": [{"raw": "A Dog."}]},
        {"filepath": "val2014", "filename": "z.jpg", "split": "test", "sentences": [{"tokens": ["c"]}]}]}
    f = tmp_path / "dataset_coco.json"
    f.write_text(json.dumps(data))
    out = sat_coco.read_karpathy(tmp_path, f)
    assert out["train"] == [(tmp_path / "val2014" / "x.jpg", [["a", "b"]])]
    assert out["val"] == [(tmp_path / "val2014" / "y.jpg", [["a", "dog"]])]
    assert len(out["test"]) == 1


def test_missing_coco_layout_is_a_clean_error(tmp_path, capsys):
    (tmp_path / "coco").mkdir()
    assert main(["captioner", "train", "--coco", str(tmp_path / "coco"), "--out", str(tmp_path / "o")]) == 2
    assert "captions_train2014.json" in capsys.readouterr().err


# ---- geometry of an imported captioner (issue 12) ------------------------------------------

def brute_force_area_pool(m, size):
    """Split every input cell into `size` x `size` sub-cells carrying equal shares of its
    mass (an n*size grid), then sum each output cell's n x n block of sub-cells."""
    n = m.shape[-1]
    fine = m.repeat_interleave(size, -1).repeat_interleave(size, -2) / size**2
    return fine.reshape(*m.shape[:-2], size, n, size, n).sum((-3, -1))


@pytest.mark.parametrize("n_in", [14, 8, 16, 9])
def test_area_pool_equals_brute_force_and_keeps_the_mass(n_in):
    maps = torch.rand(3, n_in * n_in, dtype=torch.float64).softmax(-1).reshape(3, n_in, n_in)
    pooled = sat.area_pool(maps, 8)
    assert pooled.shape == (3, 8, 8)
    torch.testing.assert_close(pooled, brute_force_area_pool(maps, 8), rtol=0, atol=1e-12)
    torch.testing.assert_close(pooled.sum((1, 2)), torch.ones(3, dtype=torch.float64))
    if n_in == 8:
        torch.testing.assert_close(pooled, maps)


def test_area_pool_of_a_14x14_map_by_hand():
    """Output cell (0, 0) covers [0, 1.75)^2: input cell (0,0) whole, (0,1)/(1,0) three
    quarters, (1,1) three quarters squared."""
    m = torch.arange(196, dtype=torch.float64).reshape(1, 14, 14)
    expected = m[0, 0, 0] + 0.75 * (m[0, 0, 1] + m[0, 1, 0]) + 0.75**2 * m[0, 1, 1]
    assert sat.area_pool(m, 8)[0, 0, 0].item() == pytest.approx(expected.item(), abs=1e-9)


def _import(tmp_path, *extra):
    path, wm_path, expected = make_shared_checkpoint(tmp_path, legacy=False)
    out = tmp_path / "installed"
    assert main(["captioner", "import", str(path), "--word-map", str(wm_path), "--out", str(out), *extra]) == 0
    return out, expected


@pytest.fixture(scope="module")
def imported(tmp_path_factory):
    """The reference-layout checkpoint (Encoder pooled to 14x14) imported, and its message."""
    import contextlib
    import io

    buf = io.StringIO()
    with contextlib.redirect_stdout(buf):
        out, _ = _import(tmp_path_factory.mktemp("imported"))
    return out, buf.getvalue()


@pytest.fixture(scope="module")
def imported_captioner(imported):
    return sat.load_captioner(imported[0] / "captioner.pt").eval()


def test_import_keeps_the_checkpoints_14x14_grid(imported):
    out, message = imported
    assert "encoder grid 14x14 (checkpoint)" in message
    info = json.loads((out / "info.json").read_text())
    assert info["encoded_size"] == 14 and info["grid_source"] == "checkpoint"
    captioner = sat.load_captioner(out / "captioner.pt").eval()
    assert captioner.grid == 14
    with torch.no_grad():
        assert captioner.encode(torch.randn(1, 3, 256, 256)).shape == (1, 196, 2048)


def test_import_grid_from_option_or_reference_default(tmp_path, capsys):
    out, _ = _import(tmp_path, "--grid", "7")
    assert json.loads((out / "info.json").read_text())["encoded_size"] == 7
    assert sat.load_captioner(out / "captioner.pt").grid == 7
    # a checkpoint whose encoder is a plain state_dict does not say its grid: the reference's 14
    path, wm_path, _ = make_shared_checkpoint(tmp_path, legacy=False)
    from membench.weights.safe_load import load

    ckpt = load(path, allow=sat_import.allowed_classes())
    ckpt["encoder"], ckpt["decoder"] = ckpt["encoder"].state_dict(), ckpt["decoder"].state_dict()
    plain = tmp_path / "plain.pth"
    torch.save(ckpt, plain)
    assert main(["captioner", "import", str(plain), "--word-map", str(wm_path), "--out", str(tmp_path / "p")]) == 0
    printed = " ".join(capsys.readouterr().out.split())
    assert "encoder grid 14x14 (reference default" in printed
    # --out elsewhere: `ours` does not pick it up by itself; the message says how it would
    assert "now uses it" not in printed and f"--model-option captioner={tmp_path / 'p'}" in printed
    assert sat.load_captioner(tmp_path / "p" / "captioner.pt").grid == 14


@pytest.mark.parametrize("beam_size", [1, 3])
def test_imported_captioner_pools_its_averaged_map_to_8x8(imported_captioner, beam_size):
    captioner = imported_captioner
    x = torch.randn(2, 3, 64, 64)  # any input size: the encoder pools to its 14x14 grid
    maps = []
    for grid in (None, 8):
        handle = force_end(captioner, {i: 4 for i in range(beam_size)} if beam_size > 1 else {0: 4, 1: 4})
        try:
            with torch.no_grad():
                maps.append(captioner.attention_map(x, beam_size=beam_size, grid=grid))
        finally:
            handle.remove()
    native, pooled = maps
    assert native.shape == (2, 14, 14) and pooled.shape == (2, 8, 8)
    torch.testing.assert_close(pooled, sat.area_pool(native, 8))
    torch.testing.assert_close(pooled.sum((1, 2)), torch.ones(2))


@pytest.mark.parametrize("beam_size", [1, 5])
def test_imported_captioner_decodes_at_most_50_words(imported_captioner, beam_size):
    captioner = imported_captioner
    handle = force_end(captioner, {})  # <end> can never win: the length limit stops decoding
    try:
        with torch.no_grad():
            [(tokens, alphas)] = captioner.decode(torch.randn(1, 3, 64, 64), beam_size=beam_size)
    finally:
        handle.remove()
    assert tokens.shape == (50,) and alphas.shape == (50, 196)
    assert sat.MAX_STEPS == 50


def test_beam_of_width_one_is_greedy(captioner):
    feats = torch.randn(1, 64, 2048)
    with torch.no_grad():
        handle = force_end(captioner, {0: 9})
        try:
            g_tokens, g_alphas, _ = captioner.greedy(feats)
        finally:
            handle.remove()
        handle = force_end(captioner, {0: 9})
        try:
            b_tokens, b_alphas = captioner.beam(feats, beam_size=1)
        finally:
            handle.remove()
    assert len(b_tokens) == 9
    assert torch.equal(g_tokens[0], b_tokens)
    torch.testing.assert_close(g_alphas[0], b_alphas)


def test_ours_decodes_with_beam_search_by_default():
    from membench import registry
    from membench.spec import BuildContext
    from membench_plugins.models import ours

    assert ours._check_options(BuildContext(options={})) == sat.BEAM_SIZE == 5
    assert ours._check_options(BuildContext(options={"decode": "greedy"})) == 1
    assert ours._check_options(BuildContext(options={"beam": "3"})) == 3
    with pytest.raises(MembenchError, match="means nothing with decode=greedy"):
        ours._check_options(BuildContext(options={"decode": "greedy", "beam": "3"}))
    declared = {o.name: o for o in registry.get_model("ours").options}
    assert declared["decode"].default_text == "beam" and declared["beam"].default_text == "5"
    # both are recorded: a non-default decoding is part of the run's configuration label
    from membench.results.configuration import from_settings

    label = from_settings({"model_options": {"decode": "greedy"}}, registry.get_model("ours").options).label
    assert "decode=greedy" in label


@pytest.mark.slow  # ~80 s here: three ResNets at 256x256; the captioner-level tests above run by default
def test_ours_weights_its_8x8_features_with_the_pooled_map_of_a_14x14_captioner(imported):
    from membench.spec import BuildContext
    from membench_plugins.models import ours

    model = ours.build_ours(BuildContext(pretrained=False, options={"captioner": str(imported[0]),
                                                                     "decode": "greedy"})).eval()
    assert model.captioner.grid == 14 and model.beam_size == 1
    x = torch.randn(1, 3, 256, 256)
    with torch.no_grad():
        fa, fb, att = model.frozen_outputs(x)
        native = model.captioner.attention_map(x, beam_size=1)
    assert fa.shape[-2:] == (8, 8) and att.shape == (1, 8, 8) and native.shape == (1, 14, 14)
    torch.testing.assert_close(att, sat.area_pool(native, 8))
    assert model(x).shape == (1,)
