"""membench's `resmem` vs the `resmem` package's own model, on the same images (CPU).

Two groups, each a pair shown side by side by pytest-benchmark:
- resmem-forward: the network alone on one preprocessed batch;
- resmem-images: decoded images to scores, each side with its own preprocessing (the
  package's PIL transform + ToTensor; membench's eval transform + Normalizer).
images/s = batch / mean time, one thread. Marked slow (two ResNet-152 networks load, ~1 GB); time them with
    python -m pytest tests/benchmarks/test_bench_resmem.py -m slow --benchmark-enable
Skipped when the optional `resmem` package is not installed.
"""

from __future__ import annotations

import warnings

import pytest
import torch

BATCH = 4
pytestmark = [pytest.mark.slow, pytest.mark.usefixtures("one_thread")]


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    pytest.importorskip("resmem", reason="the optional `resmem` package is not installed "
                                         "(pip install 'membench[resmem]')")
    from membench.data.demo import generate
    from membench.data.images import open_rgb
    from membench.registry import get_model
    from membench.spec import BuildContext

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # the package passes torchvision's deprecated `pretrained`
        from resmem import ResMem, transformer

        spec = get_model("resmem")
        ours = spec.builder()(BuildContext(pretrained=True)).eval()
        theirs = ResMem(pretrained=True).eval()
    root = generate(tmp_path_factory.mktemp("resmem-bench") / "demo", n_images=20, n_splits=1)
    images = [open_rgb(p) for p in sorted((root / "images").iterdir())[:BATCH]]
    return {"spec": spec, "ours": ours, "theirs": theirs, "transformer": transformer, "images": images}


def _run(benchmark, fn):
    with torch.inference_mode():
        out = benchmark.pedantic(fn, rounds=5, warmup_rounds=1, iterations=1)
    if benchmark.stats:
        benchmark.extra_info["images_per_s"] = BATCH / benchmark.stats.stats.mean
    return out


@pytest.mark.benchmark(group="resmem-forward")
@pytest.mark.parametrize("impl", ["membench", "package"])
def test_forward(benchmark, setup, impl):
    x = torch.stack([setup["transformer"](im) for im in setup["images"]])
    model = setup["ours"] if impl == "membench" else setup["theirs"]
    out = _run(benchmark, lambda: model(x))
    assert out.numel() == BATCH


@pytest.mark.benchmark(group="resmem-images")
@pytest.mark.parametrize("impl", ["membench", "package"])
def test_images_to_scores(benchmark, setup, impl):
    from membench.data.transforms import Normalizer, eval_transform

    images = setup["images"]
    if impl == "membench":
        pre = setup["spec"].preprocess
        transform, normalize, model = eval_transform(pre), Normalizer(pre), setup["ours"]

        def fn():
            return model(normalize(torch.stack([transform(im) for im in images])))
    else:
        transformer, model = setup["transformer"], setup["theirs"]

        def fn():
            return model(torch.stack([transformer(im) for im in images]))
    out = _run(benchmark, fn)
    assert out.numel() == BATCH
