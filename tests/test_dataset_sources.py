"""Getting the field's datasets: `membench data download sun` against a 127.0.0.1 server
serving a replica of cvpr_memorability_data.zip (a broken connection resumed, a wrong hash
refused, an HTML page instead of the archive refused), the hand-step datasets' one line,
and `membench data import` of an archive, files and a folder."""

from __future__ import annotations

import hashlib
import io
import json
import tarfile
import zipfile
from pathlib import Path

import pytest
from test_downloads import server  # noqa: F401  (the 127.0.0.1 server fixture)

import replicas
from membench.commands.data import download as data_download
from membench.data import download as dl


@pytest.fixture
def data_home(tmp_path, monkeypatch):
    monkeypatch.delenv(dl.OFFLINE_ENV, raising=False)
    monkeypatch.setenv("MEMBENCH_DATA", str(tmp_path / "data"))
    return tmp_path / "data"


def zipped(root: Path, under: str = "") -> bytes:
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as z:
        for p in sorted(root.rglob("*")):
            if p.is_file():
                z.write(p, f"{under}{p.relative_to(root)}")
    return buf.getvalue()


@pytest.fixture
def sun_zip(tmp_path):
    replicas.make_sun(tmp_path / "release", n_images=40, n_splits=3)
    return zipped(tmp_path / "release", under="cvpr_memorability_data/")


def with_sha256(monkeypatch, digest: str) -> None:
    what, (source,) = data_download.SOURCES["sun"]
    monkeypatch.setitem(data_download.SOURCES, "sun", (what, (data_download.Source(source.url, sha256=digest),)))


def test_download_sun_resumes_a_broken_connection_unpacks_and_checks(server, data_home, sun_zip, run_cli,  # noqa: F811
                                                                     monkeypatch):
    base, h = server
    h.files["/cvpr_memorability_data.zip"] = sun_zip
    h.cut_after["/cvpr_memorability_data.zip"] = len(sun_zip) // 3  # the connection breaks once
    with_sha256(monkeypatch, hashlib.sha256(sun_zip).hexdigest())
    code, out, err = run_cli("data", "download", "sun", "--mirror", base, "--no-progress")
    assert code == 0, err
    assert ("/cvpr_memorability_data.zip", f"bytes={len(sun_zip) // 3}-") in h.requests
    assert (data_home / "sun" / "Data" / "Random splits" / "subject_hrs1.mat").is_file()
    assert "no problems found" in out and "human consistency (split-half rank correlation)" in out
    marker = json.loads((data_home / "sun" / data_download.MARKER).read_text())
    assert marker["sha256"] == {"cvpr_memorability_data.zip": hashlib.sha256(sun_zip).hexdigest()}
    assert not (data_home / "sun" / ".downloads").exists()
    code, out, _ = run_cli("datasets")
    assert f"installed          {data_home / 'sun'}" in out


def test_download_sun_with_a_wrong_hash_installs_nothing(server, data_home, sun_zip, run_cli, monkeypatch):  # noqa: F811
    base, h = server
    h.files["/cvpr_memorability_data.zip"] = sun_zip
    with_sha256(monkeypatch, "0" * 64)
    code, out, err = run_cli("data", "download", "sun", "--mirror", base, "--no-progress")
    assert code == 2 and "refused: its sha256 is" in err and err.count("\n") == 1
    assert not (data_home / "sun" / "Data").exists() and not list(data_home.rglob("*.zip*"))


def test_download_sun_refuses_an_html_page_and_keeps_nothing_of_it(server, data_home, run_cli):  # noqa: F811
    base, h = server
    h.files["/cvpr_memorability_data.zip"] = b"<!DOCTYPE html>\n<html><body>Please log in</body></html>\n"
    code, out, err = run_cli("data", "download", "sun", "--mirror", base, "--no-progress")
    assert code == 2 and "refused: it is a web page, not the file" in err and err.count("\n") == 1
    assert not list(data_home.rglob("cvpr_memorability_data.zip*"))  # the next run downloads again
    h.files["/cvpr_memorability_data.zip"] = b"<html>still not it</html>"
    assert run_cli("data", "download", "sun", "--mirror", base, "--no-progress")[0] == 2
    assert len(h.requests) == 2


@pytest.mark.parametrize("name, where", [("memcat", "https://gestaltrevision.be/projects/memcat/"),
                                         ("things", "https://osf.io/jum2f/"), ("figrim", "http://figrim.mit.edu/")])
def test_a_source_with_a_hand_step_says_where_to_go_in_one_line(name, where, data_home, run_cli):
    code, out, err = run_cli("data", "download", name)
    assert code == 2 and err.count("\n") == 1 and where in err
    assert f"membench data import {name} FILE|DIR" in err and not data_home.exists()


def test_import_an_archive_into_the_default_location(tmp_path, data_home, run_cli):
    replicas.make_memcat(tmp_path / "release", n=30)
    archive = tmp_path / "MemCat.zip"
    archive.write_bytes(zipped(tmp_path / "release", under="MemCat/"))
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w:gz") as t:
        t.add(tmp_path / "release", arcname="MemCat")
    tarred = buf.getvalue()
    code, out, err = run_cli("data", "import", "memcat", archive)
    assert code == 0, err
    assert (data_home / "memcat" / "MemCat" / "MemCat_data" / "memcat_image_data.csv").is_file()
    assert "no problems found" in out and archive.is_file()  # the user's archive is kept
    marker = json.loads((data_home / "memcat" / ".membench-import.json").read_text())
    assert marker["sources"][0]["sha256"] == hashlib.sha256(archive.read_bytes()).hexdigest()
    code, out, err = run_cli("data", "check", "--dataset", "memcat")  # found without --data
    assert code == 0 and "│ 5     │ 21    │ 3   │ 6    │ ok" in out, err
    code, _, err = run_cli("data", "import", "memcat", archive)  # never over what is there
    assert code == 2 and "already holds files" in err
    for broken, data in (("damaged.tar.gz", b"\x1f\x8b" + b"\0" * 64), ("cut.tar.gz", tarred[:len(tarred) // 2])):
        (tmp_path / broken).write_bytes(data)  # nothing is left of a failed import
        code, _, err = run_cli("data", "import", "memcat", archive, tmp_path / broken, "--to", tmp_path / "elsewhere")
        assert code == 2 and broken in err and err.count("\n") == 1
        assert not (tmp_path / "elsewhere").exists() and not list(tmp_path.glob(".elsewhere*"))


def test_import_a_scores_file_and_an_image_folder(tmp_path, data_home, run_cli):
    replicas.make_things(tmp_path / "osf", n=30)
    images = tmp_path / "osf" / "object_images"
    code, out, err = run_cli("data", "import", "things", tmp_path / "osf" / "THINGS_Memorability_Scores.csv", images)
    assert code == 0, err
    assert (data_home / "things" / "object_images").resolve() == images  # linked, not copied
    assert (data_home / "things" / "THINGS_Memorability_Scores.csv").read_bytes() == \
        (tmp_path / "osf" / "THINGS_Memorability_Scores.csv").read_bytes()
    assert "no problems found" in out


def test_import_a_folder_links_it(tmp_path, data_home, run_cli):
    replicas.make_figrim(tmp_path / "figrim", n=30)
    code, out, err = run_cli("data", "import", "figrim", tmp_path / "figrim")
    assert code == 0, err
    assert (data_home / "figrim").is_symlink() and (data_home / "figrim").resolve() == tmp_path / "figrim"
    assert "nothing copied" in out and "no problems found" in out
    code, _, err = run_cli("data", "import", "figrim", tmp_path / "figrim")
    assert code == 2 and "already installed" in err


def test_import_refuses_an_html_page_saved_as_the_data_and_keeps_it(tmp_path, data_home, run_cli):
    page = tmp_path / "THINGS_Memorability_Scores.csv"
    page.write_text("<!doctype html><html><body>Sign in to OSF</body></html>")
    code, _, err = run_cli("data", "import", "things", page, "--to", tmp_path / "things")
    assert code == 2 and "is an HTML page, not the data" in err and str(page) in err
    assert page.is_file() and not (tmp_path / "things").exists() and not list(tmp_path.glob(".things*"))
    code, _, err = run_cli("data", "import", "nosuch", page)
    assert code == 2 and "unknown dataset 'nosuch'" in err
