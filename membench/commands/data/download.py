"""`membench data download NAME [--to DIR]`: fetch a dataset from its public source
(resumable, verified where the source publishes checksums; the sha256 of every file is
recorded in DIR/.membench-download.json), unpack it into the layout membench reads, then
run `data check` (or the captioner's equivalent for COCO). DIR defaults to the dataset's
installed location ($MEMBENCH_DATA/NAME, see membench.data.datasets). Datasets whose source
needs a hand step (a form, a password, a licence) get one line saying where to go, and
`membench data import` (membench/commands/data/importing.py) takes the download.

What each one is, and where it comes from:
- lamem: LaMem (Khosla et al., ICCV 2015), 60,000 images with memorability scores and the
  5 official train/val/test splits; one tarball from memorability.csail.mit.edu. The site
  publishes no checksum.
- lnsim: LNSIM (Lu et al., IEEE TIP 2020), 2,632 outdoor natural-scene images and the
  participants' split-half scores; from the authors' GitHub repository at a pinned commit,
  every file checked against the git object id that commit publishes. The images come as
  a split zip (images.z01 + images.zip), joined here as `zip -s-` would.
- sun: the SUN memorability dataset (Isola et al., CVPR 2011), 2,222 scenes, hit rates of
  two participant halves and the 25 published splits, images inside a .mat file; one zip
  from web.mit.edu/phillipi. No checksum published.
- coco: MS COCO 2014 train (about 13 GB) and val (about 6 GB) images, their caption
  annotations, and Karpathy's split file dataset_coco.json (Stanford); used only to train
  the captioner of `ours`. COCO publishes no checksums.
"""

from __future__ import annotations

import json
import shutil
from dataclasses import dataclass
from pathlib import Path

from membench.errors import MembenchError

LNSIM_REPO = "JiaxinLu-home/Natural-Scene-Memorability-Dataset"
LNSIM_COMMIT = "3795c0ba0c1193238e78a5ae14d537156bb2c861"  # images as images.z01 + images.zip
_LNSIM_RAW = f"https://raw.githubusercontent.com/{LNSIM_REPO}/{LNSIM_COMMIT}/"


@dataclass(frozen=True)
class Source:
    url: str
    git_blob_sha1: str | None = None
    sha256: str | None = None

    @property
    def file_name(self) -> str:
        return self.url.rsplit("/", 1)[1]


SOURCES: dict[str, tuple[str, tuple[Source, ...]]] = {
    "lamem": ("LaMem: 60,000 images, scores and the 5 official splits (Khosla et al., ICCV 2015)",
              (Source("http://memorability.csail.mit.edu/lamem.tar.gz"),)),
    "lnsim": ("LNSIM: 2,632 outdoor natural scenes with split-half scores (Lu et al., IEEE TIP 2020)",
              (Source(_LNSIM_RAW + "Image_data/images.z01", "a0bd99d58383ca0999ee709ea988dc26ea671e33"),
               Source(_LNSIM_RAW + "Image_data/images.zip", "da2b9054aa6a26edf97939ab9b5732821bc726af"),
               Source(_LNSIM_RAW + "Random_splits/subject_hrs1.mat", "3ca4fb17596c8057955f0655734ba2e962cf88b1"),
               Source(_LNSIM_RAW + "Random_splits/subject_hrs2.mat", "65cc69bc63e147f65f265a018604147144b23233"))),
    "sun": ("SUN memorability: 2,222 scenes, hit rates and the 25 published splits (Isola et al., CVPR 2011)",
            (Source("http://web.mit.edu/phillipi/Public/WhatMakesAnImageMemorable/cvpr_memorability_data.zip"),)),
    "coco": ("MS COCO 2014 images + captions and Karpathy's split, for training the captioner (~20 GB)",
             (Source("http://images.cocodataset.org/zips/train2014.zip"),
              Source("http://images.cocodataset.org/zips/val2014.zip"),
              Source("http://images.cocodataset.org/annotations/annotations_trainval2014.zip"),
              Source("https://cs.stanford.edu/people/karpathy/deepimagesent/caption_datasets.zip"))),
}
MARKER = ".membench-download.json"
LOCK = ".membench-download.lock"  # one install into a directory at a time
# Registered datasets whose source needs a hand step: `download` says where to go (the
# plugin's DatasetSpec.manual_download), `membench data import` takes what the user got.
MANUAL = ("figrim", "memcat", "things")


def add_parser(dsub) -> None:
    lines = "\n".join(f"  {name:6s} {what}" for name, (what, _) in SOURCES.items())
    import argparse

    names = sorted((*SOURCES, *MANUAL))
    d = dsub.add_parser(
        "download", help="download a dataset (lamem, lnsim, sun, coco), unpack it and check it",
        formatter_class=argparse.RawDescriptionHelpFormatter,
        description="Download a dataset from its public source, resumably (run the same command again "
                    "after an interruption), verified where the source publishes checksums, unpacked "
                    "into the layout membench reads, then checked.\n\n" + lines + "\n\n"
                    f"{', '.join(MANUAL)}: their sources need a hand step; this says where to go, then "
                    "`membench data import NAME FILE|DIR` takes the download.",
        epilog="example: membench data download lnsim --to /data/lnsim")
    d.add_argument("name", choices=names, metavar="NAME", help="one of: " + ", ".join(names))
    d.add_argument("--to", type=Path, metavar="DIR",
                   help="directory to install into (default: $MEMBENCH_DATA/NAME, i.e. $MEMBENCH_HOME/data/NAME)")
    d.add_argument("--mirror", metavar="URL",
                   help="fetch the same file names from this base URL instead (a local mirror)")
    d.add_argument("--keep-archives", action="store_true",
                   help="keep the downloaded archives in DIR/.downloads (default: removed once unpacked)")
    d.add_argument("--no-progress", action="store_true", help="no progress bars")
    d.set_defaults(func=cmd_download)


def cmd_download(args) -> int:
    from membench.data.datasets import data_home
    from membench.util.files import file_lock

    name = args.name
    if name not in SOURCES:
        from membench import registry

        raise MembenchError(f"{name} has no direct download: {registry.get_dataset(name).manual_download}; "
                            f"then `membench data import {name} FILE|DIR` (see `membench datasets`)")
    to = (args.to or data_home() / name).expanduser()

    def busy():
        raise MembenchError("another membench is installing a dataset into this directory: wait for it to "
                            "finish (or stop it), then run the same command again", to)

    with file_lock(to / LOCK, wait=False, on_busy=busy):
        return _download(args, to)


def _download(args, to: Path) -> int:
    from membench.data.download import download, file_sha256, remove_downloaded
    from membench.util.files import refuse_links

    name, marker = args.name, to / MARKER
    if marker.is_file():
        print(f"{name} is already installed in {to} (delete {marker} to install it again)")
        return check_installed(name, to)
    downloads = to / ".downloads"
    refuse_links(downloads / "unpacked", to)  # membench's own folders: never written or removed through a link
    files = []
    try:
        for src in SOURCES[name][1]:
            url = f"{args.mirror.rstrip('/')}/{src.file_name}" if args.mirror else src.url
            files.append(download(url, downloads / src.file_name, sha256=src.sha256, progress=not args.no_progress,
                                  git_blob_sha1=src.git_blob_sha1))
    except KeyboardInterrupt:  # the bytes so far stay in DIR/.downloads/*.part
        import sys

        print(f"membench: interrupted; run the same command again to resume the download ({downloads})",
              file=sys.stderr)
        return 130
    sha256 = {f.name: file_sha256(f) for f in files}  # what was installed, checkable later
    print(f"unpacking into {to}")
    _install(name, files, to, downloads)
    shutil.rmtree(downloads / "unpacked", ignore_errors=True)  # membench's staging folder
    if not args.keep_archives:
        for kept in remove_downloaded(downloads):
            print(f"kept {kept} (not downloaded by membench)")
    from membench.util.files import atomic_write_json

    atomic_write_json(marker, {"dataset": name, "sources": [s.url for s in SOURCES[name][1]],
                               "mirror": args.mirror, "sha256": sha256})
    return check_installed(name, to)


def _install(name: str, files: list[Path], to: Path, downloads: Path) -> None:
    """Unpack; an archive of membench's own that turns out damaged or unexpected is removed,
    so that the next run downloads it again instead of failing on it forever."""
    from membench.data.download import discard

    try:
        INSTALLERS[name](files, to, downloads)
    except MembenchError as exc:
        bad = next((f for f in files if exc.path == str(f)), None)
        if bad is not None and discard(bad):
            raise MembenchError(f"{exc.message} (the download was removed: run the same command again to "
                                "fetch it anew)", exc.path, exc.line) from None
        raise


# ---- unpacking into the layout each reader expects --------------------------------------------

def _install_lamem(files: list[Path], to: Path, downloads: Path) -> None:
    """ROOT/images/*.jpg and ROOT/splits/*.txt, whatever directory the tarball wraps them in."""
    from membench.data.archives import extract, move_tree

    staging = extract(files[0], downloads / "unpacked")
    root = _find_dir(staging, lambda d: (d / "images").is_dir() and (d / "splits").is_dir())
    if root is None:
        raise MembenchError("the archive holds no images/ and splits/ directories (has the source "
                            "changed?); unpack it by hand into the LaMem layout", files[0])
    move_tree(root, to)


def _install_lnsim(files: list[Path], to: Path, downloads: Path) -> None:
    """ROOT/Image_data/0001.jpg... and ROOT/Random_splits/subject_hrs{1,2}.mat."""
    from membench.data.archives import extract, install_files, join_split_zip

    z01, zip_, *mats = files
    joined = join_split_zip([z01, zip_], downloads / "images_all.zip")
    staging = extract(joined, downloads / "unpacked")
    joined.unlink()
    images = [(p, to / "Image_data" / p.name) for p in sorted(staging.rglob("*"))
              if p.is_file() and p.suffix.lower() in (".jpg", ".jpeg", ".png") and not p.name.startswith(".")]
    if not images:
        raise MembenchError("the joined archive holds no images (has the source changed?)", zip_)
    install_files(images, to)
    install_files([(m, to / "Random_splits" / m.name) for m in mats], to, copy=True)


def _install_coco(files: list[Path], to: Path, downloads: Path) -> None:
    """ROOT/train2014/, ROOT/val2014/, ROOT/annotations/captions_*2014.json and
    ROOT/dataset_coco.json (Karpathy's split, file paths relative to ROOT)."""
    from membench.data.archives import extract

    for f in files:
        extract(f, to)


def _install_sun(files: list[Path], to: Path, downloads: Path) -> None:
    """ROOT/Data/{Image data,Experiment data,Random splits}/, whatever folder the zip wraps them in."""
    from membench.data.archives import extract, move_tree

    staging = extract(files[0], downloads / "unpacked")
    root = _find_dir(staging, lambda d: (d / "Data" / "Random splits").is_dir())
    if root is None:
        raise MembenchError("the archive holds no Data/Random splits/ folder (has the source changed?); "
                            "unpack it by hand and use --dataset sun --data DIR", files[0])
    move_tree(root, to)


INSTALLERS = {"lamem": _install_lamem, "lnsim": _install_lnsim, "sun": _install_sun, "coco": _install_coco}


def _find_dir(top: Path, wanted, depth: int = 3) -> Path | None:
    if wanted(top):
        return top
    if depth == 0:
        return None
    for d in sorted(p for p in top.iterdir() if p.is_dir() and not p.is_symlink()):
        found = _find_dir(d, wanted, depth - 1)
        if found is not None:
            return found
    return None


# ---- the check at the end -------------------------------------------------------------------

def check_installed(name: str, to: Path) -> int:
    if name == "coco":
        return _check_coco(to)
    import argparse

    from membench.commands.data.check import cmd_check
    from membench.data.datasets import data_home

    dataset = None if name == "lamem" else name
    code = cmd_check(argparse.Namespace(data=str(to), dataset=dataset, dataset_option=[], splits="all"))
    if Path(to) == data_home() / name:  # the installed location: --dataset alone finds it
        print(f"next: membench run --model ours --splits all --dataset {name}")
    else:
        flag = "" if dataset is None else f" --dataset {dataset}"
        print(f"next: membench run --model ours --splits all --data {to}{flag}")
    return code


def _check_coco(to: Path) -> int:
    karpathy = to / "dataset_coco.json"
    problems = [f"missing {p}" for p in (to / "train2014", to / "val2014", karpathy) if not p.exists()]
    if not problems:
        try:
            images = json.loads(karpathy.read_text())["images"]
        except (OSError, ValueError, KeyError) as exc:
            raise MembenchError(f"cannot read Karpathy's split file ({exc})", karpathy) from None
        missing = [i for i in images if not (to / i["filepath"] / i["filename"]).is_file()]
        print(f"{len(images) - len(missing):,} of {len(images):,} images of Karpathy's split found")
        problems += [f"missing image {to / i['filepath'] / i['filename']}" for i in missing[:10]]
    for line in problems:
        print(f"problem: {line}")
    print(f"{len(problems)} problem(s) found" if problems else "no problems found")
    print(f"next: membench captioner train --coco {to} --karpathy {karpathy}")
    return 1 if problems else 0
