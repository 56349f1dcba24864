"""A run's configuration: everything that can change its numbers, as a readable string and
a short stable id.

Two runs of one model on one dataset with the same configuration differ only by seed
(replicates, averaged in one table row); any other difference is another configuration
(its own row, labelled with what differs). The protocol configuration (paper preset,
default model options, default settings, exact computation, no checkpoint override)
reads as "" and has the id "protocol":

    >>> Configuration().label, Configuration().id
    ('', 'protocol')
    >>> Configuration(model_options={"captioner": "random"}, frozen_train_cache=4).label
    'captioner=random; frozen-train-cache=4'

The input is plain data (`Configuration(...)` or `from_settings(dict)`), so the runner,
the leaderboard and the report build it the same way. Seeds are never part of it.
"""

from __future__ import annotations

import hashlib
import json
import re
from dataclasses import asdict, dataclass, field
from pathlib import Path

PROTOCOL_ID = "protocol"
DEFAULT_PATIENCE = 10
PRECISIONS = ("fp32", "bf16")

# What each non-default setting means, for table footnotes (key as in the label).
MEANINGS = {
    "preset=smoke": "smoke preset: a handful of images, one epoch per stage; plumbing only, its numbers mean nothing",
    "preset=quick": "quick preset: 64x64 inputs, a few hundred images, 4 epochs at LR 1e-3; a CPU learning check, "
                    "not the paper protocol",
    "preset=cpu": "cpu preset: 64x64 inputs, every image of the split, 12 epochs at LR 1e-3 and batch 32; the "
                  "largest recipe a 2-core CPU trains in minutes per split, not the paper protocol",
    "train=none": "evaluated without training",
    "checkpoint": "evaluated with the given checkpoint (file name @ sha256 prefix)",
    "pretrained=none": "random initialisation instead of published/ImageNet weights",
    "init": "stage-1 initialisation other than ImageNet",
    "patience": "early-stopping patience other than the default 10 epochs",
    "precision=bf16": "bf16 autocast (output head and predictions in fp32)",
    "frozen-train-cache": "the frozen networks run once on that many augmented views of each training image, "
                          "which the epochs reuse in turn (an approximation of the exact protocol, which draws "
                          "a fresh view every epoch)",
    "weights": "the authors' released weights (imported with `membench weights`), evaluated without training",
    "trained-on": "a checkpoint trained on another dataset, scored on this one (`membench evaluate`)",
    "eval-part=all": "scored on every image of the dataset, not on its test split",
    "evaluated-from": "the checkpoints of that run scored again by `membench evaluate`: an evaluation of "
                      "that run, never the run's own row",
}


@dataclass(frozen=True)
class Configuration:
    """The settings of a run that can change its numbers; defaults are the protocol.

    `model_options` holds only options whose value differs from the model's declared
    default (see `from_settings`); `files` maps a file-valued model option, and
    "checkpoint", to the sha256 of the file, so the id follows the file's content."""

    preset: str = "paper"
    model_options: dict[str, str] = field(default_factory=dict)
    train: str = "full"  # "none": a trainable model evaluated without training
    checkpoint: str | None = None  # evaluation-only weights (--checkpoint)
    pretrained: bool = True
    init: str = "imagenet"
    patience: int = DEFAULT_PATIENCE
    precision: str = "fp32"
    frozen_train_cache: int = 0  # only when a stage actually used it
    dataset_options: dict[str, str] = field(default_factory=dict)
    extra: dict[str, str] = field(default_factory=dict)  # further non-default settings, e.g. {"exif": "ignore"}
    files: dict[str, str] = field(default_factory=dict)  # option name or "checkpoint" -> sha256

    def differences(self) -> list[tuple[str, str, str]]:
        """(key, shown value, identity value) of every setting that is not the protocol's,
        in a fixed order. Files show as name@sha256-prefix and are identified by content."""
        out = []
        if self.preset != "paper":
            out.append(("preset", self.preset, self.preset))
        for key, value in sorted(self.model_options.items()):
            out.append((key, *self._file(key, value)))
        if self.train != "full":
            out.append(("train", self.train, self.train))
        if self.checkpoint:
            out.append(("checkpoint", *self._file("checkpoint", self.checkpoint)))
        if not self.pretrained:
            out.append(("pretrained", "none", "none"))
        elif self.init != "imagenet":
            out.append(("init", self.init, self.init))  # without pretraining the init is random anyway
        if self.patience != DEFAULT_PATIENCE:
            out.append(("patience", str(self.patience), str(self.patience)))
        if self.precision != "fp32":
            out.append(("precision", self.precision, self.precision))
        if self.frozen_train_cache:
            out.append(("frozen-train-cache", str(self.frozen_train_cache), str(self.frozen_train_cache)))
        for key, value in sorted(self.dataset_options.items()):
            out.append((f"dataset.{key}", value, value))
        for key, value in sorted(self.extra.items()):
            out.append((key, value, value))
        return out

    def _file(self, key: str, value: str) -> tuple[str, str]:
        sha = self.files.get(key)
        if not sha:
            return value, value
        return f"{Path(value).name}@{sha[:8]}", sha

    @property
    def label(self) -> str:
        """Readable: "captioner=random; frozen-train-cache=4"; "" for the protocol."""
        return "; ".join(f"{k}={shown}" for k, shown, _ in self.differences())

    @property
    def id(self) -> str:
        """"protocol", or 8 hex digits of a hash of what differs (stable across versions:
        only the differences enter it, so new settings at their default change no id)."""
        diff = {k: ident for k, _, ident in self.differences()}
        if not diff:
            return PROTOCOL_ID
        return hashlib.sha256(json.dumps(diff, sort_keys=True).encode()).hexdigest()[:8]

    @property
    def is_protocol(self) -> bool:
        return not self.differences()

    def meanings(self) -> list[str]:
        """Plain-language notes on the non-default settings that have one."""
        out = []
        for key, shown, _ in self.differences():
            text = MEANINGS.get(f"{key}={shown}") or MEANINGS.get(key)
            if text:
                out.append(f"{key}={shown}: {text}")
        return out

    def to_dict(self) -> dict:
        """For the run JSON: the readable label, the id and every setting."""
        return {"label": self.label or PROTOCOL_ID, "id": self.id, "protocol": self.is_protocol,
                "settings": asdict(self)}


def from_settings(settings: dict, declared_options=()) -> Configuration:
    """A Configuration from a plain dict of run settings (keys as Configuration's fields;
    `options` is accepted for `model_options`). With `declared_options` (the model's
    `ModelSpec.options`) options at their declared default are dropped: `beam=1` given
    explicitly is still the protocol."""
    from membench.options import non_default

    known = set(Configuration.__dataclass_fields__)
    values = {k: v for k, v in settings.items() if k in known and v is not None}
    options = dict(settings.get("model_options") or settings.get("options") or {})
    values["model_options"] = non_default(tuple(declared_options), options) if declared_options else dict(sorted(options.items()))
    if values.get("precision") in (None, "", "auto"):
        values.pop("precision", None)
    return Configuration(**values)


def from_row(row: dict, provenance: dict | None = None, declared_options=()) -> tuple[str, str, bool]:
    """(label, id, derived) of a results.csv row. Rows written before configurations were
    recorded have no config_id: theirs is derived from the row (preset, pretrained, init,
    train mode, device, notes) and the run JSON when there is one, and `derived` is True
    so that the report can say so. On CUDA those versions always used bf16 autocast."""
    if row.get("config_id"):
        return _evaluated_elsewhere(row.get("configuration") or "", row["config_id"], False, row, provenance)
    config = (provenance or {}).get("config") or {}
    options = dict(config.get("options") or {})
    frozen = 0
    for part in (row.get("notes") or "").split(";"):
        key, sep, value = part.strip().partition("=")
        if not sep:
            continue
        if key == "frozen_train_cache":
            frozen = int(value.split()[0]) if value.split() and value.split()[0].isdigit() else 1
        else:
            options.setdefault(key, value)
    init = row.get("init") or config.get("init") or "imagenet"
    pretrained = str(row.get("pretrained") or config.get("pretrained", True)).lower() not in ("false", "0", "none")
    if init == "random":
        pretrained, init = False, "imagenet"
    cfg = from_settings({
        "preset": row.get("preset") or "paper",
        "options": options,
        "train": "none" if row.get("train_mode") == "none" else "full",
        "checkpoint": config.get("checkpoint"),
        "pretrained": pretrained, "init": init,
        "patience": int(config.get("patience") or DEFAULT_PATIENCE),
        "precision": row.get("precision") or ("bf16" if row.get("device") == "cuda" else "fp32"),
        "frozen_train_cache": frozen,
    }, declared_options)
    return _evaluated_elsewhere(cfg.label, cfg.id, True, row, provenance)


def _evaluated_elsewhere(label: str, config_id: str, derived: bool, row: dict, provenance: dict | None):
    """Rows of `membench evaluate` score a checkpoint trained on another dataset (its
    `trained_on`), or every image rather than the test split: never the same row as the
    runs trained on this dataset. One scored on the very data its run was trained and
    tested on (or released weights scored as `run --train none` would) names its source
    run: it never replaces or joins that run's own row."""
    extra = {}
    trained = (row.get("trained_on") or "").strip()
    if trained and trained != row.get("dataset"):
        extra["trained-on"] = trained
    found = _EVALUATION_ID.search(row.get("run_id") or "")
    part = (provenance or {}).get("eval_part")
    if part is None:  # the run id of an evaluation ends in __on__<dataset>-<part>__<digest>
        part = found.group("part") if found else None
    if part and part != "test":
        extra["eval-part"] = part
    source = ((provenance or {}).get("evaluated_from") or {}).get("run_id")
    source = source or (found.group("source") if found else None)
    if source and not extra:
        extra["evaluated-from"] = source
    if not extra:
        return label, config_id, derived
    label = "; ".join([label] * bool(label) + [f"{k}={v}" for k, v in extra.items()])
    digest = hashlib.sha256(json.dumps([config_id, extra], sort_keys=True).encode()).hexdigest()[:8]
    return label, digest, derived


# the run id of `membench evaluate` rows (membench.engine.crosseval.eval_run_id)
_EVALUATION_ID = re.compile(r"^(?P<source>.+)__on__.+-(?P<part>[a-z]+)__[0-9a-f]{8}$")
