"""What one job is: the run configuration, the presets that shape it, the key that names
it (same settings, same key, so `--resume` finds it again) and the lock that keeps two
processes from running it at once.

A job is (model, dataset, split, configuration). Its working directory
WORK/<job key>/split<k>/ holds one folder per stage (checkpoints) and `result.json` once
the test metrics exist.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Callable

from membench.errors import MembenchError
from membench.spec import ModelSpec, Preprocess, Split, Stage
from membench.util.files import file_lock

DEFAULT_PATIENCE = 10


@dataclass(frozen=True)
class Preset:
    """How a preset changes a model's recipe and a split: `adapt(spec)` gives the stages and
    preprocessing it runs, `sizes` the images it keeps per part (None: all)."""

    name: str
    meaning: str
    adapt: Callable[[ModelSpec], tuple[tuple[Stage, ...], Preprocess]]
    sizes: dict[str, int] | None = None
    keeps_checkpoints: bool = True  # False: a successful run removes its checkpoints (--keep-checkpoints keeps)
    small_inputs: bool = False  # True: inputs shrunk to 64x64, only for models that accept any size
    title: str = ""  # named in a table's title when the table holds its runs ("" for the paper preset)


def _paper(spec: ModelSpec):
    return spec.recipe, spec.preprocess


def _smoke(spec: ModelSpec):
    return tuple(replace(s, epochs=1) if s.model is None else s for s in spec.recipe), spec.preprocess


def _small(spec: ModelSpec, epochs: int):
    """64x64 inputs (72x72 then a 64 crop for models that crop), `epochs` per stage at LR 1e-3
    and batch 32; the recipe's optimiser, schedule shape, freezing and early stopping stay."""
    pre = spec.preprocess
    small_pre = replace(pre, size=(72, 72) if pre.crop else (64, 64), crop=64 if pre.crop else None,
                        train_size=None)
    stages = tuple(replace(s, epochs=epochs, lr=1e-3, batch_size=32) if s.model is None else s for s in spec.recipe)
    return stages, small_pre


def _quick(spec: ModelSpec):
    return _small(spec, epochs=4)


def _cpu(spec: ModelSpec):
    return _small(spec, epochs=12)


# The registry of presets: `membench run --preset` offers exactly these, in this order.
PRESETS: dict[str, Preset] = {p.name: p for p in (
    Preset("paper", "the recipe exactly: epochs, batch sizes and learning rates of the model's paper", _paper),
    Preset("smoke", "16 train / 8 val / 16 test images per split, one epoch per stage: checks the plumbing, "
                    "its numbers mean nothing", _smoke, {"train": 16, "val": 8, "test": 16}, keeps_checkpoints=False,
           title="smoke: plumbing only"),
    Preset("quick", "CPU-sized learning check: 64x64 inputs, up to 600 train images, 4 epochs per stage at "
                    "LR 1e-3 and batch 32; NOT the paper protocol (models with fixed input sizes cannot use it)",
           _quick, {"train": 600, "val": 64, "test": 200}, keeps_checkpoints=False, small_inputs=True,
           title="quick: CPU learning check, not the paper protocol"),
    # The largest recipe a 2-core CPU trains in minutes per split (a ResNet50 step at 64x64 is
    # ~25x cheaper than at the paper's 256x256 crop): for real data on a machine without a GPU.
    Preset("cpu", "CPU-sized training on every image: 64x64 inputs, all train/val/test images, 12 epochs per "
                  "stage at LR 1e-3 and batch 32; NOT the paper protocol (models with fixed input sizes cannot "
                  "use it)", _cpu, None, small_inputs=True,
           title="cpu: 64x64 CPU-sized training, not the paper protocol"),
)}


@dataclass
class RunConfig:
    out: Path
    work_dir: Path
    preset: str = "paper"
    seed: int = 0
    device: str = "auto"
    workers: int | None = None
    resume: bool = False
    patience: int = DEFAULT_PATIENCE
    pretrained: bool = True
    init: str = "imagenet"
    train: str = "full"  # "none": evaluate only, with --checkpoint or the model's own weights
    checkpoint: Path | None = None
    on_bad_image: str = "fail"
    options: dict[str, str] = field(default_factory=dict)  # --model-option, checked and canonical
    compile: bool = False  # torch.compile the model (speed only: not part of the job key)
    frozen_train_cache: int = 0  # K > 0: K cached views per training image in frozen stages (approximation)
    keep_last: bool = False  # keep a finished stage's last.pt (disk only: not part of the job key)
    keep_checkpoints: bool = False  # smoke/quick: keep checkpoints after success (disk only)
    precision: str = "fp32"  # fp32 (the protocol, every device) or bf16 (autocast on CUDA, opt-in)
    dataset_options: dict[str, str] = field(default_factory=dict)  # --dataset-option (for the configuration)
    log: tuple[str, ...] = ()  # --log trackers of the training curves (membench.results.trackers; not in the key)

    def __post_init__(self):
        from membench.results.trackers import parse

        self.log = tuple(self.log or ())
        parse(self.log)  # an unknown tracker: one line, before any work
        if self.preset not in PRESETS:
            raise MembenchError(f"unknown preset {self.preset!r}; choose from {', '.join(PRESETS)}")
        if self.init not in ("imagenet", "scratch"):
            raise MembenchError("--init must be imagenet or scratch")
        if self.train not in ("full", "none"):
            raise MembenchError("--train must be full or none")
        if self.patience < 1:
            raise MembenchError("--patience must be at least 1")
        if self.frozen_train_cache < 0:
            raise MembenchError("--frozen-train-cache must be 0 (exact, default) or a number of views K >= 1")
        if self.precision == "auto":  # the old default, in saved configurations: now fp32 everywhere
            self.precision = "fp32"
        if self.precision not in ("fp32", "bf16"):
            raise MembenchError(f"--precision must be fp32 (default) or bf16, not {self.precision!r}")

    def for_model(self, spec: ModelSpec) -> "RunConfig":
        """This configuration as `spec` receives it: only the --model-option values it declares
        (with several models, an option goes to the models that declare it), over the options
        of the authors' test protocol when their released weights are evaluated; for a model
        without pretrained weights `--pretrained none` is the default (the same job).
        Selection only: `options` were checked, and made canonical, once before any work
        (membench.commands.common.model_options)."""
        from membench.weights.released import evaluation_options

        declared = {o.name for o in spec.options}
        options = {k: v for k, v in self.options.items() if k in declared}
        # the authors' test protocol (e.g. MemNet port: ten crops) when their weights are evaluated
        protocol = evaluation_options(spec, self.train if spec.trainable else "none", self.checkpoint)
        if protocol:
            options = spec.check_options({**protocol, **options})
        pretrained = self.pretrained or not getattr(spec, "pretrained_weights", True)
        if options == self.options and pretrained == self.pretrained:
            return self
        return replace(self, options=options, pretrained=pretrained)

    def upstream(self) -> "RunConfig":
        """The configuration of chained stages' jobs: --model-option addresses the models named
        on the command line, so a stage-1 job is the same (and reused) whichever options
        stage 2 has; the frozen-train-cache approximation is stage 2's alone."""
        if not self.options and not self.frozen_train_cache:
            return self
        return replace(self, options={}, frozen_train_cache=0)


def effective(spec: ModelSpec, preset: str) -> tuple[tuple[Stage, ...], Preprocess]:
    """The stages and preprocessing a preset actually runs (recorded in provenance)."""
    return PRESETS[preset].adapt(spec)


def subset(split: Split, preset: str) -> Split:
    """Deterministic prefixes of each part for the small presets (split files are already random)."""
    sizes = PRESETS[preset].sizes
    if sizes is None:
        return split
    return Split(split.index, split.train[:sizes["train"]], split.val[:sizes["val"]], split.test[:sizes["test"]])


def job_key(spec: ModelSpec, dataset, cfg: RunConfig) -> str:
    """Everything that changes a job's numbers, hashed: same key, same job (resumable)."""
    cfg = cfg.for_model(spec)  # options meant for other selected models are not this job's
    stages, pre = effective(spec, cfg.preset)
    material = json.dumps({
        "model": spec.name, "dataset": dataset.name, "data": dataset.fingerprint(), "preset": cfg.preset,
        "seed": cfg.seed, "patience": cfg.patience, "pretrained": cfg.pretrained, "init": cfg.init,
        "train": cfg.train, "checkpoint": str(cfg.checkpoint) if cfg.checkpoint else None,
        "on_bad_image": cfg.on_bad_image, "options": cfg.options,
        "stages": [_stage_material(s) for s in stages], "preprocess": asdict(pre),
        # an approximation never shares a job with the exact protocol (absent when off: old keys stay)
        **({"frozen_train_cache": cfg.frozen_train_cache}
           if cfg.frozen_train_cache and any(s.frozen for s in stages if s.model is None) else {}),
        # --exif-orientation apply changes pixels (absent by default: old keys stay)
        **_decoding_settings(),
        **released_material(spec, cfg),
        # bf16 never shares a job with fp32 (absent for fp32: CPU keys stay as they were)
        **({"precision": cfg.precision} if cfg.precision not in ("fp32", "auto") else {}),
        **file_material(spec, cfg),
    }, sort_keys=True, default=str)
    digest = hashlib.sha256(material.encode()).hexdigest()[:10]
    return f"{spec.name.replace('/', '_')}__{dataset.name}__{cfg.preset}__s{cfg.seed}__{digest}"


def _stage_material(stage: Stage) -> dict:
    """A stage as its job key sees it; `fit` only when not the default (old keys stay)."""
    material = asdict(stage)
    if material["fit"] == "epochs":
        del material["fit"]
    return material


def _decoding_settings() -> dict:
    from membench.data.images import decoding_settings

    return decoding_settings()


def released_material(spec: ModelSpec, cfg: RunConfig) -> dict:
    """An evaluation of the authors' released weights is keyed by what was imported (absent
    otherwise: other keys stay)."""
    from membench.weights import released

    inst = released.uses_released(spec, cfg.train if spec.trainable else "none", cfg.checkpoint)
    return {"released": inst.identity} if inst else {}


def file_material(spec: ModelSpec, cfg: RunConfig) -> dict:
    """The content (sha256) of files named by --checkpoint or a file-valued model option:
    the same path holding other weights is another job (absent without such files)."""
    from membench.options import file_options
    from membench.weights.files_loaded import sha256_file

    named = dict(file_options(spec.options, cfg.options))
    if cfg.checkpoint:
        named["checkpoint"] = str(cfg.checkpoint)
    files = {k: sha256_file(v) for k, v in named.items() if Path(v).expanduser().is_file()}
    return {"files": files} if files else {}



RESULT = "result.json"
RESULT_FIX = ("delete it and run the same command with --resume: the job is computed again (from its checkpoints "
              "where they were kept)")


def write_result(job_dir: Path, row: dict, checkpoint, predictions: list, provenance: dict,
                 leaderboard: Path) -> None:
    """result.json: the finished job's row, checkpoint, test predictions and run JSON, sealed
    (membench.util.sealed) because --resume puts them into the leaderboard again, and the
    leaderboard the row is for (`runs clean` keeps the job until the row is there)."""
    from membench.util.files import atomic_write_json
    from membench.util.sealed import seal

    atomic_write_json(Path(job_dir) / RESULT, seal({
        "row": row, "checkpoint": str(checkpoint) if checkpoint else None,
        "predictions": predictions, "provenance": provenance, "leaderboard": str(Path(leaderboard).resolve())}))


def read_result(path: Path) -> dict:
    """A finished job's result.json, its checksum and shape checked: damage is one error
    naming the file, never a different row in the leaderboard."""
    from membench.util.sealed import read_sealed

    saved = read_sealed(path, "finished job's result", RESULT_FIX)
    row, predictions = saved.get("row"), saved.get("predictions")
    problem = None
    if not isinstance(row, dict) or not all(k in row for k in ("run_id", "model", "dataset", "split", "rho", "mse")):
        problem = "no complete row"
    elif not isinstance(saved.get("provenance"), dict):
        problem = "no provenance"
    elif not isinstance(saved.get("checkpoint"), (str, type(None))):
        problem = "a checkpoint that is not a path"
    elif not isinstance(predictions, list) or not all(
            isinstance(p, list) and len(p) == 3 and isinstance(p[0], str)
            and all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in p[1:]) for p in predictions):
        problem = "predictions that are not (image, score, prediction) triples"
    if problem:
        raise MembenchError(f"the finished job's result has {problem}: damaged; {RESULT_FIX}", path)
    return saved


def job_dir(cfg: RunConfig, key: str, k: int) -> Path:
    return cfg.work_dir / key / f"split{k}"


def refuse_to_discard(job_dir: Path) -> None:
    """Without --resume a job starts afresh, but never by silently deleting the checkpoints
    of an interrupted run (possibly days of training)."""
    if (job_dir / "result.json").is_file():
        return
    from membench.engine.checkpoints import STAGE_DONE

    saved = sorted(job_dir.glob("*/last.pt")) + sorted(job_dir.glob(f"*/{STAGE_DONE}"))
    if saved:
        raise MembenchError(f"an interrupted run of this job left checkpoints here ({saved[0].parent.name}/"
                            f"{saved[0].name}); add --resume to continue it, or delete the directory to start "
                            "over", job_dir)


def job_lock(job_dir: Path, *, wait: bool, say=None):
    """One process per job directory (WORK/<key>/.split<k>.lock); the kernel drops the lock
    when its holder dies, even by SIGKILL, so no stale lock outlives a killed run."""

    def busy():
        if not wait:
            raise MembenchError("another membench process is running this job (same model, data, "
                                "split and settings) with this work directory; wait for it to "
                                "finish, then run again with --resume", job_dir) from None
        if say:
            say(f"waiting for another membench process to finish {job_dir}")

    return file_lock(job_dir.parent / f".{job_dir.name}.lock", wait=wait, on_busy=busy)

