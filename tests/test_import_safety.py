"""`membench weights fetch|import` with damaged or hostile archives: a web page in place of
the archive, a corrected --url, a non-UTF-8 log, a bad CRC, a truncated tar.gz, odd Caffe
blob shapes, a bad mean .npy, integer tensors. Each is one line naming the file, and
nothing bad is kept for the next run."""

from __future__ import annotations

import io
import tarfile
import zipfile

import numpy as np
import pytest
import torch
from test_released_weights import archive_bytes, authors_state, toy  # noqa: F401 (fixtures; `server`: conftest)

from membench import registry
from membench.weights import released

pytest.importorskip("google.protobuf")
from test_memnet_caffe import blob, field, layer, net, varint  # noqa: E402

RELEASE = "lamem_ResNet50FC_lstm3"


def error_line(err: str) -> str:
    assert "Traceback" not in err
    line, = [x for x in err.splitlines() if x.startswith("membench: error:")]
    return line


# ---- weights fetch: what is kept between runs ------------------------------------------------


def test_fetch_of_a_web_page_keeps_nothing_and_a_corrected_url_installs(toy, server, run_cli, tmp_path):
    base, handler = server
    handler.files["/drive/toy_release.zip"] = b"<!DOCTYPE html><html><body>Google Drive: quota exceeded</body></html>"
    handler.files["/mirror/toy_release.zip"] = archive_bytes({1: authors_state(1)})
    code, out, err = run_cli("weights", "fetch", "toy-released", "--url", f"{base}/drive/toy_release.zip",
                             "--dir", tmp_path)
    assert code == 2 and f"{base}/drive/toy_release.zip" in error_line(err) and "web page" in err
    assert not (tmp_path / "toy_release.zip").exists()
    code, out, err = run_cli("weights", "fetch", "toy-released", "--url", f"{base}/mirror/toy_release.zip",
                             "--dir", tmp_path)
    assert code == 0, err
    assert released.installed(registry.get_model("toy-released")).splits() == [1]


def test_fetch_of_an_archive_that_fails_import_is_not_reused(toy, server, run_cli, tmp_path):
    base, handler = server
    wrong = io.BytesIO()
    with zipfile.ZipFile(wrong, "w") as z:
        z.writestr("readme.txt", "another release")
    handler.files["/a/toy_release.zip"] = wrong.getvalue()
    handler.files["/b/toy_release.zip"] = archive_bytes({2: authors_state(2)})
    code, out, err = run_cli("weights", "fetch", "toy-released", "--url", f"{base}/a/toy_release.zip", "--dir", tmp_path)
    assert code == 2 and "no checkpoint of toy_release found" in error_line(err) and "removed" in err
    assert not (tmp_path / "toy_release.zip").exists()
    code, out, err = run_cli("weights", "fetch", "toy-released", "--url", f"{base}/b/toy_release.zip", "--dir", tmp_path)
    assert code == 0, err
    assert released.installed(registry.get_model("toy-released")).splits() == [2]


def test_fetch_from_another_url_starts_over(toy, server, run_cli, tmp_path):
    base, handler = server
    handler.files["/a/toy_release.zip"] = archive_bytes({1: authors_state(1)})
    handler.files["/b/toy_release.zip"] = archive_bytes({3: authors_state(3)})
    for where, splits in (("a", [1]), ("b", [3])):
        code, out, err = run_cli("weights", "fetch", "toy-released", "--url", f"{base}/{where}/toy_release.zip",
                                 "--dir", tmp_path)
        assert code == 0, err
        assert released.installed(registry.get_model("toy-released")).splits() == splits


def test_fetch_keeps_an_archive_the_user_put_there(toy, server, run_cli, tmp_path):
    """A file of the user's that fails import is theirs: never deleted."""
    (tmp_path / "toy_release.zip").write_bytes(b"my notes")
    code, out, err = run_cli("weights", "fetch", "toy-released", "--url", "http://127.0.0.1:9/toy_release.zip",
                             "--dir", tmp_path)
    assert code == 2 and str(tmp_path / "toy_release.zip") in error_line(err)
    assert (tmp_path / "toy_release.zip").read_bytes() == b"my notes"


# ---- tensors ---------------------------------------------------------------------------------


@pytest.mark.parametrize("value, message", [
    (torch.zeros(1, 4, dtype=torch.int8), "head.weight is int8, toy-released needs floating point"),
    (torch.zeros(1, 4, dtype=torch.bool), "head.weight is bool"),
    (torch.zeros(1, 4, dtype=torch.complex64), "head.weight is complex64"),
], ids=["int8", "bool", "complex"])
def test_non_float_tensors_are_refused(toy, tmp_path, run_cli, value, message):
    state = authors_state(1)
    state["net.head.weight"] = value
    (tmp_path / "a.zip").write_bytes(archive_bytes({1: state}))
    code, out, err = run_cli("weights", "import", "toy-released", tmp_path / "a.zip")
    assert code == 2 and message in error_line(err) and "a.zip:toy_release/split_1/model.pt" in err
    assert released.installed(registry.get_model("toy-released")) is None


def test_a_float_counter_is_refused(toy, tmp_path, run_cli):
    state = authors_state(1)
    state["net.bn.num_batches_tracked"] = torch.tensor(3.0)
    (tmp_path / "a.zip").write_bytes(archive_bytes({1: state}))
    code, out, err = run_cli("weights", "import", "toy-released", tmp_path / "a.zip")
    assert code == 2 and "bn.num_batches_tracked is float32, toy-released needs an integer" in error_line(err)


# ---- AMNet's official archive ----------------------------------------------------------------


def test_amnet_a_log_that_is_not_utf8_is_one_line_naming_it(tmp_path, run_cli):
    archive = tmp_path / "a.zip"
    with zipfile.ZipFile(archive, "w") as z:
        for epoch in (1, 2):
            z.writestr(f"{RELEASE}_train_1/weights_{epoch}.pkl", b"x")
        z.writestr(f"{RELEASE}_train_1/train_log_0.csv", b"val,1,1,0.1,0.5,0.1\n\xff\xfe\xe9t\xe9\n")
    code, out, err = run_cli("weights", "import", "amnet", archive)
    assert code == 2 and f"{archive}:{RELEASE}_train_1/train_log_0.csv" in error_line(err) and "UTF-8" in err


def test_amnet_a_bad_crc_is_one_line_naming_the_member(tmp_path, run_cli):
    archive = tmp_path / "a.zip"
    with zipfile.ZipFile(archive, "w", compression=zipfile.ZIP_STORED) as z:
        z.writestr(f"{RELEASE}_train_1/weights_1.pkl", b"A" * 1000)
    data = bytearray(archive.read_bytes())
    data[data.find(b"A" * 1000) + 500] = ord("B")
    archive.write_bytes(bytes(data))
    code, out, err = run_cli("weights", "import", "amnet", archive)
    assert code == 2 and f"{archive}:{RELEASE}_train_1/weights_1.pkl" in error_line(err) and "CRC" in err


# ---- MemNet's Caffe files --------------------------------------------------------------------

TINY_TYPES = ["Convolution"] * 5 + ["InnerProduct"] * 3


def tiny_memnet(conv1: bytes | None = None) -> bytes:
    """Eight layers of MemNet's types with two small blobs each (shapes checked later)."""
    layers = []
    for i, kind in enumerate(TINY_TYPES):
        w = blob(np.ones((2, 3, 1, 1), np.float32))
        if i == 0 and conv1 is not None:
            w = conv1
        layers.append(field(1, f"l{i}".encode()) + field(2, kind.encode()) + field(7, w)
                      + field(7, blob(np.zeros(2, np.float32))))
    return net([layer("data", "Input")]) + b"".join(field(100, entry) for entry in layers)


def npy(array) -> bytes:
    buf = io.BytesIO()
    np.save(buf, array, allow_pickle=True)
    return buf.getvalue()


GOOD_MEAN = np.full((3, 256, 256), 100.0, np.float32)


def write_memnet(folder, model: bytes, mean_name: str = "mean.npy", mean: bytes | None = None):
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "memnet.caffemodel").write_bytes(model)
    (folder / mean_name).write_bytes(npy(GOOD_MEAN) if mean is None else mean)
    return folder


def int64s(values) -> bytes:
    return b"".join(varint(v & (2**64 - 1)) for v in values)


@pytest.mark.parametrize("conv1, message", [
    (blob(np.ones(6, np.float32)), "l0 weights have shape [6]"),  # flattened
    (field(7, field(1, int64s([-2, -3]))) + field(5, np.ones(6, "<f4").tobytes()), "shape [-2, -3]"),
    (field(7, field(1, int64s([2**40, 2**40, 0]))), "shape [1099511627776, 1099511627776, 0]"),
], ids=["flattened", "negative", "huge"])
def test_memnet_odd_blob_shapes_are_one_line(tmp_path, run_cli, conv1, message):
    folder = write_memnet(tmp_path / "m", tiny_memnet(conv1))
    code, out, err = run_cli("weights", "import", "memnet", folder)
    assert code == 2 and message in error_line(err) and "memnet.caffemodel" in err


@pytest.mark.parametrize("mean, message", [
    (b"not an npy file at all", "cannot read"),
    (npy(GOOD_MEAN)[:-1000], "cannot read"),
    (npy(GOOD_MEAN.astype(np.int8)), "int8"),
    (npy(np.array([{"a": 1}], dtype=object)), "refused: an array of Python objects"),
], ids=["garbage", "truncated", "int8", "pickled"])
def test_memnet_a_bad_mean_npy_is_one_line_naming_it(tmp_path, run_cli, mean, message):
    folder = write_memnet(tmp_path / "m", tiny_memnet(), mean=mean)
    code, out, err = run_cli("weights", "import", "memnet", folder)
    assert code == 2 and f"{folder}:mean.npy" in error_line(err) and message in err


def test_memnet_an_npz_in_place_of_the_npy_is_one_line(tmp_path, run_cli):
    buf = io.BytesIO()
    np.savez(buf, mean=GOOD_MEAN)
    folder = write_memnet(tmp_path / "m", tiny_memnet(), mean=buf.getvalue())
    code, out, err = run_cli("weights", "import", "memnet", folder)
    assert code == 2 and f"{folder}:mean.npy" in error_line(err)


def test_memnet_a_truncated_tar_gz_is_one_line_naming_it(tmp_path, run_cli):
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w:gz") as t:
        for name, data in (("memnet.caffemodel", np.random.default_rng(0).bytes(300_000)),
                           ("mean.npy", npy(GOOD_MEAN))):
            info = tarfile.TarInfo(name)
            info.size = len(data)
            t.addfile(info, io.BytesIO(data))
    archive = tmp_path / "memnet.tar.gz"
    archive.write_bytes(buf.getvalue()[:200_000])
    code, out, err = run_cli("weights", "import", "memnet", archive)
    assert code == 2 and str(archive) in error_line(err)


def test_memnet_a_bad_crc_in_a_zip_is_one_line(tmp_path, run_cli):
    archive = tmp_path / "memnet.zip"
    with zipfile.ZipFile(archive, "w", compression=zipfile.ZIP_STORED) as z:
        z.writestr("memnet.caffemodel", b"A" * 1000)
        z.writestr("mean.npy", npy(GOOD_MEAN))
    data = bytearray(archive.read_bytes())
    data[data.find(b"A" * 1000) + 10] = ord("B")
    archive.write_bytes(bytes(data))
    code, out, err = run_cli("weights", "import", "memnet", archive)
    assert code == 2 and f"{archive}:memnet.caffemodel" in error_line(err) and "CRC" in err
