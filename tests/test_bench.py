"""`membench bench` and membench.scale.bench: files, rows, ratios, errors (tiny sizes on CPU)."""

from __future__ import annotations

import csv
import json

import pytest
import torch

from membench.scale import bench
from membench.spec import Preprocess


def test_make_jpegs_is_deterministic(tmp_path):
    a = bench.make_jpegs(tmp_path / "a", n=3, size=(40, 30), seed=1)
    b = bench.make_jpegs(tmp_path / "b", n=3, size=(40, 30), seed=1)
    assert [p.read_bytes() for p in a] == [p.read_bytes() for p in b]
    from PIL import Image

    with Image.open(a[0]) as im:
        assert im.size == (40, 30) and im.format == "JPEG"


def test_pipeline_rows_and_ratio(tmp_path):
    paths = bench.make_jpegs(tmp_path, n=3, size=(80, 60))
    rows = {r.name: r for r in bench.bench_pipeline(paths, Preprocess(size=(32, 32)), rounds=1)}
    assert set(rows) == {"decode", "train", "train/reference", "eval"}
    assert all(r.images_per_s > 0 and r.iters == 3 and r.threads == 1 for r in rows.values())
    train, ref = rows["train"], rows["train/reference"]
    assert train.ratio == pytest.approx(train.images_per_cpu_s / ref.images_per_cpu_s)
    assert "PaperTransform" in train.note and ref.impl == "reference"


def test_tag_names_the_environment():
    env = bench.Env(device="cuda", device_name="NVIDIA H200 (MIG 1g)", dtype="bfloat16",
                    torch="2.14.1+cu128", torchvision="0.29.1")
    assert env.tag == "cuda-NVIDIA-H200-MIG-1g-bfloat16-torch2.14.1"
    assert bench.environment("cpu", "float32").tag == f"cpu-float32-torch{torch.__version__.split('+')[0]}"


def test_cli_writes_results(run_cli, tmp_path):
    code, out, err = run_cli("bench", "--what", "pipeline,inference", "--models", "resnet50-lamem",
                             "--size", "32", "--batch", "2", "--iters", "1", "--rounds", "1", "--warmup", "0",
                             "--images", "2", "--image-size", "64x48", "--out", tmp_path)
    assert code == 0, err
    tag = f"cpu-float32-torch{torch.__version__.split('+')[0]}"
    data = json.loads((tmp_path / f"bench-{tag}.json").read_text())
    assert data["environment"]["torch"] == torch.__version__ and data["environment"]["device"] == "cpu"
    rows = list(csv.DictReader((tmp_path / f"bench-{tag}.csv").open()))
    kinds = {(r["benchmark"], r["name"], r["impl"]) for r in rows}
    assert {("inference", "resnet50-lamem", "membench"), ("inference", "resnet50-lamem", "reference")} <= kinds
    model_row = next(r for r in rows if r["benchmark"] == "inference" and r["impl"] == "membench")
    assert float(model_row["ratio"]) > 0 and model_row["input"] == "32x32" and model_row["batch"] == "2"
    assert "torchvision resnet50" in model_row["reference"]
    assert "images/s" in out


def test_cli_rejects_unknown_benchmark(run_cli, tmp_path):
    code, _, err = run_cli("bench", "--what", "pipline", "--out", tmp_path)
    assert code == 2 and "unknown: pipline" in err


def test_cli_rejects_cuda_without_gpu(run_cli, tmp_path):
    if torch.cuda.is_available():
        pytest.skip("a GPU is present")
    code, _, err = run_cli("bench", "--device", "cuda", "--out", tmp_path)
    assert code == 2 and "no CUDA device" in err


def test_train_step_rows_follow_the_recipe(tiny_plugin):
    """A chained model's train-step trains what its own last stage trains (frozen parts
    excluded); the batch defaults to that stage's."""
    from membench.registry import get_model

    rows = bench.bench_model(get_model("tiny-chain"), bench=bench.ModelBench("cpu"), iters=1, warmup=1,
                             rounds=1, what=("inference", "train-step"))
    assert [(r.benchmark, r.impl, r.batch, r.input) for r in rows] == [
        ("inference", "membench", 8, "32x32"), ("train-step", "membench", 8, "32x32")]
    assert all(r.images_per_s > 0 and r.ratio is None for r in rows)


def test_models_that_cannot_run_are_listed_as_skipped(run_cli, tmp_path, tiny_plugin):
    # batch 1 at 1x1: BatchNorm cannot train on one value per channel
    code, _, err = run_cli("bench", "--what", "train-step", "--models", "tiny-cnn", "--size", "1", "--batch", "1",
                           "--iters", "1", "--rounds", "1", "--warmup", "0", "--out", tmp_path)
    assert code == 0 and "tiny-cnn: skipped" in err
    data = json.loads(next(tmp_path.glob("bench-*.json")).read_text())
    assert data["rows"] == [] and data["skipped"][0]["model"] == "tiny-cnn"


def test_cli_never_replaces_a_result_file_it_did_not_write(run_cli, tmp_path):
    tag = bench.environment("cpu", "float32").tag
    mine = tmp_path / f"bench-{tag}.csv"
    mine.write_text("my own measurements\n")
    args = ("bench", "--what", "pipeline", "--images", "2", "--image-size", "64x48", "--rounds", "1", "--out", tmp_path)
    code, out, err = run_cli(*args)
    assert code == 2 and str(mine) in err and "did not write" in err and "images/s" not in out + err
    assert mine.read_text() == "my own measurements\n" and not (tmp_path / f"bench-{tag}.json").exists()
    mine.unlink()
    assert run_cli(*args)[0] == 0 and run_cli(*args)[0] == 0  # its own results: replaced by the new measurement
    assert json.loads((tmp_path / ".membench-bench.json").read_text())["files"] == [f"bench-{tag}.csv",
                                                                                    f"bench-{tag}.json"]
