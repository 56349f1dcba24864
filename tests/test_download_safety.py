"""Downloads and archives as an attacker (or a bad network) would serve them, against a
local HTTP server on 127.0.0.1: a chunked transfer cut off, a web page in place of the
file, a server that trickles, two downloads at once, archives with symlinks, bombs and
files that would overwrite the user's own. Each case ends in one line naming the URL or
the file, and nothing of the user's is overwritten or deleted."""

from __future__ import annotations

import hashlib
import io
import os
import tarfile
import threading
import time
import zipfile
from pathlib import Path

import pytest
from test_downloads import online, server  # noqa: F401 (fixtures: a local HTTP server, no offline flag)

from membench.data import download as dl
from membench.errors import MembenchError

PAYLOAD = os.urandom(200_000)
SHA = hashlib.sha256(PAYLOAD).hexdigest()


def one_line(exc: BaseException) -> str:
    text = str(exc)
    assert "\n" not in text
    return text


# ---- transfers -------------------------------------------------------------------------------


def test_a_chunked_transfer_cut_off_keeps_its_bytes_and_says_a_rerun_resumes(server, tmp_path):
    base, h = server
    h.files["/a.bin"] = PAYLOAD
    h.chunked.add("/a.bin")
    h.cut_after["/a.bin"] = 50_000  # inside the 13th chunk
    url = f"{base}/a.bin"
    with pytest.raises(dl.DownloadError) as err:
        dl.download(url, tmp_path / "a.bin", sha256=SHA, progress=False, retries=0)
    msg = one_line(err.value)
    assert url in msg and "run the same command again to resume" in msg
    part = tmp_path / "a.bin.part"
    assert part.stat().st_size == 50_000 and part.read_bytes() == PAYLOAD[:50_000]
    assert dl.download(url, tmp_path / "a.bin", sha256=SHA, progress=False).read_bytes() == PAYLOAD
    assert h.requests[-1] == ("/a.bin", "bytes=50000-")


def test_a_chunked_transfer_cut_off_is_resumed_within_one_call(server, tmp_path):
    base, h = server
    h.files["/a.bin"] = PAYLOAD
    h.chunked.add("/a.bin")
    h.cut_after["/a.bin"] = 10_000
    assert dl.download(f"{base}/a.bin", tmp_path / "a.bin", sha256=SHA, progress=False).read_bytes() == PAYLOAD
    assert [r for _, r in h.requests] == [None, "bytes=10000-"]


def test_a_trickling_server_times_out_with_one_line_naming_the_url(server, tmp_path):
    base, h = server
    h.files["/slow.bin"] = PAYLOAD[:4000]
    h.trickle["/slow.bin"] = (10, 0.05)  # 200 bytes/s: would take 20 s
    url = f"{base}/slow.bin"
    started = time.monotonic()
    with pytest.raises(dl.DownloadError) as err:
        dl.download(url, tmp_path / "slow.bin", progress=False, min_rate=1000, rate_window=0.5)
    assert time.monotonic() - started < 5
    msg = one_line(err.value)
    assert url in msg and "slower than" in msg and "run the same command again to resume" in msg
    assert 0 < (tmp_path / "slow.bin.part").stat().st_size < 4000  # kept for a resume


def test_a_web_page_in_place_of_the_file_is_refused_and_not_kept(server, tmp_path):
    base, h = server
    h.files["/w.zip"] = b"<!DOCTYPE html>\n<html><body>Sign in to continue</body></html>\n"
    with pytest.raises(dl.DownloadError) as err:
        dl.download(f"{base}/w.zip", tmp_path / "w.zip", progress=False)
    assert f"{base}/w.zip" in one_line(err.value) and "web page" in str(err.value)
    assert not (tmp_path / "w.zip").exists() and not (tmp_path / "w.zip.part").exists()


def test_a_download_of_its_own_that_fails_its_check_is_fetched_again(server, tmp_path):
    base, h = server
    h.files["/a.bin"] = PAYLOAD[:1000]  # the source had another version
    dest = dl.download(f"{base}/a.bin", tmp_path / "a.bin", progress=False)
    h.files["/a.bin"] = PAYLOAD
    assert dl.download(f"{base}/a.bin", dest, sha256=SHA, progress=False).read_bytes() == PAYLOAD
    # a file of the user's in the same place is left alone
    (tmp_path / "b.bin").write_bytes(b"mine")
    with pytest.raises(MembenchError, match="already exists but its sha256"):
        dl.download(f"{base}/a.bin", tmp_path / "b.bin", sha256=SHA, progress=False)
    assert (tmp_path / "b.bin").read_bytes() == b"mine"


def test_another_url_for_the_same_file_starts_over(server, tmp_path):
    base, h = server
    h.files["/old/a.bin"], h.files["/new/a.bin"] = b"old version", PAYLOAD
    dest = dl.download(f"{base}/old/a.bin", tmp_path / "a.bin", progress=False)
    assert dl.download(f"{base}/old/a.bin", dest, progress=False).read_bytes() == b"old version"
    assert dl.download(f"{base}/new/a.bin", dest, progress=False).read_bytes() == PAYLOAD
    # a file put there by hand is the user's: used as it is (no checksum to say otherwise)
    (tmp_path / "c.bin").write_bytes(b"by hand")
    assert dl.download(f"{base}/new/a.bin", tmp_path / "c.bin", progress=False).read_bytes() == b"by hand"


def test_two_downloads_of_one_file_do_not_collide(server, tmp_path):
    base, h = server
    h.files["/a.bin"] = PAYLOAD[:3000]
    h.trickle["/a.bin"] = (500, 0.1)  # about 0.6 s
    url, dest = f"{base}/a.bin", tmp_path / "a.bin"
    results, errors = [], []

    def fetch():
        try:
            results.append(dl.download(url, dest, progress=False).read_bytes())
        except Exception as exc:  # noqa: BLE001 (reported below)
            errors.append(exc)

    threads = [threading.Thread(target=fetch) for _ in range(2)]
    threads[0].start()
    time.sleep(0.2)
    threads[1].start()
    for t in threads:
        t.join(30)
    assert not errors and results == [PAYLOAD[:3000]] * 2
    assert len(h.requests) == 1  # the second waited, then found the file


def test_offline_names_the_url_and_where_to_put_the_file_for_every_source(tmp_path, monkeypatch, run_cli):
    """`weights fetch` of a Google Drive release (AMNet), of a plain URL and `data download`."""
    monkeypatch.setenv(dl.OFFLINE_ENV, "1")
    from membench_plugins.models.amnet import RELEASE_URL

    code, out, err = run_cli("weights", "fetch", "amnet", "--dir", tmp_path / "dl")
    assert code == 2 and err.count("\n") == 1
    assert RELEASE_URL in err and str(tmp_path / "dl" / "lamem_ResNet50FC_lstm3.zip") in err
    code, out, err = run_cli("weights", "fetch", "amnet", "--dir", tmp_path / "dl", "--url", "http://127.0.0.1:9/a.zip")
    assert code == 2 and err.count("\n") == 1 and "http://127.0.0.1:9/a.zip" in err
    code, out, err = run_cli("data", "download", "coco", "--to", tmp_path / "coco")
    assert code == 2 and err.count("\n") == 1
    assert "http://images.cocodataset.org/zips/train2014.zip" in err and str(tmp_path / "coco" / ".downloads") in err


# ---- archives --------------------------------------------------------------------------------


def tar_bytes(members: list[tarfile.TarInfo | tuple[str, bytes]]) -> bytes:
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w:gz") as t:
        for m in members:
            if isinstance(m, tarfile.TarInfo):
                t.addfile(m)
            else:
                info = tarfile.TarInfo(m[0])
                info.size = len(m[1])
                t.addfile(info, io.BytesIO(m[1]))
    return buf.getvalue()


def symlink(name: str, target: str) -> tarfile.TarInfo:
    info = tarfile.TarInfo(name)
    info.type, info.linkname = tarfile.SYMTYPE, target
    return info


def test_extract_refuses_symlinks_even_inside_the_target(tmp_path):
    archive = tmp_path / "links.tar.gz"
    archive.write_bytes(tar_bytes([("top/images/a.jpg", b"jpg"), symlink("top/images/b.jpg", "a.jpg")]))
    with pytest.raises(MembenchError) as err:
        dl.extract(archive, tmp_path / "into")
    assert "top/images/b.jpg" in one_line(err.value) and "link" in str(err.value)
    assert not (tmp_path / "into").exists()


def test_data_download_lamem_with_a_symlink_out_of_the_layout_points_nowhere_outside(
        server, tmp_path, demo_root, run_cli):
    """The link resolves inside the staging folder at unpack time, and would point outside
    --to once lamem/ is moved there."""
    base, h = server
    outside = tmp_path / "outside.txt"
    outside.write_text("secret")
    (tmp_path / "to").mkdir()
    members = [(f"lamem/images/{p.name}", p.read_bytes()) for p in sorted((demo_root / "images").iterdir())]
    members += [(f"lamem/splits/{p.name}", p.read_bytes()) for p in sorted((demo_root / "splits").iterdir())]
    members += [("other/x.txt", b"x"), symlink("lamem/images/zz_link.jpg", "../../other/x.txt")]
    h.files["/lamem.tar.gz"] = tar_bytes(members)
    code, out, err = run_cli("data", "download", "lamem", "--to", tmp_path / "to", "--mirror", base, "--no-progress")
    assert code == 2 and "Traceback" not in err
    error, = [line for line in err.splitlines() if line.startswith("membench: error:")]
    assert "lamem/images/zz_link.jpg" in error
    escaped = [p for p in (tmp_path / "to").rglob("*") if p.is_symlink()
               and not p.resolve().is_relative_to((tmp_path / "to").resolve())]
    assert escaped == []


def zip_of_zeros(path: Path, n: int) -> Path:
    with zipfile.ZipFile(path, "w", compression=zipfile.ZIP_DEFLATED) as z:
        z.writestr("zeros.bin", b"\0" * n)
    return path


def test_extract_refuses_an_archive_that_unpacks_far_beyond_its_size(tmp_path, monkeypatch):
    from membench.data import archives

    monkeypatch.setattr(archives, "UNPACK_FLOOR", 0)
    bomb = zip_of_zeros(tmp_path / "bomb.zip", 4 << 20)  # 4 MB of zeros in about 4 kB
    with pytest.raises(MembenchError) as err:
        dl.extract(bomb, tmp_path / "into")
    assert str(bomb) in one_line(err.value) and "times the archive's size" in str(err.value)
    assert not (tmp_path / "into").exists()
    tar_bomb = tmp_path / "bomb.tar.gz"
    tar_bomb.write_bytes(tar_bytes([("a.bin", b"\0" * (2 << 20)), ("b.bin", b"\0" * (2 << 20))]))
    with pytest.raises(MembenchError, match="times the archive's size"):
        dl.extract(tar_bomb, tmp_path / "into")
    assert not (tmp_path / "into").exists() and not list(tmp_path.glob(".into.*"))
    assert dl.extract(bomb, tmp_path / "into", max_size=5 << 20) == tmp_path / "into"  # a limit given


def test_extract_refuses_an_archive_larger_than_the_free_disk(tmp_path, monkeypatch):
    import shutil
    from collections import namedtuple

    usage = namedtuple("usage", "total used free")
    monkeypatch.setattr(shutil, "disk_usage", lambda path: usage(10**6, 10**6 - 1000, 1000))
    archive = zip_of_zeros(tmp_path / "a.zip", 5000)
    with pytest.raises(MembenchError, match="only 1,000 bytes free"):
        dl.extract(archive, tmp_path / "into")


def coco_zips(h, images):
    import json

    from test_downloads import zipped

    h.files["/train2014.zip"] = zipped({f"{im['filepath']}/{im['filename']}": b"jpg" for im in images
                                        if im["filepath"] == "train2014"})
    h.files["/val2014.zip"] = zipped({f"{im['filepath']}/{im['filename']}": b"jpg" for im in images
                                      if im["filepath"] == "val2014"})
    h.files["/annotations_trainval2014.zip"] = zipped({"annotations/captions_train2014.json": b"{}"})
    h.files["/caption_datasets.zip"] = zipped({"dataset_coco.json": json.dumps({"images": images}).encode()})


COCO_IMAGES = [{"filepath": part, "filename": f"COCO_{part}_{i:012d}.jpg", "split": split}
               for part, split in (("train2014", "train"), ("val2014", "val")) for i in range(2)]


def test_data_download_coco_never_overwrites_the_users_files(server, tmp_path, run_cli):
    base, h = server
    coco_zips(h, COCO_IMAGES)
    to = tmp_path / "coco"
    (to / "annotations").mkdir(parents=True)
    mine = to / "annotations" / "captions_train2014.json"
    mine.write_text('{"my": "edits"}')
    code, out, err = run_cli("data", "download", "coco", "--to", to, "--mirror", base, "--no-progress")
    assert code == 2 and "Traceback" not in err
    error, = [line for line in err.splitlines() if line.startswith("membench: error:")]
    assert str(mine) in error and "did not create" in error
    assert mine.read_text() == '{"my": "edits"}'
    # the same bytes are no conflict: the file is kept as it is and the install completes
    mine.write_text("{}")
    code, out, err = run_cli("data", "download", "coco", "--to", to, "--mirror", base, "--no-progress")
    assert code == 0, err
    assert "4 of 4 images of Karpathy's split found" in out


def test_data_download_keeps_an_archive_put_in_place_by_hand(server, tmp_path, demo_root, run_cli):
    """The offline message says where to put the file; membench then must not delete it."""
    from test_downloads import _lamem_tarball

    base, h = server
    to = tmp_path / "lamem"
    (to / ".downloads").mkdir(parents=True)
    by_hand = to / ".downloads" / "lamem.tar.gz"
    by_hand.write_bytes(_lamem_tarball(demo_root))
    code, out, err = run_cli("data", "download", "lamem", "--to", to, "--mirror", base, "--no-progress")
    assert code == 0, err
    assert h.requests == [] and by_hand.is_file() and (to / "images").is_dir()


def test_two_data_downloads_into_one_directory_do_not_collide(server, tmp_path, demo_root, run_cli):
    """A second `data download` into the same --to, while the first (another process) is
    still downloading, refuses in one line; the first completes."""
    import subprocess
    import sys

    from test_downloads import _lamem_tarball

    base, h = server
    data = _lamem_tarball(demo_root)
    h.files["/lamem.tar.gz"] = data
    h.trickle["/lamem.tar.gz"] = (len(data) // 20 + 1, 0.1)  # about 2 s
    to = tmp_path / "lamem"
    env = {k: v for k, v in os.environ.items() if k != dl.OFFLINE_ENV}
    first = subprocess.Popen([sys.executable, "-m", "membench.cli", "data", "download", "lamem", "--to", str(to),
                              "--mirror", base, "--no-progress"], env=env, stdout=subprocess.PIPE,
                             stderr=subprocess.PIPE, text=True)
    deadline = time.monotonic() + 60
    while not h.requests and time.monotonic() < deadline:  # the first holds the directory now
        time.sleep(0.05)
    code, out, err = run_cli("data", "download", "lamem", "--to", to, "--mirror", base, "--no-progress")
    assert code == 2 and err.count("\n") == 1 and "another membench" in err and str(to) in err
    out, err = first.communicate(timeout=120)
    assert first.returncode == 0, err
    assert len(h.requests) == 1 and "no problems found" in out
    assert len(list((to / "images").iterdir())) == len(list((demo_root / "images").iterdir()))


def test_google_drive_downloads_stop_a_trickling_server_too(server, tmp_path, monkeypatch):
    """gdown does the transfer of Drive links; membench's rate limit still applies, also
    within a chunk of gdown's that never completes."""
    gdown = pytest.importorskip("gdown")
    import sys

    from membench.weights import released

    monkeypatch.setattr(sys.modules["gdown.download"], "CHUNK_SIZE", 2000)  # 10 s at this server's rate
    base, h = server
    h.files["/slow.zip"] = PAYLOAD[:4000]
    h.trickle["/slow.zip"] = (10, 0.05)
    monkeypatch.setattr(dl, "MIN_RATE", 1000)
    monkeypatch.setattr(dl, "RATE_WINDOW", 0.5)
    started = time.monotonic()
    with pytest.raises(dl.DownloadError) as err:
        released._fetch_drive(f"{base}/slow.zip", tmp_path / "slow.zip", None, False)
    assert time.monotonic() - started < 5
    assert f"{base}/slow.zip" in one_line(err.value) and "slower than" in str(err.value)


def test_a_refused_connection_is_unavailable_weights_not_a_refused_file(online, tmp_path, monkeypatch):
    """'Connection refused' (nothing listens) is a network failure: the one-line advice
    where to put the file, not the error of a downloaded file that failed its check."""
    import socket

    from membench.weights.resolve import resolve_file

    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch"))
    with socket.socket() as s:  # a port nothing listens on
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    with pytest.raises(MembenchError) as exc:
        resolve_file("toy-0123abcd.pth", "toy", url=f"http://127.0.0.1:{port}/toy-0123abcd.pth")
    text = one_line(exc.value)
    assert "not available offline" in text and "refused" in text and "--pretrained none" in text, text
    assert "weights: download of" not in text


def test_a_partial_download_that_is_a_link_is_refused_not_written_through(server, tmp_path):
    base, h = server
    h.files["/a.bin"] = PAYLOAD
    mine = tmp_path / "thesis.tex"
    mine.write_text("mine")
    (tmp_path / "dl").mkdir()
    (tmp_path / "dl" / "a.bin.part").symlink_to(mine)
    with pytest.raises(MembenchError) as err:
        dl.download(f"{base}/a.bin", tmp_path / "dl" / "a.bin", sha256=SHA, progress=False)
    assert "symbolic link" in one_line(err.value) and str(tmp_path / "dl" / "a.bin.part") in one_line(err.value)
    assert mine.read_text() == "mine" and h.requests == []


def test_data_download_never_writes_or_removes_through_a_linked_downloads_folder(server, tmp_path, demo_root,
                                                                                 run_cli):
    from test_downloads import _lamem_tarball

    base, h = server
    h.files["/lamem.tar.gz"] = _lamem_tarball(demo_root)
    elsewhere = tmp_path / "elsewhere"
    (elsewhere / "unpacked").mkdir(parents=True)
    (elsewhere / "unpacked" / "keep.txt").write_text("mine")
    to = tmp_path / "lamem"
    to.mkdir()
    (to / ".downloads").symlink_to(elsewhere)
    code, _, err = run_cli("data", "download", "lamem", "--to", to, "--mirror", base, "--no-progress")
    assert code == 2 and err.count("\n") == 1 and str(to / ".downloads") in err and "symbolic link" in err, err
    assert (elsewhere / "unpacked" / "keep.txt").read_text() == "mine" and h.requests == []


def test_an_amnet_archive_that_unpacks_far_beyond_its_size_is_refused(tmp_path, monkeypatch):
    """AMNet's reader reads its members into memory; a zip bomb named as a checkpoint stops at
    the same budget as every unpacked archive."""
    from membench.data import archives
    from membench_plugins.models.amnet import RELEASE_NAME, official_checkpoints

    monkeypatch.setattr(archives, "UNPACK_FLOOR", 0)
    bomb = tmp_path / "amnet.zip"
    with zipfile.ZipFile(bomb, "w", zipfile.ZIP_DEFLATED) as z:
        z.writestr(f"data/{RELEASE_NAME}_train_1/weights_1.pkl", b"\0" * (4 << 20))
    with pytest.raises(MembenchError, match="times the archive's size"):
        list(official_checkpoints(bomb))
