"""Transforms, the device-side normaliser and the reproducible loader."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image
from scipy.stats import ks_2samp, wasserstein_distance

from membench.data.loader import EpochSampler, ImageDataset, make_loader
from membench.data.transforms import (
    CropTransform,
    Normalizer,
    PaperLiteral,
    PaperTransform,
    chw,
    eval_transform,
    resize,
    rrc_params,
    to_hwc,
    train_transform,
)
from membench.spec import IMAGENET_MEAN, IMAGENET_STD, Preprocess, Sample

pytestmark = pytest.mark.usefixtures("one_thread")  # per-image ops: more threads only add contention

PRESETS = {
    "paper": Preprocess(size=(256, 256), train="paper"),
    "crop": Preprocess(size=(256, 256), crop=227, train="crop"),
    "resized-crop": Preprocess(size=(256, 256), crop=224, train="resized-crop"),
    "none": Preprocess(size=(96, 128), mean=None, std=None, train="none"),
}


def smooth_image(w=400, h=300, seed=0):
    """A photo-like image: a smooth random field (so resamplers agree closely)."""
    rng = np.random.RandomState(seed)
    small = Image.fromarray(rng.randint(0, 256, size=(h // 25 + 1, w // 25 + 1, 3)).astype("uint8"))
    return small.resize((w, h), Image.BICUBIC)


def fast_resize(img, size):
    """The training augmentations' torch resize (evaluation uses PIL's, see EvalTransform)."""
    return chw(resize(to_hwc(img), size))


def gradient_image(w=64, h=48):
    """Green rises from left to right everywhere, so any crop shows whether it was mirrored."""
    x = np.zeros((h, w, 3), dtype="uint8")
    x[..., 1] = np.linspace(0, 255, w).round().astype("uint8")[None, :]
    return Image.fromarray(x)


@pytest.mark.parametrize("mode", list(PRESETS))
@pytest.mark.parametrize("size", [(400, 300), (150, 200)])
def test_output_shape_and_dtype(mode, size):
    pre = PRESETS[mode]
    img = smooth_image(*size)
    for t in (train_transform(pre), eval_transform(pre)):
        x = t(img)
        assert x.dtype == torch.uint8 and tuple(x.shape) == (3, *pre.input_size), t
        assert x.permute(1, 2, 0).is_contiguous()  # channels-last memory (see transforms.chw)


@pytest.mark.parametrize("mode", list(PRESETS))
def test_tensor_input_gives_the_same_output(mode):
    img = smooth_image(120, 90)
    t = train_transform(PRESETS[mode])
    chw = torch.from_numpy(np.array(img)).permute(2, 0, 1)
    a = t(img, generator=torch.Generator().manual_seed(5))
    b = t(chw, generator=torch.Generator().manual_seed(5))
    assert torch.equal(a, b)


def test_greyscale_input_is_converted():
    x = eval_transform(PRESETS["paper"])(smooth_image().convert("L"))
    assert x.shape == (3, 256, 256) and torch.equal(x[0], x[1])


def test_eval_resize_is_pil_bilinear():
    img = smooth_image(400, 300)
    x = eval_transform(Preprocess(size=(256, 200), train="none"))(img)
    ref = torch.from_numpy(np.array(img.resize((200, 256), Image.BILINEAR))).permute(2, 0, 1)
    assert torch.equal(x, ref)


def test_eval_centre_crop_matches_torchvision():
    from torchvision import transforms as T

    img = smooth_image(400, 300)
    x = eval_transform(PRESETS["crop"])(img)
    ref = T.Compose([T.Resize((256, 256)), T.CenterCrop(227), T.PILToTensor()])(img)
    assert torch.equal(x, ref)


def test_train_resize_is_within_a_grey_level_of_pil():
    img = smooth_image(400, 300)
    ref = torch.from_numpy(np.array(img.resize((200, 256), Image.BILINEAR))).permute(2, 0, 1)
    assert (fast_resize(img, (256, 200)).int() - ref.int()).abs().max() <= 1


@pytest.mark.parametrize("mode", ["paper", "crop", "resized-crop"])
def test_flip_probability_is_half(mode):
    """Count mirrored outputs over 400 seeds: p = 0.5, accepted within 4 standard deviations."""
    t = train_transform(PRESETS[mode])
    img = gradient_image(320, 240)
    flips = 0
    for seed in range(400):
        x = t(img, generator=torch.Generator().manual_seed(seed))[1].float()
        assert x[:, 0].mean() != x[:, -1].mean()
        flips += bool(x[:, 0].mean() > x[:, -1].mean())
    assert abs(flips - 200) <= 40


def test_paper_apply_matches_params_and_flips():
    t = PaperTransform((64, 64))
    img = smooth_image(200, 150)
    seen = set()
    for seed in range(20):
        params = t.params(200, 150, torch.Generator().manual_seed(seed))
        x = t(img, generator=torch.Generator().manual_seed(seed))
        top, left, bh, bw, flip = params
        crop = fast_resize(img.crop((left, top, left + bw, top + bh)), (64, 64))
        assert torch.equal(x, crop.flip(-1) if flip else crop)
        seen.add(flip)
    assert seen == {True, False}


def _normalised_boxes(n, width, height, seed):
    """(left, top, right, bottom, width, height, flip) of n boxes, normalised by the image
    (folded) or by the scaled image (literal), from both implementations."""
    gen = torch.Generator().manual_seed(seed)
    folded, literal = PaperTransform((256, 256)), PaperLiteral((256, 256))
    f = np.array([[le / width, t / height, (le + bw) / width, (t + bh) / height, bw / width, bh / height, fl]
                  for t, le, bh, bw, fl in (folded.params(width, height, gen) for _ in range(n))])
    lit = np.array([[le / sw, t / sh, (le + bw) / sw, (t + bh) / sh, bw / sw, bh / sh, fl]
                    for sw, sh, fl, t, le, bh, bw in (literal.params(width, height, gen) for _ in range(n))])
    return f, lit


def test_folded_crop_box_distribution_equals_literal():
    """§3.2 literal (scale s~U[0.8,1.2], flip, crop 0.8-1.0 per side at a uniform position)
    vs the folded single resized crop: the crop boxes in normalised image coordinates
    follow the same distribution. On a large image pixel rounding is negligible, so a
    two-sample KS test must not reject; the flip rate is 0.5 in both."""
    f, lit = _normalised_boxes(20000, 4000, 3000, seed=0)
    for k, name in enumerate(["left", "top", "right", "bottom", "width", "height"]):
        assert ks_2samp(f[:, k], lit[:, k]).pvalue > 1e-3, name
    assert abs(f[:, 6].mean() - 0.5) < 0.015 and abs(lit[:, 6].mean() - 0.5) < 0.015
    assert f[:, 4].min() >= 0.8 - 1e-3 and f[:, 4].max() <= 1.0


def test_folded_distribution_test_has_power():
    """At LaMem's 400x300 the two agree within a fraction of a pixel (Wasserstein distance),
    and the same measure flags a crop range off by only 0.02 (0.78-1.0)."""
    f, lit = _normalised_boxes(20000, 400, 300, seed=1)
    for k in range(6):
        assert wasserstein_distance(f[:, k], lit[:, k]) * 400 < 0.6
    gen = torch.Generator().manual_seed(2)
    wrong = PaperTransform((256, 256), crop=(0.78, 1.0))
    w = np.array([bw / 400 for _, _, _, bw, _ in (wrong.params(400, 300, gen) for _ in range(20000))])
    assert wasserstein_distance(w, lit[:, 4]) * 400 > 2.0


def test_folded_pixels_match_literal():
    """With the same box, one resampling (folded) vs scale-then-crop-then-resize (literal)
    differ only by the literal's extra interpolation."""
    img = smooth_image(400, 300)
    folded, literal = PaperTransform((256, 256)), PaperLiteral((256, 256))
    # s = 1: identical boxes, one resampling each -> within one grey level
    x = folded.apply(img, (20, 30, 260, 350, True))
    y = literal.apply(img, (400, 300, True, 20, 400 - 30 - 350, 260, 350))
    assert (x.int() - y.int()).abs().max() <= 1
    # s = 1.1: the literal box is the same region of the scaled image
    y = literal.apply(img, (440, 330, False, 22, 33, 286, 385))
    x = folded.apply(img, (20, 30, 260, 350, False))
    assert (x.float() - y.float()).abs().mean() < 1.0


def test_crop_transform_is_a_literal_random_crop():
    img = smooth_image(300, 300)
    t = CropTransform((256, 256), 227)
    x = t(img, generator=torch.Generator().manual_seed(3))
    full = fast_resize(img, (256, 256))
    windows = [full[:, i:i + 227, j:j + 227] for i in range(30) for j in range(30)]
    assert any(torch.equal(x, w) or torch.equal(x, w.flip(-1)) for w in windows)


def test_rrc_params_match_torchvision_ranges():
    gen = torch.Generator().manual_seed(0)
    boxes = [rrc_params(256, 256, gen) for _ in range(2000)]
    areas = np.array([h * w / 256**2 for _, _, h, w in boxes])
    ratios = np.array([w / h for _, _, h, w in boxes])
    assert areas.min() >= 0.07 and areas.max() <= 1.0 and 0.3 < areas.mean() < 0.7
    assert ratios.min() >= 0.74 and ratios.max() <= 1.34
    assert all(0 <= t and 0 <= le and t + h <= 256 and le + w <= 256 for t, le, h, w in boxes)


# ---------------------------------------------------------------------------- Normalizer

@pytest.mark.parametrize("channels_last", [False, True])
def test_normalizer_matches_torchvision(channels_last):
    from torchvision.transforms import v2

    batch = torch.randint(0, 256, (4, 3, 20, 24), dtype=torch.uint8)
    ref = v2.Normalize(IMAGENET_MEAN, IMAGENET_STD)(v2.ToDtype(torch.float32, scale=True)(batch))
    out = Normalizer(Preprocess(), channels_last=channels_last)(batch)
    assert out.dtype == torch.float32
    torch.testing.assert_close(out, ref, atol=2e-6, rtol=1e-6)
    assert out.is_contiguous(memory_format=torch.channels_last if channels_last else torch.contiguous_format)


def test_normalizer_without_mean_and_bf16():
    batch = torch.randint(0, 256, (2, 3, 8, 8), dtype=torch.uint8)
    out = Normalizer(Preprocess(mean=None, std=None))(batch)
    torch.testing.assert_close(out, batch.float() / 255)
    half = Normalizer(Preprocess(), dtype=torch.bfloat16)(batch)
    assert half.dtype == torch.bfloat16 and half.device == batch.device


# ---------------------------------------------------------------------------- loader

@pytest.fixture(scope="module")
def samples(tmp_path_factory):
    root = tmp_path_factory.mktemp("jpegs")
    out = []
    for i in range(10):
        path = root / f"{i:03d}.jpg"
        smooth_image(80 + 4 * i, 60, seed=i).save(path, quality=90)
        out.append(Sample(name=path.name, path=path, score=0.5 + i / 100))
    return tuple(out)


SMALL = Preprocess(size=(32, 32), train="paper")


def _epochs(loader, n):
    return [[(x.clone(), y.clone(), i.clone()) for x, y, i in loader] for _ in range(n)]


def _equal(a, b):
    return len(a) == len(b) and all(torch.equal(x, u) and torch.equal(y, v) and torch.equal(i, w)
                                    for (x, y, i), (u, v, w) in zip(a, b))


def test_loader_batches(samples):
    loader = make_loader(samples, train_transform(SMALL), batch_size=4, shuffle=True, workers=0, seed=0)
    batches = list(loader)
    assert [b[0].shape[0] for b in batches] == [4, 4, 2]
    x, y, idx = batches[0]
    assert x.dtype == torch.uint8 and x.shape[1:] == (3, 32, 32)
    assert x.is_contiguous(memory_format=torch.channels_last)
    assert Normalizer(SMALL)(x).is_contiguous()  # planar floats for the CPU path
    assert y.dtype == torch.float32 and idx.dtype == torch.int64
    assert sorted(torch.cat([b[2] for b in batches]).tolist()) == list(range(10))
    torch.testing.assert_close(y, torch.tensor([samples[i].score for i in idx], dtype=torch.float32))


def test_loader_is_deterministic_and_resumable(samples):
    t = train_transform(SMALL)
    a = _epochs(make_loader(samples, t, batch_size=4, shuffle=True, workers=0, seed=7), 3)
    b = _epochs(make_loader(samples, t, batch_size=4, shuffle=True, workers=0, seed=7), 3)
    assert all(_equal(x, y) for x, y in zip(a, b))
    assert not _equal(a[0], a[1])  # a new order and new augmentations every epoch
    resumed = make_loader(samples, t, batch_size=4, shuffle=True, workers=0, seed=7, epoch=2)
    assert _equal(_epochs(resumed, 1)[0], a[2])
    resumed.set_epoch(1)
    assert resumed.epoch == 1 and _equal(_epochs(resumed, 1)[0], a[1])
    other = _epochs(make_loader(samples, t, batch_size=4, shuffle=True, workers=0, seed=8), 1)
    assert not _equal(other[0], a[0])


def test_loader_same_batches_with_workers(samples):
    t = train_transform(SMALL)
    a = _epochs(make_loader(samples, t, batch_size=3, shuffle=True, workers=0, seed=3), 2)
    loader = make_loader(samples, t, batch_size=3, shuffle=True, workers=2, seed=3)
    assert loader.persistent_workers and loader.prefetch_factor == 4
    assert _equal(_epochs(loader, 2)[1], a[1]) and _equal(_epochs(make_loader(
        samples, t, batch_size=3, shuffle=True, workers=2, seed=3), 1)[0], a[0])


def test_plain_transform_is_seeded_too(samples):
    from torchvision.transforms import v2

    plain = v2.Compose([v2.PILToTensor(), v2.RandomResizedCrop(16, antialias=True)])
    ds = ImageDataset(samples, plain, seed=1)
    state = torch.get_rng_state()
    assert torch.equal(ds[(0, 3)][0], ds[(0, 3)][0]) and not torch.equal(ds[(0, 3)][0], ds[(1, 3)][0])
    assert torch.equal(torch.get_rng_state(), state)  # the caller's RNG is left alone
    x, y, i = ds[5]
    assert x.shape == (3, 16, 16) and y.dtype == torch.float32 and i == 5


@pytest.mark.parametrize("n,world,drop", [(10, 3, False), (10, 3, True), (9, 3, False)])
def test_sampler_shards_for_ddp(n, world, drop):
    shards = [EpochSampler(n, shuffle=True, seed=0, rank=r, world_size=world, drop_last=drop) for r in range(world)]
    keys = [list(s) for s in shards]
    assert len({len(k) for k in keys}) == 1 and all(len(k) == len(s) for k, s in zip(keys, shards))
    seen = [i for k in keys for _, i in k]
    assert set(seen) <= set(range(n)) and (drop or set(seen) == set(range(n)))
    assert len(set(seen)) == len(seen) or not drop


def test_train_size_is_the_resize_before_the_random_crop():
    """AMNet: Resize(264,264) -> RandomResizedCrop(224); evaluation Resize(224,224)."""
    from membench.data.transforms import ResizedCropTransform, eval_transform, train_transform
    from membench.spec import Preprocess

    pre = Preprocess(size=(224, 224), train_size=(264, 264), crop=224, train="resized-crop")
    t = train_transform(pre)
    assert isinstance(t, ResizedCropTransform) and t.size == (264, 264) and t.crop == 224
    assert eval_transform(pre).size == (224, 224)
