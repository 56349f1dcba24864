"""Timed benchmarks (pytest-benchmark). A plain `pytest` run has --benchmark-disable, so each
runs once as a smoke test; time them with `pytest tests/benchmarks --benchmark-enable`.
Pairs (membench vs reference) share a `group` so the report shows them side by side."""

from __future__ import annotations

import pytest
import torch

from membench.data.images import open_rgb
from membench.data.transforms import Normalizer, PaperLiteral, eval_transform, train_transform
from membench.registry import get_model
from membench.scale.bench import ModelBench, make_jpegs, reference_model
from membench.spec import BuildContext, Preprocess

pytestmark = pytest.mark.usefixtures("one_thread")  # steadier numbers on a shared machine

PAPER = Preprocess(size=(256, 256), train="paper")


@pytest.fixture(scope="module")
def jpeg(tmp_path_factory):
    return make_jpegs(tmp_path_factory.mktemp("bench-jpegs"), n=1, size=(400, 300))[0]


@pytest.mark.benchmark(group="decode")
def test_decode(benchmark, jpeg):
    img = benchmark(open_rgb, jpeg)
    assert img.size == (400, 300)


@pytest.mark.benchmark(group="train-transform")
@pytest.mark.parametrize("impl", ["folded", "literal"])
def test_train_transform(benchmark, jpeg, impl):
    t = train_transform(PAPER) if impl == "folded" else PaperLiteral(PAPER.size)
    img, gen = open_rgb(jpeg), torch.Generator().manual_seed(0)
    x = benchmark(lambda: t(img, generator=gen))
    assert x.shape == (3, 256, 256) and x.dtype == torch.uint8


@pytest.mark.benchmark(group="pipeline")
def test_decode_and_train_transform(benchmark, jpeg):
    t, gen = train_transform(PAPER), torch.Generator().manual_seed(0)
    assert benchmark(lambda: t(open_rgb(jpeg), generator=gen)).shape == (3, 256, 256)


@pytest.mark.benchmark(group="eval-transform")
def test_eval_transform(benchmark, jpeg):
    t, img = eval_transform(PAPER), open_rgb(jpeg)
    assert benchmark(t, img).shape == (3, 256, 256)


@pytest.mark.benchmark(group="normalize")
def test_normalizer_batch10(benchmark):
    batch = torch.randint(0, 256, (10, 3, 256, 256), dtype=torch.uint8)
    assert benchmark(Normalizer(PAPER), batch).dtype == torch.float32


@pytest.mark.benchmark(group="resnet50-inference-64")
@pytest.mark.parametrize("impl", ["membench", "reference"])
def test_resnet50_inference(benchmark, impl):
    spec = get_model("resnet50-lamem")
    model = spec.builder()(BuildContext(pretrained=False)) if impl == "membench" else reference_model(spec.name)[0]
    benchmark(ModelBench("cpu").inference(model, spec.preprocess, batch=2, size=(64, 64)))


@pytest.mark.benchmark(group="resnet50-train-step-64")
@pytest.mark.parametrize("impl", ["membench", "reference"])
def test_resnet50_train_step(benchmark, impl):
    spec = get_model("resnet50-lamem")
    if impl == "membench":
        model, stage = spec.builder()(BuildContext(pretrained=False)), spec.recipe[-1]
    else:
        model, stage = reference_model(spec.name)[0], None
    benchmark(ModelBench("cpu").train_step(model, spec.preprocess, stage, batch=2, size=(64, 64)))
