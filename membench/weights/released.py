"""Authors' released weights: fetch or take the archive, convert it exactly, install it,
and find it when `membench run --train none` evaluates.

A plugin declares what its authors published as data (`ModelSpec.released_weights`, a
tuple of `spec.ReleasedWeights`); everything else is shared and lives here:

    $MEMBENCH_HOME/weights/<model>/<release>/
        manifest.json      archive name, sha256 and URL, licence, citation, one entry per
                           installed checkpoint with its sha256 and the archive member it came from
        split<k>.pt        one state_dict per split (per-split releases), or
        all.pt             one for every split

Import is all or nothing: the checkpoints are written into a temporary folder which
replaces the release folder only once every tensor has been checked against the model
(built on the meta device: no memory, no weights): no key missing, none unexpected,
every shape equal. The first difference is a one-line error naming the archive member.
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

from membench.errors import MembenchError, WeightsUnavailable
from membench.spec import ModelSpec, ReleasedWeights

MANIFEST = "manifest.json"
LABEL = "authors' weights"


def weights_root() -> Path:
    from membench.util.files import membench_home

    return membench_home() / "weights"


def release_dir(spec: ModelSpec, rw: ReleasedWeights) -> Path:
    return weights_root() / spec.name.replace("/", "_") / rw.name


def find_release(spec: ModelSpec, name: str | None = None) -> ReleasedWeights:
    """The declared release `name` (default: the first one, the paper's model)."""
    if not spec.released_weights:
        raise MembenchError(f"model {spec.name} declares no released weights (`membench weights list` "
                            "shows the models that do)")
    if name is None:
        return spec.released_weights[0]
    for rw in spec.released_weights:
        if rw.name == name:
            return rw
    raise MembenchError(f"model {spec.name} has no release {name!r}; it has: "
                        + ", ".join(rw.name for rw in spec.released_weights))


# ------------------------------------------------------------------------------ fetch

def is_google_drive(url: str) -> bool:
    from urllib.parse import urlparse

    return urlparse(url).hostname in ("drive.google.com", "docs.google.com", "drive.usercontent.google.com")


def drive_file_id(url: str) -> str | None:
    """The file id of a Google Drive share link (/file/d/<id>/view or ?id=<id>)."""
    import re
    from urllib.parse import parse_qs, urlparse

    if not is_google_drive(url):
        return None
    parsed = urlparse(url)
    match = re.match(r"^/file/(?:u/\d+/)?d/([-\w]+)", parsed.path)
    if match:
        return match.group(1)
    ids = parse_qs(parsed.query).get("id")
    return ids[0] if ids else None


def fetch(spec: ModelSpec, rw: ReleasedWeights, dest_dir: Path, url: str | None = None,
          progress: bool = True) -> Path:
    """Download the release archive into `dest_dir` (kept there, so a second run downloads
    nothing) with membench.data.download (resumable, checked; a download from another URL
    starts over). Google Drive links go through gdown (Drive asks to confirm large files)."""
    url = url or rw.url
    name = rw.archive or Path(url).name or f"{rw.name}.zip"
    dest = Path(dest_dir) / name
    if not url:
        where = f" from {rw.source}" if rw.source else ""
        raise MembenchError(f"the authors of {spec.name} give no direct download for {rw.name}: get "
                            f"{rw.archive or 'the archive'}{where}, then run `membench weights import "
                            f"{spec.name} FILE`")
    if is_google_drive(url):
        return _fetch_drive(url, dest, rw.sha256, progress)
    if not rw.files:
        return _download(url, dest, rw.sha256, progress)
    folder = Path(dest_dir) / rw.name  # the main file and the further ones, converted together
    _download(url, folder / name, rw.sha256, progress)
    for extra in rw.files:
        from membench.data.download import download

        download(extra.url, folder / extra.name, sha256=extra.sha256, git_blob_sha1=extra.git_blob_sha1,
                 progress=progress)
    return folder


def _download(url: str, dest: Path, sha256: str | None, progress: bool, transfer=None) -> Path:
    from membench.data.download import download

    return download(url, dest, sha256=sha256, progress=progress, transfer=transfer)


def local_copy(spec: ModelSpec, rw: ReleasedWeights, dest_dir: Path) -> Path | None:
    """The release as already downloaded into `dest_dir`, or its main file where the model's
    own package keeps it (torch's hub checkpoints directory: the `vitmem` package's
    download); None when neither is complete."""
    from membench.weights.resolve import hub_checkpoints_dir

    name = rw.archive or Path(rw.url).name
    if rw.files:
        folder = Path(dest_dir) / rw.name
        ready = all((folder / n).is_file() for n in (name, *(f.name for f in rw.files)))
        return folder if ready else None
    for place in (Path(dest_dir), hub_checkpoints_dir()):
        if name and (place / name).is_file():
            return place / name
    return None


def ensure(spec: ModelSpec, rw: ReleasedWeights, say=None) -> "Installed":
    """The installed release `rw`, installing it first: from a copy already downloaded, else
    by downloading it where its authors give a direct address and the network allows.
    Offline, one line names the address and where to put the file."""
    found = installed(spec, rw)
    if found is not None:
        return found
    dest_dir = weights_root().parent / "downloads"
    copy = local_copy(spec, rw, dest_dir)
    if copy is None and rw.url and not is_google_drive(rw.url):
        from membench.data.download import DownloadError, DownloadRefused
        from membench.weights.resolve import _reason

        try:
            copy = fetch(spec, rw, dest_dir)
        except DownloadRefused:  # downloaded, but not what was published
            raise
        except DownloadError as exc:
            target = dest_dir / (rw.name if rw.files else (rw.archive or Path(rw.url).name))
            raise WeightsUnavailable(
                f"{spec.name}: the authors' weights {rw.name} are not installed and cannot be downloaded "
                f"({_reason(exc.message)}): download {rw.url} to {target}"
                + (" (with " + ", ".join(f.url for f in rw.files) + " beside it)" if rw.files else "")
                + f", or run `membench weights import {spec.name} FILE`; or run with --pretrained none") from None
    if copy is None:
        raise _not_installed(spec, rw)
    import_archive(spec, copy, rw.name, say=say)
    return installed(spec, rw)


_loaded_by_builders: dict[str, str] = {}


def released_state(model: str, release: str | None = None) -> dict:
    """What a builder loads by default: the state_dict of `model`'s installed release (ensured
    first: downloaded on first use where the network allows)."""
    from membench import registry

    spec = registry.get_model(model)
    found = ensure(spec, find_release(spec, release))
    _loaded_by_builders[model] = found.label
    return found.state_dict(0)


def loaded_by_builder(model: str) -> str | None:
    """The label of the release a builder of `model` loaded in this process, if any."""
    return _loaded_by_builders.get(model)



def _fetch_drive(url: str, dest: Path, sha256: str | None, progress: bool) -> Path:
    return _download(url, dest, sha256, progress, transfer=_drive_transfer)


def _drive_transfer(url: str, part: Path, progress: bool) -> None:
    """gdown fills `part` (it resumes its own partial file and handles Drive's confirmation
    page); a server that goes silent or trickles is stopped as membench's own downloads are."""
    import threading

    from membench.data.download import DownloadError, by_hand

    dest = part.with_name(part.name.removesuffix(".part"))
    again = f"{by_hand(url, dest)}, then run this command again"
    try:
        import gdown
    except ImportError:
        raise MembenchError(f"downloading {url} from Google Drive needs gdown: pip install 'membench[weights]' "
                            f"(or {again})") from None
    watch = _RateWatch()
    file_id = drive_file_id(url)
    source = {"id": file_id} if file_id else {"url": url}
    timer = threading.Thread(target=watch.run, daemon=True)
    timer.start()
    try:
        got = gdown.download(output=str(part), quiet=not progress, resume=True, timeout=30, progress=watch.progress,
                             cancel=watch.cancel, **source)
    except Exception as exc:  # gdown raises its own types and requests'
        first = watch.reason or (str(exc).splitlines()[0] if str(exc) else type(exc).__name__)
        raise DownloadError(f"cannot download {url} ({first}); run the same command again to resume, or "
                            f"{again}") from None
    finally:
        watch.finished.set()
        timer.join()
    if not got or not part.is_file():
        raise DownloadError(f"cannot download {url} (Google Drive refused or changed its page); {again}")


class _RateWatch:
    """membench.data.download's minimum rate for gdown, which reports bytes only per chunk
    (512 KiB): checked at each report, and by a timer that stops a chunk taking longer than
    the minimum rate allows (gdown's `cancel` event)."""

    def __init__(self):
        import sys
        import threading
        import time

        from membench.data.download import MIN_RATE, RATE_WINDOW

        self.cancel, self.finished = threading.Event(), threading.Event()
        self.min_rate, self.window, self.reason = MIN_RATE, RATE_WINDOW, None
        chunk = getattr(sys.modules.get("gdown.download"), "CHUNK_SIZE", 512 << 10)
        self.silence = max(RATE_WINDOW, chunk / MIN_RATE)
        self.start = self.last = time.monotonic()
        self.start_bytes = 0

    def progress(self, done: int, total: int | None) -> None:
        import time

        self.last = now = time.monotonic()
        if now - self.start >= self.window:
            if done - self.start_bytes < self.min_rate * (now - self.start):
                self.stop(now - self.start)
            self.start, self.start_bytes = now, done

    def run(self) -> None:
        import time

        while not self.finished.wait(min(1.0, self.silence / 8)):
            if time.monotonic() - self.last > self.silence:
                self.stop(time.monotonic() - self.last)

    def stop(self, seconds: float) -> None:
        self.reason = self.reason or f"slower than {self.min_rate:,.0f} bytes/s for {seconds:.0f} s"
        self.cancel.set()


# ------------------------------------------------------------------------------ import

def expected_state(spec: ModelSpec, rw: ReleasedWeights | None = None) -> dict:
    """Every tensor of the model's state_dict (built on the meta device, with the release's
    options: shape and dtype), or of the part the release holds."""
    from membench.results.params import build_meta

    options = dict(rw.options) if rw else {}
    state = build_meta(spec, options).state_dict()
    prefix = f"{rw.part}." if rw and rw.part else ""
    return {k: v for k, v in state.items() if k.startswith(prefix)}


def check_exact(expected: dict, state: dict, where: str, model: str) -> None:
    """No key missing, none unexpected, every value a tensor of the same shape and kind
    (floating point where the model's is, else an integer), every value finite: else a
    one-line error naming the first difference (in the model's order) and where the tensors
    came from."""
    import torch

    from membench.weights.safe_load import check_values

    for key, want in expected.items():
        shape = tuple(want.shape)
        if key not in state:
            raise MembenchError(f"{key} {list(shape)} of {model} is missing from the converted weights", where)
        value = state[key]
        if not isinstance(value, torch.Tensor):
            raise MembenchError(f"{key} is a {type(value).__name__}, not a tensor", where)
        if tuple(value.shape) != shape:
            raise MembenchError(f"{key} has shape {list(value.shape)}, {model} needs {list(shape)}", where)
        _check_kind(key, value, want.is_floating_point(), where, model)
    for key in state:
        if key not in expected:
            raise MembenchError(f"unexpected tensor {key} (not part of {model})", where)
    check_values(state, where, like=expected)


def _check_kind(key: str, value, floating: bool, where: str, model: str) -> None:
    """Loading copies values into the model's own dtype: int8 weights would become
    quantised garbage without a word, a float step counter a silently rounded one."""
    import torch

    kind = str(value.dtype).removeprefix("torch.")
    if floating and not value.is_floating_point():
        raise MembenchError(f"{key} is {kind}, {model} needs floating point", where)
    if not floating and (value.is_floating_point() or value.is_complex() or value.dtype == torch.bool):
        raise MembenchError(f"{key} is {kind}, {model} needs an integer", where)


def import_archive(spec: ModelSpec, archive: Path, release: str | None = None, say=None) -> dict:
    """Convert `archive` (the downloaded file, or a folder holding its unpacked content)
    and install it; returns the manifest."""
    import torch

    from membench.data.download import file_sha256

    say = say or (lambda text: None)
    rw = find_release(spec, release)
    archive = Path(archive).expanduser()
    if not archive.exists():
        raise MembenchError("archive not found", archive)
    digest = file_sha256(archive) if archive.is_file() else None
    if rw.sha256 and digest and not digest.startswith(rw.sha256.lower()):
        raise MembenchError(f"sha256 is {digest}, the published {rw.name} archive has {rw.sha256}", archive)
    expected = expected_state(spec, rw)
    target = release_dir(spec, rw)
    _refuse_foreign(target)
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(dir=target.parent, prefix=f".{rw.name}.import."))
    entries: dict[str, dict] = {}
    try:
        for split, state, member in _converted(rw, archive):
            where = f"{archive}:{member}" if member else str(archive)
            if rw.per_split and not (isinstance(split, int) and split >= 1):
                raise MembenchError(f"{rw.name} is per split but no split number was found for {member}", archive)
            key = str(split) if rw.per_split else "all"
            if key in entries:
                raise MembenchError(f"two checkpoints for split {key} ({entries[key]['member']} and {member})", archive)
            check_exact(expected, state, where, spec.name)
            name = f"split{split}.pt" if rw.per_split else "all.pt"
            # plain writes: the folder only replaces the installed one once complete
            torch.save({k: state[k].contiguous() for k in expected}, tmp / name)
            del state
            entries[key] = {"file": name, "member": member, "sha256": file_sha256(tmp / name)}
            say(f"{spec.name}: {member or archive.name} -> {name} ({'split ' + key if rw.per_split else 'all splits'})")
        if not entries:
            raise MembenchError(f"no checkpoint of {rw.name} found ({rw.layout or 'see docs/models.md'})", archive)
        manifest = {
            "model": spec.name, "release": rw.name, "per_split": rw.per_split,
            "archive": {"name": archive.name, "sha256": digest, "url": rw.url, "published_sha256": rw.sha256,
                        **({"files": _file_digests(archive)} if archive.is_dir() else {})},
            "checkpoints": dict(sorted(entries.items())), "license": rw.license, "citation": rw.citation,
            "dataset": rw.dataset, "imported": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        }
        (tmp / MANIFEST).write_text(json.dumps(manifest, indent=2) + "\n")
        old = None
        if target.exists():
            old = target.with_name(f".{rw.name}.old.{os.getpid()}")
            os.replace(target, old)
        os.replace(tmp, target)
        if old is not None:
            shutil.rmtree(old, ignore_errors=True)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return manifest


def _refuse_foreign(target: Path) -> None:
    """An installed release is replaced by a new import; anything else there (a link, a
    folder without membench's manifest) is refused before any work, never removed."""
    from membench.util.files import refuse_links

    refuse_links(target, weights_root())
    if target.exists() and not (target / MANIFEST).is_file():
        raise MembenchError("membench did not install weights here (no manifest.json) and never removes what it "
                            "did not make: move it away, then import again", target)


def _converted(rw: ReleasedWeights, archive: Path):
    """The converter's (split, state_dict, member) triples; a damaged archive (bad CRC,
    truncated, not text where text was expected) is one line naming it, whichever plugin
    reads it."""
    import tarfile
    import zipfile
    import zlib

    try:
        yield from rw.converter()(archive)
    except (zipfile.BadZipFile, tarfile.TarError, EOFError, zlib.error, UnicodeDecodeError) as exc:
        raise MembenchError(f"cannot read the archive ({type(exc).__name__}: {exc}); a damaged or "
                            "incomplete copy?", archive) from None


def _file_digests(folder: Path) -> dict[str, str]:
    """sha256 of every file of an unpacked release folder (recorded: for a release whose authors
    publish no checksum, the first download's digest is the reference for later ones)."""
    from membench.data.download import file_sha256

    return {str(p.relative_to(folder)): file_sha256(p) for p in sorted(folder.rglob("*")) if p.is_file()}


# ------------------------------------------------------------------------------ use

@dataclass(frozen=True)
class Installed:
    spec: ModelSpec
    release: ReleasedWeights
    directory: Path
    manifest: dict

    @property
    def label(self) -> str:
        """What rows say about their weights, e.g. "authors' weights (lamem_ResNet50FC_lstm3)"."""
        return f"{LABEL} ({self.release.name})"

    @property
    def identity(self) -> dict:
        """What makes an evaluation with these weights a different job from another import."""
        return {"release": self.release.name, "archive_sha256": self.manifest["archive"].get("sha256"),
                "checkpoints": {k: v["sha256"] for k, v in self.manifest["checkpoints"].items()}}

    def splits(self) -> list[int] | None:
        """Splits with a checkpoint; None when one checkpoint serves every split."""
        if not self.manifest["per_split"]:
            return None
        return sorted(int(k) for k in self.manifest["checkpoints"])

    def checkpoint(self, split: int) -> tuple[Path, dict]:
        entries = self.manifest["checkpoints"]
        key = str(split) if self.manifest["per_split"] else "all"
        if key not in entries:
            raise MembenchError(f"the installed {self.release.name} weights of {self.spec.name} have no "
                                f"checkpoint for split {split} (they cover splits "
                                f"{', '.join(sorted(entries))})", self.directory)
        return self.directory / entries[key]["file"], entries[key]

    def state_dict(self, split: int) -> dict:
        """The checked state_dict for `split` (its sha256 is verified against the manifest;
        hashed once per process while its size and mtime stay, as the run JSON records it)."""
        from membench.weights.files_loaded import sha256_file
        from membench.weights.resolve import load_state_dict

        path, entry = self.checkpoint(split)
        if not path.is_file():
            raise MembenchError(f"installed checkpoint is missing; run `membench weights import "
                                f"{self.spec.name} ARCHIVE` again", path)
        if sha256_file(path) != entry["sha256"]:
            raise MembenchError(f"installed checkpoint is damaged (sha256 differs from {MANIFEST}); run "
                                f"`membench weights import {self.spec.name} ARCHIVE` again", path)
        return load_state_dict(path)

    def load_into(self, model, split: int) -> None:
        """Load the checked checkpoint into `model`: every tensor, or those of its `part`."""
        state = self.state_dict(split)
        if not self.release.part:
            model.load_state_dict(state)
            return
        prefix = f"{self.release.part}."
        model.get_submodule(self.release.part).load_state_dict({k[len(prefix):]: v for k, v in state.items()})

    def provenance(self, split: int) -> dict:
        path, entry = self.checkpoint(split)
        return {"label": self.label, "release": self.release.name, "checkpoint": str(path),
                "sha256": entry["sha256"], "archive_member": entry["member"],
                "archive": self.manifest["archive"], "license": self.manifest.get("license"),
                "citation": self.manifest.get("citation")}


def installed(spec: ModelSpec, only: ReleasedWeights | None = None) -> Installed | None:
    """The first declared release that is installed (or `only` if it is), or None."""
    for rw in (only,) if only else spec.released_weights:
        directory = release_dir(spec, rw)
        path = directory / MANIFEST
        if path.is_file():
            try:
                manifest = json.loads(path.read_text())
            except (OSError, ValueError) as exc:
                raise MembenchError(f"cannot read ({exc}); run `membench weights import` again", path) from None
            return Installed(spec, rw, directory, manifest)
    return None


def for_evaluation(spec: ModelSpec) -> Installed | None:
    """What `--train none` (without --checkpoint) evaluates for a model that declares
    released weights: the installed ones, or an error saying how to install them (its
    own initial weights would be an untrained head). None for models that declare none."""
    if not spec.released_weights:
        return None
    found = installed(spec)
    if found is not None:
        return found
    rw = default_release(spec)
    if rw.url and not is_google_drive(rw.url):
        return ensure(spec, rw)  # a direct address: fetched on first use where the network allows
    raise _not_installed(spec, rw)


def default_release(spec: ModelSpec) -> ReleasedWeights:
    """What an evaluation uses when nothing is installed: the first release with a direct
    address (fetched on first use), else the first declared."""
    direct = [rw for rw in spec.released_weights if rw.url and not is_google_drive(rw.url)]
    return (direct or list(spec.released_weights))[0]


def _not_installed(spec: ModelSpec, rw: ReleasedWeights) -> WeightsUnavailable:
    how = (f"`membench weights fetch {spec.name}`" if rw.url else
           f"get {rw.archive or 'the archive'} from {rw.source or 'its authors'}")
    return WeightsUnavailable(
        f"the authors' released weights of {spec.name} ({rw.name}) are not installed: "
        f"run {how} (or `membench weights import {spec.name} ARCHIVE` with a copy you have), "
        "or pass --checkpoint FILE")


def uses_released(spec: ModelSpec, train: str, checkpoint) -> Installed | None:
    """The installed release an evaluation-only job evaluates (`--train none`, no
    --checkpoint), or None; raises like `for_evaluation` when it is declared but missing."""
    if train != "none" or checkpoint:
        return None
    return for_evaluation(spec)


def evaluation_options(spec: ModelSpec, train: str, checkpoint) -> dict[str, str]:
    """The model options of the authors' test protocol when an evaluation-only job evaluates
    their weights (the installed release's, else the first declared), else {}. Never raises."""
    if train != "none" or checkpoint or not spec.released_weights:
        return {}
    try:
        found = installed(spec)
    except MembenchError:
        found = None
    return dict((found.release if found else default_release(spec)).options)


def configuration_extra(spec: ModelSpec, train: str, checkpoint) -> dict[str, str]:
    """What a job's configuration adds for released weights: {"weights": "authors'
    weights (RELEASE)"} (membench.results.configuration MEANINGS["weights"]), else {}."""
    inst = uses_released(spec, train, checkpoint)
    return {"weights": inst.label} if inst else {}
