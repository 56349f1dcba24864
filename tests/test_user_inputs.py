"""Inputs as users save them: BOM and CRLF in split files and CSVs, 16-bit and float
images, EXIF rotation tags, decompression-bomb-sized images."""

from __future__ import annotations

import shutil
import struct
import zlib

import numpy as np
import pytest
from PIL import Image, ImageOps

from membench.data import images
from membench.data.layout import LamemLayout, read_split_file
from membench.errors import MembenchError


@pytest.fixture
def decoding(monkeypatch):
    """Each test starts from the default decoding settings and leaves them so (conftest
    registers the variables, so direct writes by set_decoding are undone too)."""
    return monkeypatch


def _excel(path):
    """Save a text file as Notepad/Excel do on Windows: UTF-8 BOM and CRLF line ends."""
    path.write_bytes(b"\xef\xbb\xbf" + path.read_text().replace("\n", "\r\n").encode())


# ---- split files and CSVs ---------------------------------------------------------------------


def test_split_file_with_bom_and_crlf_reads_like_the_plain_one(demo_root, tmp_path):
    root = tmp_path / "data"
    shutil.copytree(demo_root, root)
    plain = LamemLayout(root).load_split(1)
    for part in ("train", "val", "test"):
        _excel(root / "splits" / f"{part}_1.txt")
    assert LamemLayout(root).load_split(1) == plain
    assert LamemLayout(root).split_problems(1) == []


def test_split_file_with_bom_passes_data_check(demo_root, tmp_path, run_cli, decoding):
    root = tmp_path / "data"
    shutil.copytree(demo_root, root)
    _excel(root / "splits" / "train_1.txt")
    code, out, err = run_cli("data", "check", "--data", root, "--splits", "1")
    assert code == 0 and "no problems found" in out, out + err


def test_a_bom_in_the_middle_is_still_an_error_naming_the_line(tmp_path):
    (tmp_path / "images").mkdir()
    f = tmp_path / "train_1.txt"
    f.write_bytes(b"a.jpg 0.5\r\n\xef\xbb\xbfb.jpg 0.6\r\n")
    samples = read_split_file(f, tmp_path / "images")
    assert [s.name for s in samples] == ["a.jpg", "\ufeffb.jpg"]  # a real (odd) name, not a decoding slip


def test_csv_with_bom_and_crlf(tmp_path, decoding):
    from membench_plugins.datasets.csvdata import open_csv

    rng = np.random.default_rng(0)
    lines = ["Image,Score"]
    for i in range(30):
        Image.fromarray(rng.integers(0, 255, (8, 8, 3), dtype=np.uint8)).save(tmp_path / f"{i}.png")
        lines.append(f"{i}.png,{i / 30:.3f}")
    (tmp_path / "scores.csv").write_text("\n".join(lines) + "\n")
    _excel(tmp_path / "scores.csv")
    layout = open_csv(tmp_path)
    split = layout.load_split(1)
    assert len(split.train) + len(split.val) + len(split.test) == 30
    assert {s.name for s in split.train + split.val + split.test} == {f"{i}.png" for i in range(30)}


# ---- pixel formats ----------------------------------------------------------------------------


def test_16bit_grey_png_is_scaled_to_8_bits(tmp_path, decoding):
    a = np.linspace(0, 65535, 64 * 64).reshape(64, 64).astype(np.uint16)
    Image.fromarray(a).save(tmp_path / "g16.png")
    assert Image.open(tmp_path / "g16.png").mode.startswith("I")
    rgb = np.asarray(images.open_rgb(tmp_path / "g16.png"))
    want = np.rint(a.astype(np.float64) * 255 / 65535).astype(np.uint8)
    assert rgb.shape == (64, 64, 3) and (rgb[..., 0] == want).all() and (rgb[..., 2] == want).all()
    assert abs(rgb.mean() - 127.5) < 0.5  # PIL's own convert gives ~254 (almost all white)


def test_float_image_in_0_1_is_scaled_and_0_255_is_kept(tmp_path, decoding):
    a = np.linspace(0, 1, 32 * 32).reshape(32, 32).astype(np.float32)
    Image.fromarray(a).save(tmp_path / "f.tif")
    rgb = np.asarray(images.open_rgb(tmp_path / "f.tif"))
    assert (rgb[..., 1] == np.rint(a * 255).astype(np.uint8)).all()  # PIL's own convert: all black
    b = a * 255
    Image.fromarray(b).save(tmp_path / "f255.tif")
    assert (np.asarray(images.open_rgb(tmp_path / "f255.tif"))[..., 0] == np.rint(b).astype(np.uint8)).all()


def test_ordinary_modes_decode_as_before(tmp_path, decoding):
    rng = np.random.default_rng(1)
    rgb = rng.integers(0, 255, (16, 16, 3), dtype=np.uint8)
    Image.fromarray(rgb).save(tmp_path / "a.png")
    Image.fromarray(rgb).convert("L").save(tmp_path / "l.png")
    assert (np.asarray(images.open_rgb(tmp_path / "a.png")) == rgb).all()
    assert (np.asarray(images.open_rgb(tmp_path / "l.png"))
            == np.asarray(Image.open(tmp_path / "l.png").convert("RGB"))).all()


# ---- EXIF orientation -------------------------------------------------------------------------


def _rotated_jpeg(path, orientation=6):
    rng = np.random.default_rng(2)
    im = Image.fromarray(rng.integers(0, 255, (20, 40, 3), dtype=np.uint8))  # 40 wide, 20 high
    exif = Image.Exif()
    exif[0x0112] = orientation
    im.save(path, exif=exif, quality=95)
    return path


def test_exif_orientation_is_ignored_by_default_and_applied_on_request(tmp_path, decoding):
    path = _rotated_jpeg(tmp_path / "r.jpg")
    assert images.open_rgb(path).size == (40, 20)  # as the reference pipelines decode it
    images.set_decoding(exif_orientation="apply")
    assert images.decoding_settings() == {"exif_orientation": "apply"}
    applied = images.open_rgb(path)
    assert applied.size == (20, 40)
    assert (np.asarray(applied) == np.asarray(ImageOps.exif_transpose(Image.open(path)).convert("RGB"))).all()


def test_images_with_a_rotation_tag_are_counted_and_named_once(demo_root, tmp_path, run_cli, decoding):
    root = tmp_path / "data"
    shutil.copytree(demo_root, root)
    name = (root / "splits" / "test_1.txt").read_text().split()[0]
    target = root / "images" / name
    im = Image.open(target).convert("RGB")
    exif = Image.Exif()
    exif[0x0112] = 8
    im.save(target, format="JPEG", exif=exif)
    code, out, err = run_cli("data", "check", "--data", root, "--splits", "1")
    assert code == 0, err
    lines = [ln for ln in out.splitlines() if "EXIF rotation tag" in ln]
    assert len(lines) == 1 and lines[0].startswith("1 image(s)") and name in lines[0]
    assert "--exif-orientation apply" in lines[0] and "ignored" in lines[0]
    check = images.check_images([s for s in LamemLayout(root).load_split(1).test])
    assert check.rotated == [str(target)]


def test_exif_choice_is_checked(decoding):
    with pytest.raises(MembenchError, match="--exif-orientation must be one of ignore, apply"):
        images.set_decoding(exif_orientation="rotate")


# ---- decompression bombs ----------------------------------------------------------------------


def _png_header_only(path, width, height):
    """A PNG whose header claims width x height (the pixel data is never reached)."""
    def chunk(kind, data):
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    ihdr = struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0)
    path.write_bytes(b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", zlib.compress(b"\0" * 64))
                     + chunk(b"IEND", b""))
    return path


def test_a_200_megapixel_image_gets_its_own_message_and_a_way_to_allow_it(tmp_path, decoding):
    path = _png_header_only(tmp_path / "huge.png", 20_000, 10_000)
    mode, problem, _ = images.check_one(path)
    assert "image too large: 20000x10000 = 200,000,000 pixels" in problem
    assert "--max-image-pixels 200000000" in problem and "corrupt" not in problem
    with pytest.raises(MembenchError, match="image too large"):
        images.open_rgb(path)


def test_max_image_pixels_allows_a_trusted_image(tmp_path, run_cli, decoding):
    Image.fromarray(np.zeros((40, 40, 3), np.uint8)).save(tmp_path / "a.png")
    images.set_decoding(max_image_pixels=1000)
    assert "--max-image-pixels 1600" in images.check_one(tmp_path / "a.png")[1]
    images.set_decoding(max_image_pixels=1600)
    assert images.check_one(tmp_path / "a.png")[1] is None
    assert images.open_rgb(tmp_path / "a.png").size == (40, 40)


def test_applying_exif_orientation_is_its_own_job(demo_root, tmp_path, decoding):
    from membench import registry
    from membench.engine.job import RunConfig, job_key

    spec, data = registry.get_model("resnet50-lamem"), LamemLayout(demo_root)
    cfg = RunConfig(out=tmp_path / "lb", work_dir=tmp_path / "work", preset="smoke")
    ignored = job_key(spec, data, cfg)
    images.set_decoding(exif_orientation="ignore")
    assert job_key(spec, data, cfg) == ignored  # the default keeps the keys of earlier runs
    images.set_decoding(exif_orientation="apply")
    assert job_key(spec, data, cfg) != ignored
