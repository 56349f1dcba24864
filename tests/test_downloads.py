"""Downloads against a local HTTP server on 127.0.0.1 (with Range support): a complete
download, an interrupted one resumed, a checksum mismatch refused, offline errors, split
zips joined, archives unpacked into the layout membench reads."""

from __future__ import annotations

import hashlib
import http.server
import io
import os
import shutil
import subprocess
import tarfile
import threading
import time
import zipfile
from pathlib import Path

import pytest

from membench.data import download as dl
from membench.errors import MembenchError


class _Handler(http.server.BaseHTTPRequestHandler):
    """Serves `files` with Range support. Per path: `cut_after` sends only that many body
    bytes, once, then drops the connection; `chunked` sends Transfer-Encoding: chunked;
    `trickle` sends (bytes, pause) pieces."""

    files: dict[str, bytes] = {}
    cut_after: dict[str, int] = {}
    chunked: set[str] = set()
    trickle: dict[str, tuple[int, float]] = {}
    requests: list[tuple[str, str | None]] = []
    ignore_range = False

    def do_GET(self):  # noqa: N802 (http.server's name)
        rng = self.headers.get("Range")
        type(self).requests.append((self.path, rng))
        data = self.files.get(self.path)
        if data is None:
            self.send_error(404)
            return
        start = 0
        if rng and not self.ignore_range:
            start = int(rng.split("=")[1].split("-")[0])
            if start >= len(data):
                self.send_response(416)
                self.send_header("Content-Range", f"bytes */{len(data)}")
                self.end_headers()
                return
            self.send_response(206)
            self.send_header("Content-Range", f"bytes {start}-{len(data) - 1}/{len(data)}")
        else:
            self.send_response(200)
        body = data[start:]
        if self.path in self.chunked:
            self.send_header("Transfer-Encoding", "chunked")
        else:
            self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        cut = type(self).cut_after.pop(self.path, None)
        if self.path in self.chunked:
            self._send_chunked(body, cut)
        elif self.path in self.trickle:
            self._send_slowly(body, *self.trickle[self.path])
        else:
            self.wfile.write(body if cut is None else body[:cut])
        self.wfile.flush()
        self.close_connection = True

    def _send_chunked(self, body: bytes, cut: int | None):
        """4 KiB chunks; a cut falls inside a chunk, after `cut` body bytes."""
        wire, sent = b"", 0
        for i in range(0, len(body), 4096):
            piece = body[i:i + 4096]
            if cut is not None and sent + len(piece) > cut:
                self.wfile.write(wire + b"%x\r\n" % len(piece) + piece[:cut - sent])
                return
            wire += b"%x\r\n" % len(piece) + piece + b"\r\n"
            sent += len(piece)
        self.wfile.write(wire + b"0\r\n\r\n")

    def _send_slowly(self, body: bytes, step: int, pause: float):
        for i in range(0, len(body), step):
            try:
                self.wfile.write(body[i:i + step])
                self.wfile.flush()
            except OSError:  # the client gave up
                return
            time.sleep(pause)

    def log_message(self, *args):
        pass


@pytest.fixture(autouse=True)
def online(monkeypatch):
    monkeypatch.delenv(dl.OFFLINE_ENV, raising=False)  # conftest sets it for every other test


@pytest.fixture
def server():
    _Handler.files, _Handler.cut_after, _Handler.requests = {}, {}, []
    _Handler.chunked, _Handler.trickle, _Handler.ignore_range = set(), {}, False
    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _Handler)
    httpd.daemon_threads = True  # a trickling response must not hold up the end of the test
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    base = f"http://127.0.0.1:{httpd.server_address[1]}"
    yield base, _Handler
    httpd.shutdown()
    httpd.server_close()


PAYLOAD = os.urandom(3 * dl.CHUNK + 12345)
SHA = hashlib.sha256(PAYLOAD).hexdigest()


def test_complete_download_with_checksum(server, tmp_path):
    base, h = server
    h.files["/a.bin"] = PAYLOAD
    path = dl.download(f"{base}/a.bin", tmp_path / "sub" / "a.bin", sha256=SHA, progress=False)
    assert path.read_bytes() == PAYLOAD and not list(tmp_path.rglob("*.part"))
    # a second call finds the verified file and sends nothing
    dl.download(f"{base}/a.bin", path, sha256=SHA, progress=False)
    assert len(h.requests) == 1


def test_interrupted_download_resumes_with_a_range_request(server, tmp_path):
    base, h = server
    h.files["/a.bin"] = PAYLOAD
    h.cut_after["/a.bin"] = dl.CHUNK + 777
    with pytest.raises(dl.DownloadError, match=r"stopped after 1,049,353 of .*run the same command again to resume"):
        dl.download(f"{base}/a.bin", tmp_path / "a.bin", sha256=SHA, progress=False, retries=0)
    part = tmp_path / "a.bin.part"
    assert part.stat().st_size == dl.CHUNK + 777 and not (tmp_path / "a.bin").exists()
    path = dl.download(f"{base}/a.bin", tmp_path / "a.bin", sha256=SHA, progress=False)
    assert path.read_bytes() == PAYLOAD and not part.exists()
    assert h.requests[-1] == ("/a.bin", f"bytes={dl.CHUNK + 777}-")


def test_a_lost_connection_is_resumed_within_one_call(server, tmp_path):
    base, h = server
    h.files["/a.bin"] = PAYLOAD
    h.cut_after["/a.bin"] = 5000
    path = dl.download(f"{base}/a.bin", tmp_path / "a.bin", sha256=SHA, progress=True)
    assert path.read_bytes() == PAYLOAD
    assert [r for _, r in h.requests] == [None, "bytes=5000-"]


def test_a_server_without_range_support_starts_again(server, tmp_path):
    base, h = server
    h.files["/a.bin"] = PAYLOAD
    h.ignore_range = True
    (tmp_path / "a.bin.part").write_bytes(b"stale bytes of another version")
    assert dl.download(f"{base}/a.bin", tmp_path / "a.bin", sha256=SHA, progress=False).read_bytes() == PAYLOAD


def test_checksum_mismatch_is_refused_and_nothing_corrupt_is_kept(server, tmp_path):
    base, h = server
    h.files["/a.bin"] = PAYLOAD[:-1] + b"\0"
    with pytest.raises(dl.DownloadError) as err:
        dl.download(f"{base}/a.bin", tmp_path / "a.bin", sha256=SHA, progress=False)
    assert "refused" in str(err.value) and SHA in str(err.value) and "\n" not in str(err.value)
    assert [p.name for p in tmp_path.iterdir()] == [dl.LOCK]  # only the (empty) lock of the folder


def test_git_blob_ids_are_checked(server, tmp_path):
    base, h = server
    h.files["/x.mat"] = b"hello\n"
    # `git hash-object` of "hello\n"
    ok = dl.download(f"{base}/x.mat", tmp_path / "x.mat", progress=False,
                     git_blob_sha1="ce013625030ba8dba906f756967f9e9ca394464a")
    assert ok.read_bytes() == b"hello\n"
    with pytest.raises(dl.DownloadError, match="git object id"):
        dl.download(f"{base}/x.mat", tmp_path / "y.mat", progress=False, git_blob_sha1="0" * 40)


def test_an_existing_file_that_fails_its_checksum_is_not_overwritten(tmp_path):
    dest = tmp_path / "a.bin"
    dest.write_bytes(b"my own file")
    with pytest.raises(MembenchError, match="already exists but its sha256"):
        dl.download("http://127.0.0.1:9/a.bin", dest, sha256=SHA, progress=False)
    assert dest.read_bytes() == b"my own file"


def test_offline_is_one_line_naming_the_url_and_where_to_put_the_file(tmp_path, monkeypatch):
    monkeypatch.setenv(dl.OFFLINE_ENV, "1")
    with pytest.raises(dl.DownloadError) as err:
        dl.download("https://example.org/w.pth", tmp_path / "w.pth", progress=False)
    msg = str(err.value)
    assert "https://example.org/w.pth" in msg and str(tmp_path / "w.pth") in msg and "\n" not in msg


def test_unreachable_server_is_one_line_naming_the_url(tmp_path, server):
    base, h = server
    with pytest.raises(dl.DownloadError) as err:  # nothing listens on the discard port
        dl.download("http://127.0.0.1:9/w.pth", tmp_path / "w.pth", progress=False, timeout=5)
    assert "http://127.0.0.1:9/w.pth" in str(err.value) and str(tmp_path / "w.pth") in str(err.value)
    with pytest.raises(dl.DownloadError, match="HTTP 404"):
        dl.download(f"{base}/missing", tmp_path / "m", progress=False)


# ---- unpacking -------------------------------------------------------------------------------


def test_extract_refuses_members_outside_the_target(tmp_path):
    archive = tmp_path / "evil.zip"
    with zipfile.ZipFile(archive, "w") as z:
        z.writestr("../outside.txt", "x")
    with pytest.raises(MembenchError, match="outside the target"):
        dl.extract(archive, tmp_path / "into")
    assert not (tmp_path / "outside.txt").exists()


@pytest.mark.skipif(shutil.which("zip") is None, reason="needs Info-ZIP's zip to make a split archive")
def test_split_zip_is_joined_like_zip_FF(tmp_path):
    src = tmp_path / "images"
    src.mkdir()
    contents = {f"{i:04d}.jpg": os.urandom(40_000 + i) for i in range(1, 6)}
    for name, data in contents.items():
        (src / name).write_bytes(data)
    (tmp_path / "split").mkdir()
    subprocess.run(["zip", "-q", "-0", "-s", "64k", "-r", "split/images.zip", "images"], cwd=tmp_path, check=True)
    segments = sorted((tmp_path / "split").glob("images.z[0-9]*")) + [tmp_path / "split" / "images.zip"]
    assert len(segments) >= 3
    with pytest.raises(zipfile.BadZipFile):  # what a user gets without joining
        zipfile.ZipFile(segments[-1]).read("images/0001.jpg")
    joined = dl.join_split_zip(segments, tmp_path / "all.zip")
    with zipfile.ZipFile(joined) as z:
        assert z.testzip() is None
        assert {Path(n).name: z.read(n) for n in z.namelist() if n.endswith(".jpg")} == contents


# ---- `membench data download` end to end -----------------------------------------------------


def _lamem_tarball(demo_root) -> bytes:
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w:gz") as t:
        t.add(demo_root / "images", arcname="lamem/images")
        t.add(demo_root / "splits", arcname="lamem/splits")
    return buf.getvalue()


def test_data_download_lamem_from_a_mirror_unpacks_and_checks(server, tmp_path, demo_root, run_cli):
    base, h = server
    h.files["/lamem.tar.gz"] = _lamem_tarball(demo_root)
    h.cut_after["/lamem.tar.gz"] = 20_000  # interrupted once, resumed in the same call
    code, out, err = run_cli("data", "download", "lamem", "--to", tmp_path / "lamem", "--mirror", base)
    assert code == 0, err
    assert len(list((tmp_path / "lamem" / "images").iterdir())) == len(list((demo_root / "images").iterdir()))
    assert (tmp_path / "lamem" / "splits" / "test_5.txt").read_bytes() == (demo_root / "splits" / "test_5.txt").read_bytes()
    assert "no problems found" in out and "membench run" in out
    assert not (tmp_path / "lamem" / ".downloads").exists()  # archive removed after unpacking
    assert ("/lamem.tar.gz", "bytes=20000-") in h.requests


def test_data_download_offline_names_every_url(tmp_path, run_cli, monkeypatch):
    monkeypatch.setenv(dl.OFFLINE_ENV, "1")
    code, out, err = run_cli("data", "download", "lnsim", "--to", tmp_path / "lnsim")
    assert code == 2 and err.count("\n") == 1
    assert "raw.githubusercontent.com/JiaxinLu-home/Natural-Scene-Memorability-Dataset" in err
    assert str(tmp_path / "lnsim") in err


# ---- weights through torch's hub cache -------------------------------------------------------


def test_weights_are_downloaded_into_the_hub_cache_and_hash_checked(server, tmp_path, monkeypatch):
    import torch

    from membench.weights import resolve as weights

    base, h = server
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch"))
    buf = io.BytesIO()
    torch.save({"w": torch.arange(6.0)}, buf)
    data = buf.getvalue()
    name = f"tiny-{hashlib.sha256(data).hexdigest()[:8]}.pth"
    h.files[f"/{name}"] = data
    path = weights.resolve_file(name, "Tiny", url=f"{base}/{name}")
    assert path == tmp_path / "torch" / "hub" / "checkpoints" / name
    assert torch.equal(weights.load_state_dict(path)["w"], torch.arange(6.0))
    h.files["/tiny-00000000.pth"] = data  # the name promises another content
    with pytest.raises(MembenchError, match="Tiny weights: download of .* refused: its sha256"):
        weights.resolve_file("tiny-00000000.pth", "Tiny", url=f"{base}/tiny-00000000.pth")
    assert not (tmp_path / "torch" / "hub" / "checkpoints" / "tiny-00000000.pth").exists()


def test_imagenet_weights_offline_name_the_url_and_the_cache_in_one_line(tmp_path, monkeypatch):
    from torchvision.models import ResNet50_Weights

    from membench.errors import WeightsUnavailable
    from membench.weights import resolve as weights

    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch"))
    monkeypatch.setenv(dl.OFFLINE_ENV, "1")
    with pytest.raises(WeightsUnavailable) as err:
        weights.torchvision_weights("resnet50")
    msg = str(err.value)
    assert ResNet50_Weights.IMAGENET1K_V1.url in msg and str(tmp_path / "torch" / "hub" / "checkpoints") in msg
    assert "--pretrained none" in msg and "\n" not in msg


@pytest.mark.skipif(shutil.which("zip") is None, reason="needs Info-ZIP's zip to make a split archive")
def test_data_download_lnsim_joins_the_split_zip_verifies_and_checks(server, tmp_path, run_cli, monkeypatch):
    from test_datasets import make_lnsim, write_jpeg

    from membench.commands.data import download as data_download

    base, h = server
    src = tmp_path / "release"
    make_lnsim(src)
    for p in sorted((src / "Image_data").iterdir()):  # photos large enough for a 2-part split zip
        write_jpeg(p, seed=int(p.stem), size=(160, 120))
    total = sum(p.stat().st_size for p in (src / "Image_data").iterdir())
    (tmp_path / "mirror").mkdir()
    part = max(64, int(total * 0.6) // 1024)
    subprocess.run(["zip", "-q", "-0", "-s", f"{part}k", "-r", str(tmp_path / "mirror" / "images.zip"), "Image_data"],
                   cwd=src, check=True)
    for mat in (src / "Random_splits").iterdir():
        shutil.copy(mat, tmp_path / "mirror" / mat.name)
    served = sorted((tmp_path / "mirror").iterdir())
    assert [p.name for p in served] == ["images.z01", "images.zip", "subject_hrs1.mat", "subject_hrs2.mat"]
    for p in served:
        h.files[f"/{p.name}"] = p.read_bytes()
    # the real sources, with the git object ids of these files in place of the release's
    what, sources = data_download.SOURCES["lnsim"]
    ids = {p.name: dl.git_blob_id(p) for p in served}
    monkeypatch.setitem(data_download.SOURCES, "lnsim",
                        (what, tuple(data_download.Source(s.url, ids[s.file_name]) for s in sources)))
    code, out, err = run_cli("data", "download", "lnsim", "--to", tmp_path / "lnsim", "--mirror", base)
    assert code == 0, err
    for p in (src / "Image_data").iterdir():
        assert (tmp_path / "lnsim" / "Image_data" / p.name).read_bytes() == p.read_bytes()
    assert (tmp_path / "lnsim" / "Random_splits" / "subject_hrs2.mat").is_file()
    assert "no problems found" in out and "human consistency" in out and "--dataset lnsim" in out
    # run again: already installed, nothing downloaded twice
    n = len(h.requests)
    assert run_cli("data", "download", "lnsim", "--to", tmp_path / "lnsim", "--mirror", base)[0] == 0
    assert len(h.requests) == n


def test_extract_refuses_a_tar_member_outside_the_target(tmp_path):
    archive = tmp_path / "evil.tar.gz"
    with tarfile.open(archive, "w:gz") as t:
        info = tarfile.TarInfo("../outside.txt")
        info.size = 1
        t.addfile(info, io.BytesIO(b"x"))
    with pytest.raises(MembenchError, match="outside the target"):
        dl.extract(archive, tmp_path / "into")
    assert not (tmp_path / "outside.txt").exists() and not (tmp_path / "into").exists()


def test_ctrl_c_during_a_download_says_how_to_resume(server, tmp_path, demo_root, run_cli, monkeypatch):
    base, h = server
    h.files["/lamem.tar.gz"] = _lamem_tarball(demo_root)
    real = dl._fetch

    def interrupted(url, part, progress, limits):
        part.parent.mkdir(parents=True, exist_ok=True)
        part.write_bytes(h.files["/lamem.tar.gz"][:5000])
        raise KeyboardInterrupt

    monkeypatch.setattr(dl, "_fetch", interrupted)
    code, _, err = run_cli("data", "download", "lamem", "--to", tmp_path / "lamem", "--mirror", base)
    assert code == 130 and "run the same command again to resume the download" in err and "--resume" not in err
    monkeypatch.setattr(dl, "_fetch", real)
    code, _, err = run_cli("data", "download", "lamem", "--to", tmp_path / "lamem", "--mirror", base, "--no-progress")
    assert code == 0, err
    assert h.requests == [("/lamem.tar.gz", "bytes=5000-")]


def zipped(members: dict[str, bytes]) -> bytes:
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as z:
        for name, data in members.items():
            z.writestr(name, data)
    return buf.getvalue()


def test_data_download_coco_unpacks_the_captioner_layout_and_checks_karpathy(server, tmp_path, run_cli):
    import json

    base, h = server
    images = [{"filepath": part, "filename": f"COCO_{part}_{i:012d}.jpg", "split": split}
              for part, split in (("train2014", "train"), ("val2014", "val")) for i in range(3)]
    h.files["/train2014.zip"] = zipped({f"train2014/{im['filename']}": b"jpg" for im in images[:3]})
    h.files["/val2014.zip"] = zipped({f"val2014/{im['filename']}": b"jpg" for im in images[3:5]})  # one missing
    h.files["/annotations_trainval2014.zip"] = zipped({"annotations/captions_train2014.json": b"{}"})
    h.files["/caption_datasets.zip"] = zipped({"dataset_coco.json": json.dumps({"images": images}).encode()})
    code, out, err = run_cli("data", "download", "coco", "--to", tmp_path / "coco", "--mirror", base, "--no-progress")
    assert code == 1, err  # the check ran and found the image the archive lacks
    assert "5 of 6 images of Karpathy's split found" in out and "COCO_val2014_000000000002.jpg" in out
    assert (tmp_path / "coco" / "annotations" / "captions_train2014.json").is_file()
    assert f"membench captioner train --coco {tmp_path / 'coco'} --karpathy" in out
