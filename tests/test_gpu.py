"""Checks that need a CUDA device (deselected by default; run with `pytest -m gpu`)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from membench.data.transforms import Normalizer
from membench.spec import Preprocess

pytestmark = pytest.mark.gpu


@pytest.fixture(autouse=True)
def need_cuda():
    if not torch.cuda.is_available():
        pytest.skip("no CUDA device")


def test_normalizer_on_cuda_matches_cpu():
    batch = torch.randint(0, 256, (4, 3, 32, 32), dtype=torch.uint8)
    cpu = Normalizer(Preprocess())(batch)
    gpu = Normalizer(Preprocess(), channels_last=True, dtype=torch.bfloat16)(batch.cuda(non_blocking=True))
    assert gpu.device.type == "cuda" and gpu.dtype == torch.bfloat16
    assert gpu.is_contiguous(memory_format=torch.channels_last)
    torch.testing.assert_close(gpu.float().cpu(), cpu, atol=2e-2, rtol=1e-2)


def test_loader_pins_memory_on_cuda(tmp_path):
    from membench.data.loader import make_loader
    from membench.data.transforms import train_transform
    from membench.scale.bench import make_jpegs
    from membench.spec import Sample

    paths = make_jpegs(tmp_path, n=4, size=(64, 48))
    samples = [Sample(p.name, p, 0.5) for p in paths]
    pre = Preprocess(size=(32, 32))
    loader = make_loader(samples, train_transform(pre), batch_size=2, shuffle=True, workers=1, seed=0,
                         device_type="cuda")
    x, _y, _i = next(iter(loader))
    assert x.is_pinned() and x.dtype == torch.uint8


def test_gpu_check_script(tmp_path):
    out = tmp_path / "gpu_check.json"
    script = Path(__file__).parents[1] / "scripts" / "gpu_check.py"
    proc = subprocess.run([sys.executable, str(script), "--out", str(out), "--size", "64", "--steps", "3",
                           "--warmup", "1", "--seconds", "2", "--jobs", "1,2", "--loader-workers", "1",
                           "--loader-images", "20", "--no-compile", "--skip", "stage2"],
                          capture_output=True, text=True, timeout=900)
    report = json.loads(out.read_text())
    assert proc.returncode == 0, {k: v.get("error") for k, v in report.items() if isinstance(v, dict)}
    assert report["bf16"]["finite"] and report["train"]["bf16_cl_eager"]["images_per_s"] > 0
    # fp32 (the default) and bf16 (opt-in) are both timed
    assert all(report["concurrent"][f"{dtype} jobs={k}"]["aggregate_images_per_s"] > 0
               for dtype in ("float32", "bfloat16") for k in (1, 2))
