"""Frozen descriptions that plugins register: cheap to create, no torch import.

A model is a `ModelSpec`: how to build it (lazily), what its paper reported, how its
images are preprocessed, and the training recipe the harness executes for it.
"""

from __future__ import annotations

import importlib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

from membench.options import Option, check_options

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)

TRAIN_AUGMENTATIONS = ("paper", "crop", "resized-crop", "none")
EVAL_RESIZES = ("exact", "shorter")
INTERPOLATIONS = ("bilinear", "bicubic")
SCHEDULES = ("paper-poly", "constant")
OPTIMIZERS = ("adam", "sgd")
FITS = ("epochs", "frozen-outputs")


@dataclass(frozen=True)
class Reported:
    """Numbers published for a model, always shown apart from measured ones."""

    rho: float | None = None
    mse: float | None = None
    params: int | None = None  # as the paper states it, e.g. 130_000_000 for "130M"
    source: str = ""  # where the numbers come from, e.g. "Leonardi et al. 2019, Table 2"
    dataset: str = "lamem"  # several joined by "+" when the authors pooled them, e.g. "lamem+memcat"
    note: str = ""  # e.g. "MSE estimated by the authors"

    def covers(self, dataset: str) -> bool:
        """Whether these numbers were obtained on `dataset` (alone or pooled with others)."""
        return dataset in self.dataset.split("+")


@dataclass(frozen=True)
class Preprocess:
    """How images reach the model.

    Evaluation (the model's reference transform, see docs/models.md): resize a PIL image
    with PIL as torchvision's Resize does, to `size` (h, w) (`resize="exact"`) or its
    shorter side to `size[0]` keeping the aspect ratio (`resize="shorter"`, timm's eval),
    with the `interpolation` filter; centre-crop to `crop` if set, to [0,1], normalise
    with mean/std unless they are None.
    Training (`train`):
      - "paper": paper §3.2: scale [0.8,1.2], horizontal flip, crop 0.8-1.0, resize to `size`.
      - "crop": resize to `train_size or size`, random `crop`, horizontal flip (MemNet style).
      - "resized-crop": resize to `train_size or size`, RandomResizedCrop(`crop`), flip (AMNet style).
      - "none": the evaluation transform.
    """

    size: tuple[int, int] = (256, 256)
    crop: int | None = None
    train_size: tuple[int, int] | None = None  # resize before a random crop, if not `size` (AMNet: 264)
    mean: tuple[float, float, float] | None = IMAGENET_MEAN
    std: tuple[float, float, float] | None = IMAGENET_STD
    train: str = "paper"
    resize: str = "exact"
    interpolation: str = "bilinear"

    def __post_init__(self):
        if self.resize not in EVAL_RESIZES:
            raise ValueError(f"Preprocess.resize must be one of {EVAL_RESIZES}, not {self.resize!r}")
        if self.interpolation not in INTERPOLATIONS:
            raise ValueError(f"Preprocess.interpolation must be one of {INTERPOLATIONS}, not {self.interpolation!r}")
        if self.resize == "shorter" and self.crop is None:
            raise ValueError("Preprocess.resize='shorter' needs crop (the output size would vary)")
        if self.train not in TRAIN_AUGMENTATIONS:
            raise ValueError(f"Preprocess.train must be one of {TRAIN_AUGMENTATIONS}, not {self.train!r}")
        if (self.mean is None) != (self.std is None):
            raise ValueError("Preprocess.mean and .std are both set or both None")
        if self.train in ("crop", "resized-crop") and self.crop is None:
            raise ValueError(f"Preprocess.train={self.train!r} needs crop")

    @property
    def input_size(self) -> tuple[int, int]:
        """The (h, w) the model sees."""
        return (self.crop, self.crop) if self.crop else tuple(self.size)


@dataclass(frozen=True)
class Stage:
    """One training stage of a recipe, executed by the harness.

    `frozen` lists parameter-name prefixes (submodules) that stay fixed in this stage;
    their BatchNorm statistics are frozen too. `model` chains stages across models: the
    stage is the full training of another registered model on the same split (e.g.
    stage 1 of `ours` is `resnet50-lamem`), and its best checkpoint is handed to this
    model's builder as `ctx.upstream[stage.name]`.

    `fit`: "epochs" (default) trains with the optimiser, schedule and epochs below;
    "frozen-outputs" has no epochs: membench computes the frozen outputs of every training
    and validation image once (evaluation transform) and the model fits its trainable part
    on them itself (membench.contract.FitsFrozen: a closed-form ridge regression, say).
    """

    name: str
    epochs: int = 1
    batch_size: int = 16
    lr: float = 1e-4
    optimizer: str = "adam"
    weight_decay: float = 0.0
    schedule: str = "paper-poly"
    frozen: tuple[str, ...] = ()
    model: str | None = None
    patience: int | None = None  # early stopping on val Spearman; None: the run's --patience
    # As codes that call model.train() on the whole network (AMNet's): the frozen submodules'
    # BatchNorm layers normalise with batch statistics and their running statistics adapt.
    frozen_bn_train: bool = False
    drop_last: bool = False  # drop the last incomplete training batch of each epoch
    fit: str = "epochs"  # or "frozen-outputs": the model's fit_frozen on cached frozen outputs

    def __post_init__(self):
        if self.fit not in FITS:
            raise ValueError(f"stage {self.name!r}: fit must be one of {FITS}, not {self.fit!r}")
        if self.fit == "frozen-outputs" and not self.frozen:
            raise ValueError(f"stage {self.name!r}: fit='frozen-outputs' needs the frozen part named in frozen=")
        if self.model is None:
            if self.epochs < 1 or self.batch_size < 1 or not self.lr > 0:
                raise ValueError(f"stage {self.name!r}: epochs, batch_size and lr must be positive")
            if self.optimizer not in OPTIMIZERS:
                raise ValueError(f"stage {self.name!r}: optimizer must be one of {OPTIMIZERS}")
            if self.schedule not in SCHEDULES:
                raise ValueError(f"stage {self.name!r}: schedule must be one of {SCHEDULES}")


@dataclass(frozen=True)
class ReleaseFile:
    """A further file of a release, downloaded beside its main file (e.g. a mean image kept
    in another repository): its address, its name in the release folder, and a checksum
    when one is published (sha256 or its prefix, or git's object id for files in git)."""

    url: str
    name: str
    sha256: str | None = None
    git_blob_sha1: str | None = None


@dataclass(frozen=True)
class ReleasedWeights:
    """Weights a model's authors published, declared as data. membench.weights.released downloads
    (or takes) the archive, checks it, converts it with `convert` and installs one
    checkpoint per split (`per_split`) or one for all splits, then `membench run --train
    none` evaluates with them (rows say "authors' weights").

    `convert` ("module:function" or callable) takes the archive path (file or unpacked
    folder) and returns {split or None: (state_dict in this model's layout, source member)};
    the shared code checks every key and shape against the model. `preprocess` is the
    reference's test-time preprocessing when it differs from the model's own.

    `files`: further files fetched beside `archive` into one release folder, which is then
    what `convert` receives. `options`: the model options of the authors' test protocol
    (e.g. {"crops": "10"}), the defaults whenever these weights are evaluated (rows show
    them). `part`: the submodule the release holds when it is not the whole model (a head
    released for a public backbone, e.g. "head"); the rest keeps its own weights."""

    name: str  # e.g. "lamem_ResNet50FC_lstm3"
    convert: Callable[..., Any] | str
    url: str = ""  # "" when the authors give no direct download (see `source`)
    archive: str = ""  # file name of the download, e.g. "lamem_ResNet50FC_lstm3.zip"
    layout: str = ""  # what the archive holds, for users and docs
    per_split: bool = True
    sha256: str | None = None  # of the archive, when known
    size: str = ""  # e.g. "822 MB"
    source: str = ""  # the page that lists the download
    license: str = ""
    citation: str = ""
    dataset: str = "lamem"
    preprocess: Preprocess | None = None
    note: str = ""
    files: tuple[ReleaseFile, ...] = ()
    options: dict[str, str] = field(default_factory=dict)
    part: str = ""

    def converter(self) -> Callable[..., Any]:
        return resolve_callable(self.convert)


@dataclass(frozen=True)
class ModelSpec:
    """A registered model. `build` is a callable or a lazy "module:function" string;
    it receives a `BuildContext` and returns a torch module whose forward maps a
    normalised (B,3,H,W) batch to (B,) scores in [0,1]-scale. A module may define
    `loss(pred, target)` to replace the default MSE (e.g. AMNet's attention penalty)."""

    name: str
    build: Callable[["BuildContext"], Any] | str
    summary: str = ""
    citation: str = ""
    reported: Reported | None = None
    preprocess: Preprocess = field(default_factory=Preprocess)
    recipe: tuple[Stage, ...] = ()
    options: tuple[Option, ...] = ()  # what --model-option NAME=VALUE the builder reads (declared, checked)
    tags: tuple[str, ...] = ()
    license: str = ""
    params_expected: dict[str, int] = field(default_factory=dict)  # e.g. {"total": ..., "used": ...}
    trainable: bool = True  # False: evaluate-only (weights required)
    # False: the builder loads no pretrained or published weights, so `--pretrained none`
    # changes nothing; it is then left out of the job key and the configuration
    pretrained_weights: bool = True
    notes: str = ""
    released_weights: tuple[ReleasedWeights, ...] = ()  # the authors' published weights, if any
    plugin: str = ""  # filled in by the registry

    def __post_init__(self):
        if not self.name or any(c.isspace() for c in self.name) or "," in self.name:
            raise ValueError(f"invalid model name {self.name!r}")
        if self.trainable and not self.recipe:
            raise ValueError(f"model {self.name!r}: a trainable model needs a recipe")
        names = [o.name for o in self.options]
        if len(set(names)) != len(names):
            raise ValueError(f"model {self.name!r}: an option is declared twice ({', '.join(names)})")

    def check_options(self, given: dict[str, str]) -> dict[str, str]:
        """`--model-option` values checked against `options`: canonical text, or a one-line
        MembenchError naming the known options (see membench.options)."""
        return check_options(self.name, self.options, given)

    def builder(self) -> Callable[["BuildContext"], Any]:
        return resolve_callable(self.build)


@dataclass
class BuildContext:
    """What a builder may use. `pretrained=False` means random init (`--pretrained none`).

    `upstream` maps a chained stage name to the best checkpoint of that stage's model;
    `options` holds `--model-option key=value` pairs (e.g. captioner=random), checked
    against the spec's declared `options` and given as canonical text;
    `device` is "meta" when only counting parameters.
    """

    pretrained: bool = True
    init: str = "imagenet"  # stage-1 initialisation: "imagenet" or "scratch"
    upstream: dict[str, Path] = field(default_factory=dict)
    options: dict[str, str] = field(default_factory=dict)
    device: str = "cpu"
    weights_dir: Path | None = None

    @property
    def meta(self) -> bool:
        return self.device == "meta"

    def on_device(self):
        """`with ctx.on_device(): model = Net()`: on the meta device (no memory, no weights)
        when only counting parameters, else where torch creates tensors by default."""
        import contextlib

        import torch

        return torch.device("meta") if self.meta else contextlib.nullcontext()


@dataclass(frozen=True)
class Sample:
    """One image of a split with its score (from that split's own file)."""

    name: str
    path: Path
    score: float


@dataclass(frozen=True)
class Split:
    index: int
    train: tuple[Sample, ...]
    val: tuple[Sample, ...]
    test: tuple[Sample, ...]

    def parts(self) -> dict[str, tuple[Sample, ...]]:
        return {"train": self.train, "val": self.val, "test": self.test}


@dataclass(frozen=True)
class DatasetSpec:
    """A registered dataset. `open(root, options)` returns an object with:
    `name`, `root`, `splits` (tuple of split indices), `load_split(k) -> Split`,
    `fingerprint() -> str`, `human_consistency` (float or None), `problems` (list of str)
    and optionally `notes` (list of str: what `data check` reports without calling it a
    problem). `root` is None when `needs_path` is False (e.g. the generated demo data).

    The descriptive fields (all optional, one line each) are what `membench datasets`
    lists: `size` ("10,000 images"), `split_scheme` ("5 seeded 70/10/20"), `score_measure`
    (which measure the scores are, e.g. "hit rate"), `consistency_note` (where
    `human_consistency` comes from: published, or computed from the files), `license`,
    `homepage`, and `manual_download` (where to go when the source needs a hand step: a
    form, a password, a licence; the user then runs `membench data import NAME ...`)."""

    name: str
    open: Callable[..., Any] | str
    summary: str = ""
    citation: str = ""
    needs_path: bool = True
    human_consistency: float | None = None
    plugin: str = ""
    size: str = ""
    split_scheme: str = ""
    score_measure: str = ""
    consistency_note: str = ""
    license: str = ""
    homepage: str = ""
    manual_download: str = ""
    # the --dataset-option keys `open` reads ({key: what it does}); checked before opening, so
    # an unknown one is an error naming these. None: not declared, `open` checks its own
    options: dict[str, str] | None = None

    def opener(self) -> Callable[..., Any]:
        return resolve_callable(self.open)


def resolve_callable(target: Callable | str) -> Callable:
    """Import "package.module:function" lazily, so registering costs no heavy imports."""
    if callable(target):
        return target
    module, _, attr = target.partition(":")
    obj = importlib.import_module(module)
    for part in attr.split("."):
        obj = getattr(obj, part)
    return obj
