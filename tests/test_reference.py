"""Evaluation preprocessing equals each model's reference code path (issue 12, docs/models.md).

Every model's evaluation pixels are compared with its reference transform, image by image:
the `resmem` package's `transformer`, the `vitmem` package's `transform`, timm's
`create_transform` of the pretrained configuration, and for the paper's models the
torchvision transform written from the paper (§3: RGB 256x256, ImageNet mean/std). Then
predictions: `membench predict --model resmem` against the package's model, and ViTMem's
reference model, within 1e-5.

Images: generated photograph-like JPEGs of odd sizes and modes (default run) and, when
MEMBENCH_LNSIM points at the LNSIM release, real photographs (`-m realdata` is not needed:
those tests run whenever the path is set and skip cleanly otherwise).
"""

from __future__ import annotations

import csv
import io
import os
import warnings
from contextlib import redirect_stdout
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from membench import registry
from membench.data.images import open_rgb
from membench.data.transforms import Normalizer, eval_transform
from membench.spec import IMAGENET_MEAN, IMAGENET_STD, BuildContext

pytestmark = pytest.mark.usefixtures("one_thread")

# (width, height, PIL mode, save options): odd sizes, extreme aspect ratios, greyscale,
# CMYK and progressive JPEGs, as cameras and the web produce them
GENERATED = [
    (333, 517, "RGB", {}),
    (1024, 97, "RGB", {"subsampling": 0}),
    (97, 700, "RGB", {}),
    (640, 427, "RGB", {"progressive": True}),
    (451, 300, "L", {}),
    (275, 411, "CMYK", {}),
    (256, 256, "RGB", {}),
    (227, 227, "RGB", {}),
]


def photo_like(width, height, seed):
    """Smooth shading, hard-edged objects and sensor noise: every resampler's weak spot."""
    rng = np.random.RandomState(seed)
    coarse = rng.randint(0, 256, size=(max(2, height // 40), max(2, width // 40), 3)).astype("uint8")
    x = np.asarray(Image.fromarray(coarse).resize((width, height), Image.BICUBIC)).astype(np.float32)
    for _ in range(6):  # hard-edged rectangles
        x0, x1 = sorted(rng.randint(0, width, 2))
        y0, y1 = sorted(rng.randint(0, height, 2))
        x[y0:y1 + 1, x0:x1 + 1] = rng.randint(0, 256, 3)
    x += rng.normal(0, 6, size=x.shape)
    return Image.fromarray(np.clip(x, 0, 255).astype("uint8"))


@pytest.fixture(scope="module")
def generated_jpegs(tmp_path_factory):
    root = tmp_path_factory.mktemp("photos")
    paths = []
    for i, (w, h, mode, options) in enumerate(GENERATED):
        path = root / f"photo_{i}_{w}x{h}_{mode}.jpg"
        photo_like(w, h, seed=i).convert(mode).save(path, quality=90, **options)
        paths.append(path)
    return paths


def lnsim_images(n):
    """Up to n LNSIM photographs, one per distinct (width, height), or a clean skip."""
    root = os.environ.get("MEMBENCH_LNSIM")
    if not root:
        pytest.skip("set MEMBENCH_LNSIM to the LNSIM release (Image_data/*.jpg) for real photographs")
    files = sorted((Path(root) / "Image_data").glob("*.jpg"))
    if not files:
        pytest.skip(f"no Image_data/*.jpg under MEMBENCH_LNSIM={root}")
    seen, picked = set(), []
    for f in files:
        with Image.open(f) as im:
            key = im.size
        if key not in seen:
            seen.add(key)
            picked.append(f)
        if len(picked) == n:
            break
    return picked


def test_generated_jpegs_are_what_they_claim(generated_jpegs):
    modes, progressive = set(), 0
    for path, (w, h, mode, options) in zip(generated_jpegs, GENERATED):
        with Image.open(path) as im:
            assert im.format == "JPEG" and im.size == (w, h)
            modes.add(im.mode)
            progressive += bool(im.info.get("progressive") or im.info.get("progression"))
    assert modes == {"RGB", "L", "CMYK"} and progressive == 1


# ----------------------------------------------------------------------- reference transforms

def paper_reference():
    """The paper's models (§3.1-3.2): RGB 256x256, ImageNet mean/std; no crop at test time."""
    from torchvision import transforms as T

    return T.Compose([T.Resize((256, 256)), T.ToTensor(), T.Normalize(IMAGENET_MEAN, IMAGENET_STD)])


def amnet_reference():
    """AMNet's official test transform (ok1zjf/AMNet): Resize((224, 224)), ImageNet mean/std."""
    from torchvision import transforms as T

    return T.Compose([T.Resize((224, 224)), T.ToTensor(), T.Normalize(IMAGENET_MEAN, IMAGENET_STD)])


def resmem_reference():
    pytest.importorskip("resmem", reason="pip install 'membench[resmem]'")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        from resmem import transformer
    return transformer


def vitmem_reference():
    vitmem = pytest.importorskip("vitmem", reason="pip install --no-deps 'vitmem' (membench[vitmem])")
    return vitmem.transform


def timm_reference(arch):
    def make():
        import timm.data
        import timm.models

        config = timm.data.resolve_data_config(pretrained_cfg=timm.models.get_pretrained_cfg(arch).to_dict())
        return timm.data.create_transform(**config, is_training=False)
    return make


REFERENCES = {
    "resmem": resmem_reference,
    "vitmem": vitmem_reference,
    "ours": paper_reference,
    "resnet50-lamem": paper_reference,
    "resnet50-lamem-imagenet": paper_reference,
    "amnet": amnet_reference,
    # bicubic, crop_pct 0.95 / bilinear 0.875 / bicubic squash / bicubic 0.875
    "timm/resnet18.a1_in1k": timm_reference("resnet18.a1_in1k"),
    "timm/vit_base_patch16_224_miil": timm_reference("vit_base_patch16_224_miil"),
    "timm/coat_lite_medium_384.in1k": timm_reference("coat_lite_medium_384.in1k"),
    "timm/convnext_tiny": timm_reference("convnext_tiny"),
}


def membench_pixels(name, paths):
    pre = registry.get_model(name).preprocess
    return Normalizer(pre)(torch.stack([eval_transform(pre)(open_rgb(p)) for p in paths]))


def reference_pixels(name, paths):
    """The reference as its users call it: PIL open, convert("RGB"), the transform."""
    transform = REFERENCES[name]()
    out = []
    for p in paths:
        with Image.open(p) as im:
            out.append(transform(im.convert("RGB")))
    return torch.stack(out)


def assert_same_pixels(name, paths):
    ours, theirs = membench_pixels(name, paths), reference_pixels(name, paths)
    assert ours.shape == theirs.shape
    # identical uint8 pixels; only x/255 vs x*(1/255) and the order of the normalisation
    # arithmetic may differ, by float32 rounding (a grey level would be 1/255/std > 4e-3)
    worst = (ours - theirs).abs().amax(dim=(1, 2, 3))
    assert worst.max().item() <= 2e-6, dict(zip(map(str, paths), worst.tolist()))


@pytest.mark.parametrize("name", list(REFERENCES))
def test_eval_pixels_equal_the_reference_transform(name, generated_jpegs):
    assert_same_pixels(name, generated_jpegs)


@pytest.mark.realdata
@pytest.mark.parametrize("name", list(REFERENCES))
def test_eval_pixels_equal_the_reference_transform_on_lnsim(name):
    assert_same_pixels(name, lnsim_images(40))


def test_timm_preprocess_follows_the_pretrained_config():
    resnet = registry.get_model("timm/resnet18.a1_in1k").preprocess
    assert (resnet.size, resnet.crop, resnet.resize, resnet.interpolation) == ((235, 235), 224, "shorter", "bicubic")
    coat = registry.get_model("timm/coat_lite_medium_384.in1k").preprocess
    assert (coat.crop, coat.resize) == (384, "exact")


# ----------------------------------------------------------------------- predictions

@pytest.fixture(scope="module")
def resmem_package_model():
    pytest.importorskip("resmem", reason="pip install 'membench[resmem]'")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # the package passes torchvision's deprecated `pretrained`
        from resmem import ResMem
        return ResMem(pretrained=True).eval()


def cli_predict(*args):
    from membench.cli import main

    out = io.StringIO()
    with redirect_stdout(out):
        assert main(["predict", "--device", "cpu", *map(str, args)]) == 0
    rows = list(csv.reader(io.StringIO(out.getvalue())))
    assert rows[0] == ["image", "score"]
    return {r[0]: float(r[1]) for r in rows[1:]}


def assert_resmem_cli_equals_package(model, paths):
    ours = cli_predict("--model", "resmem", "--batch-size", "3", *paths)
    transformer = resmem_reference()
    with torch.no_grad():
        for p in paths:
            with Image.open(p) as im:  # the package README's usage
                expected = model(transformer(im.convert("RGB")).view(-1, 3, 227, 227)).item()
            # the CLI prints 6 decimals: 5e-7 of rounding
            assert abs(ours[str(p)] - expected) <= 1e-5, (p, ours[str(p)], expected)


def test_predict_resmem_equals_the_package(resmem_package_model, generated_jpegs):
    assert_resmem_cli_equals_package(resmem_package_model, generated_jpegs[:4])


@pytest.mark.realdata
def test_predict_resmem_equals_the_package_on_lnsim(resmem_package_model):
    assert_resmem_cli_equals_package(resmem_package_model, lnsim_images(12))


def assert_vitmem_equals_reference(paths, tmp_path):
    """ViTMem's weights are not reachable offline: the same random weights in both models,
    through `membench predict --checkpoint` and the package's model with its transform."""
    vitmem = pytest.importorskip("vitmem", reason="pip install --no-deps 'vitmem' (membench[vitmem])")
    torch.manual_seed(0)
    reference = vitmem.ViTMem_model().eval()
    checkpoint = tmp_path / "vitmem.pt"
    torch.save(reference.state_dict(), checkpoint)
    ours = cli_predict("--model", "vitmem", "--pretrained", "none", "--checkpoint", checkpoint,
                       "--batch-size", "3", *paths)
    with torch.no_grad():
        want = reference(reference_pixels("vitmem", paths)).squeeze(1)
    for p, expected in zip(paths, want.tolist()):
        assert abs(ours[str(p)] - expected) <= 1e-5, (p, ours[str(p)], expected)


@pytest.mark.slow  # ~35 s: two ViT-B builds; the pixel test above covers the default run
def test_vitmem_predictions_equal_the_reference(generated_jpegs, tmp_path):
    assert_vitmem_equals_reference(generated_jpegs[:3], tmp_path)


@pytest.mark.realdata
def test_vitmem_predictions_equal_the_reference_on_lnsim(tmp_path):
    assert_vitmem_equals_reference(lnsim_images(6), tmp_path)
