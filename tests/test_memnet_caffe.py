"""MemNet's released Caffe model: Caffe files are written here byte by byte with a small
protocol-buffer encoder (field numbers of the published caffe.proto), independent of
membench's reader. A tiny net checks the reader (new and deprecated V1 layers, BlobShape
and legacy 4-D shapes, unknown fields skipped); a MemNet-shaped model checks that the
conversion (BGR 0..255 minus the mean image, centre 227 crop) gives what a Caffe-order
forward of the original blobs gives."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from membench import registry
from membench.errors import MembenchError
from membench.weights import released
from membench.weights.caffemodel import parse_mean, parse_net

pytest.importorskip("google.protobuf")


# ---------------------------------------------------------------- a minimal protobuf writer

def varint(n: int) -> bytes:
    out = bytearray()
    while True:
        byte, n = n & 0x7F, n >> 7
        out.append(byte | (0x80 if n else 0))
        if not n:
            return bytes(out)


def field(number: int, payload: bytes) -> bytes:  # length-delimited (wire type 2)
    return varint(number << 3 | 2) + varint(len(payload)) + payload


def int_field(number: int, value: int) -> bytes:  # varint (wire type 0)
    return varint(number << 3) + varint(value)


def blob(array: np.ndarray, legacy: bool = False) -> bytes:
    data = field(5, np.ascontiguousarray(array, dtype="<f4").tobytes())  # packed float
    if legacy:  # num, channels, height, width
        shape = (1,) * (4 - array.ndim) + array.shape
        return b"".join(int_field(i + 1, d) for i, d in enumerate(shape)) + data
    return field(7, field(1, b"".join(varint(d) for d in array.shape))) + data


def layer(name: str, kind: str, blobs=(), v1_type: int | None = None, legacy=False) -> bytes:
    if v1_type is not None:  # V1LayerParameter: name 4, type 5 (enum), blobs 6
        return field(4, name.encode()) + int_field(5, v1_type) + b"".join(field(6, blob(b, legacy)) for b in blobs)
    unknown = field(106, int_field(1, 96))  # e.g. convolution_param: skipped by the reader
    return field(1, name.encode()) + field(2, kind.encode()) + unknown + b"".join(field(7, blob(b, legacy)) for b in blobs)


def net(layers, v1: bool = False) -> bytes:
    return field(1, b"net") + b"".join(field(2 if v1 else 100, entry) for entry in layers)


# ---------------------------------------------------------------- the reader on a tiny net

def test_reader_gives_every_blob_exactly():
    rng = np.random.default_rng(0)
    w, b = rng.standard_normal((2, 3, 3, 3)).astype(np.float32), rng.standard_normal(2).astype(np.float32)
    fc = rng.standard_normal((1, 8)).astype(np.float32)
    new = net([layer("data", "Input"), layer("conv1", "Convolution", [w, b]), layer("relu1", "ReLU"),
               layer("fc", "InnerProduct", [fc, np.zeros(1, np.float32)])])
    layers = parse_net(new, "new.caffemodel")
    assert [(lay.name, lay.type) for lay in layers] == [("conv1", "Convolution"), ("fc", "InnerProduct")]
    assert np.array_equal(layers[0].blobs[0], w) and np.array_equal(layers[1].blobs[0], fc)
    old = net([layer("conv1", "", [w, b], v1_type=4, legacy=True),
               layer("fc", "", [fc, np.zeros(1, np.float32)], v1_type=14, legacy=True)], v1=True)
    layers = parse_net(old, "old.caffemodel")
    assert [lay.type for lay in layers] == ["Convolution", "InnerProduct"]
    assert layers[0].blobs[0].shape == (2, 3, 3, 3) and layers[0].blobs[1].shape == (1, 1, 1, 2)
    assert np.array_equal(layers[1].blobs[0].reshape(1, 8), fc)
    mean = rng.uniform(0, 255, (3, 4, 5)).astype(np.float32)
    assert np.array_equal(parse_mean(blob(mean[None], legacy=True), "mean"), mean)


def test_reader_errors_are_one_line():
    with pytest.raises(MembenchError, match="not a Caffe model"):
        parse_net(b"\xff\xff\xff\xff", "x.caffemodel")
    with pytest.raises(MembenchError, match="no learned layers"):
        parse_net(net([layer("data", "Input")]), "deploy")


# ---------------------------------------------------------------- MemNet

SHAPES = [("conv1", (96, 3, 11, 11)), ("conv2", (256, 48, 5, 5)), ("conv3", (384, 256, 3, 3)),
          ("conv4", (384, 192, 3, 3)), ("conv5", (256, 192, 3, 3)), ("fc6", (4096, 9216)),
          ("fc7", (4096, 4096)), ("fc8-memorability", (1, 4096))]


def memnet_blobs(seed: int = 0):
    gen = torch.Generator().manual_seed(seed)
    out = []
    for name, shape in SHAPES:
        fan_in = int(np.prod(shape[1:]))
        out.append((name, (torch.randn(shape, generator=gen) * (2 / fan_in) ** 0.5).numpy(),
                    (torch.randn(shape[0], generator=gen) * 0.01).numpy()))
    return out


def caffe_forward(blobs, bgr):
    """CaffeNet in Caffe's order on (B, 3, 227, 227) BGR 0..255 minus mean, from the blobs."""
    t = lambda a: torch.from_numpy(np.asarray(a))  # noqa: E731
    lrn = lambda x: F.local_response_norm(x, 5, alpha=1e-4, beta=0.75, k=1.0)  # noqa: E731
    (_, w1, b1), (_, w2, b2), (_, w3, b3), (_, w4, b4), (_, w5, b5), (_, w6, b6), (_, w7, b7), (_, w8, b8) = blobs
    x = lrn(F.max_pool2d(F.relu(F.conv2d(bgr, t(w1), t(b1), stride=4)), 3, 2))
    x = lrn(F.max_pool2d(F.relu(F.conv2d(x, t(w2), t(b2), padding=2, groups=2)), 3, 2))
    x = F.relu(F.conv2d(x, t(w3), t(b3), padding=1))
    x = F.relu(F.conv2d(x, t(w4), t(b4), padding=1, groups=2))
    x = F.max_pool2d(F.relu(F.conv2d(x, t(w5), t(b5), padding=1, groups=2)), 3, 2).flatten(1)
    x = F.relu(F.linear(x, t(w6), t(b6)))
    x = F.relu(F.linear(x, t(w7), t(b7)))
    return F.linear(x, t(w8), t(b8)).squeeze(1)


@pytest.fixture(scope="module")
def caffe_files(tmp_path_factory):
    folder = tmp_path_factory.mktemp("memnet_caffe")
    blobs = memnet_blobs()
    layers = [layer("data", "Input")]
    for i, (name, w, b) in enumerate(blobs):
        layers.append(layer(name, "Convolution" if i < 5 else "InnerProduct", [w, b]))
        layers.append(layer(f"relu{i}", "ReLU"))
    (folder / "memnet.caffemodel").write_bytes(net(layers))
    mean = np.random.default_rng(1).uniform(60, 200, (1, 3, 256, 256)).astype(np.float32)
    (folder / "mean.binaryproto").write_bytes(blob(mean, legacy=True))
    (folder / "deploy.prototxt").write_text('name: "MemNet"\ninput: "data"\n')
    return folder, blobs, mean[0]


def test_converted_memnet_equals_the_caffe_forward(caffe_files, demo_root, run_cli):
    folder, blobs, mean = caffe_files
    code, out, err = run_cli("weights", "import", "memnet", folder)
    assert code == 0, err
    spec = registry.get_model("memnet")
    inst = released.installed(spec)
    assert inst.splits() is None  # one model for every split
    model = spec.builder()(__import__("membench").BuildContext(pretrained=False))
    model.load_state_dict(inst.state_dict(3))
    model.eval()

    from membench.data.transforms import Normalizer, eval_transform

    pre = inst.release.preprocess
    assert (pre.size, pre.crop, pre.mean) == ((256, 256), 227, None)
    dataset = registry.get_dataset("lamem").opener()(demo_root, {})
    samples = dataset.load_split(1).test[:4]
    from membench.data.images import open_rgb

    pixels = torch.stack([eval_transform(pre)(open_rgb(s.path)) for s in samples])  # uint8 RGB, 227x227
    with torch.no_grad():
        ours = model(Normalizer(pre)(pixels))
        bgr = pixels.flip(1).float() - torch.from_numpy(mean[:, 14:241, 14:241])  # Caffe's test transform
        reference = caffe_forward(blobs, bgr)
    assert torch.allclose(ours, reference, rtol=1e-4, atol=1e-4 * reference.abs().max().item())
    assert reference.std() > 0


def test_not_memnet_is_refused(tmp_path, run_cli):
    (tmp_path / "m.caffemodel").write_bytes(net([layer("conv1", "Convolution", [np.zeros((2, 3, 3, 3), np.float32),
                                                                               np.zeros(2, np.float32)])]))
    (tmp_path / "mean.binaryproto").write_bytes(blob(np.zeros((1, 3, 256, 256), np.float32)))
    code, out, err = run_cli("weights", "import", "memnet", tmp_path)
    assert code == 2 and "not MemNet's layout" in err and "conv1 (Convolution, 2 blobs)" in err


def test_a_missing_mean_image_is_refused(tmp_path, run_cli):
    (tmp_path / "m.caffemodel").write_bytes(b"")
    code, out, err = run_cli("weights", "import", "memnet", tmp_path)
    assert code == 2 and "mean image" in err


def test_run_train_none_evaluates_the_caffe_model_with_its_own_transform(caffe_files, demo_root, tmp_path, run_cli):
    """`membench run --train none` uses the converted model with Caffe's test transform (no
    ImageNet normalisation): its predictions are those of the Caffe-order forward."""
    import csv

    folder, blobs, mean = caffe_files
    assert run_cli("weights", "import", "memnet", folder)[0] == 0
    lb = tmp_path / "lb"
    code, out, err = run_cli("run", "--model", "memnet", "--train", "none", "--data", demo_root, "--splits", "2",
                             "--out", lb, "--work-dir", tmp_path / "w", "--device", "cpu")
    assert code == 0, err
    row, = csv.DictReader(open(lb / "results.csv"))
    assert "authors' weights (memnet_caffe)" in (row.get("configuration") or row["notes"])
    with open(lb / "predictions" / row["run_id"] / "split2.csv") as f:
        got = {r["image"]: float(r["pred"]) for r in csv.DictReader(f)}

    from membench.data.images import open_rgb
    from membench.data.transforms import eval_transform

    spec = registry.get_model("memnet")
    test = registry.get_dataset("lamem").opener()(demo_root, {}).load_split(2).test[:5]
    pre = released.installed(spec).release.preprocess
    pixels = torch.stack([eval_transform(pre)(open_rgb(s.path)) for s in test])
    with torch.no_grad():
        reference = caffe_forward(blobs, pixels.flip(1).float() - torch.from_numpy(mean[:, 14:241, 14:241]))
    ours = torch.tensor([got[s.name] for s in test])
    assert torch.allclose(ours, reference.double().float(), rtol=1e-4, atol=1e-4 * reference.abs().max().item())
