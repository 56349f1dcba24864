"""Declared model options: what `--model-option NAME=VALUE` a model's builder reads.

A `ModelSpec` lists its options (`ModelSpec.options`); the harness checks every value
against them before any work starts, so a misspelt or ill-typed option is a one-line
error naming the known ones, never a silently ignored setting. Builders still read
`ctx.options` as strings: the checked values are canonical text ("016" -> "16",
"yes" -> "true"), so two spellings of one value are one configuration.
No torch here: `membench models` and `membench --help` stay fast.
"""

from __future__ import annotations

import difflib
import math
from dataclasses import dataclass
from typing import Any

from membench.errors import MembenchError

OPTION_TYPES = ("str", "int", "float", "bool", "path")
_TRUE, _FALSE = ("true", "yes", "1", "on"), ("false", "no", "0", "off")
# Names the configuration string uses for harness settings (membench.results.configuration):
# an option of the same name would make a configuration ambiguous.
RESERVED = ("preset", "pretrained", "init", "patience", "precision", "train", "checkpoint",
            "frozen-train-cache", "frozen_train_cache", "seed")


@dataclass(frozen=True)
class Option:
    """One model option. `default` is what the builder does without it (None: the option
    is unset, e.g. "use the installed weights"); `choices` restricts the values."""

    name: str
    type: str = "str"  # str | int | float | bool | path (a file the builder loads)
    default: Any = None
    help: str = ""
    choices: tuple[str, ...] = ()
    trained: bool = False  # a path option whose file holds the model's trained weights (predict scores with it)

    def __post_init__(self):
        if not self.name or not self.name.replace("_", "").replace("-", "").isalnum():
            raise ValueError(f"invalid option name {self.name!r} (letters, digits, - and _)")
        if self.name in RESERVED:
            raise ValueError(f"option name {self.name!r} is reserved for a harness setting")
        if self.type not in OPTION_TYPES:
            raise ValueError(f"option {self.name!r}: type must be one of {OPTION_TYPES}, not {self.type!r}")
        if self.default is not None:
            try:
                canonical = self.parse(str(self.default).lower() if self.type == "bool" else str(self.default))
            except ValueError as exc:
                raise ValueError(f"option {self.name!r}: default {self.default!r} is invalid ({exc})") from None
            if self.choices and canonical not in self.choices:
                raise ValueError(f"option {self.name!r}: default {self.default!r} is not one of its choices")

    @property
    def default_text(self) -> str | None:
        """The default in canonical text, None when unset."""
        if self.default is None:
            return None
        return self.parse(str(self.default).lower() if self.type == "bool" else str(self.default))

    def parse(self, text: str) -> str:
        """Canonical text of `text`, or ValueError saying what this option takes."""
        text = str(text).strip()
        if self.type == "int":
            try:
                return str(int(text))
            except ValueError:
                raise ValueError(f"an integer, got {text!r}") from None
        if self.type == "float":
            try:
                value = float(text)
            except ValueError:
                raise ValueError(f"a number, got {text!r}") from None
            if not math.isfinite(value):
                raise ValueError(f"a finite number, got {text!r}")
            return repr(value)
        if self.type == "bool":
            if text.lower() in _TRUE:
                return "true"
            if text.lower() in _FALSE:
                return "false"
            raise ValueError(f"true or false, got {text!r}")
        if not text:
            raise ValueError("a value, got nothing")
        return text

    def describe(self) -> str:
        """e.g. "beam (int, default 1): decoding beam width"."""
        kind = "|".join(self.choices) if self.choices else self.type
        default = "unset" if self.default is None else self.default_text
        return f"{self.name} ({kind}, default {default})" + (f": {self.help}" if self.help else "")


def check_options(model: str, declared: tuple[Option, ...], given: dict[str, str]) -> dict[str, str]:
    """`given` checked against `declared`: canonical values, in the given order. Raises a
    one-line MembenchError (did-you-mean, the known options) for an unknown or ill-typed one."""
    known = {o.name: o for o in declared}
    out: dict[str, str] = {}
    for raw_key, value in given.items():
        key = str(raw_key).strip()
        option = known.get(key)
        if option is None:
            raise unknown_option(model, key, declared)
        try:
            canonical = option.parse(value)
        except ValueError as exc:
            raise MembenchError(f"model option {key} of {model} takes {exc}") from None
        if option.choices and canonical not in option.choices:
            raise MembenchError(f"model option {key} of {model} takes one of {', '.join(option.choices)}, "
                                f"got {canonical!r}")
        out[key] = canonical
    return out


def check_for_models(models: list[tuple[str, tuple[Option, ...]]], given: dict[str, str]) -> dict[str, dict[str, str]]:
    """`given` for several selected models, as {model: its checked options}: an option goes
    to every model that declares it (checked against each), so `ours,resnet50-lamem` with
    `captioner=random` gives the captioner to ours alone; an option that no selected model
    declares is a one-line error (did-you-mean over all their options, who declares what)."""
    if len(models) == 1:
        name, declared = models[0]
        return {name: check_options(name, declared, given)}
    for key in given:
        if not any(key.strip() in _names(declared) for _, declared in models):
            raise _unknown_for_models(key.strip(), models)
    return {name: applicable(name, declared, given) for name, declared in models}


def applicable(model: str, declared: tuple[Option, ...], given: dict[str, str]) -> dict[str, str]:
    """The options of `given` that `model` declares, checked: what that model receives."""
    names = _names(declared)
    return check_options(model, declared, {k: v for k, v in given.items() if k.strip() in names})


def _names(declared: tuple[Option, ...]) -> list[str]:
    return [o.name for o in declared]


def _unknown_for_models(key: str, models: list[tuple[str, tuple[Option, ...]]]) -> MembenchError:
    union = list(dict.fromkeys(n for _, declared in models for n in _names(declared)))
    close = difflib.get_close_matches(key, union, n=1, cutoff=0.5)
    hint = f"; did you mean {close[0]}?" if close else ""
    some = [f"{name} declares {', '.join(_names(d))}" for name, d in models if d]
    none = [name for name, d in models if not d]
    who = "; ".join(some + ([f"{', '.join(none)} declare{'s' if len(none) == 1 else ''} none"] if none else []))
    return MembenchError(f"unknown model option {key!r}: no selected model declares it{hint} ({who})")


def unknown_option(model: str, key: str, declared: tuple[Option, ...]) -> MembenchError:
    names = [o.name for o in declared]
    if not names:
        return MembenchError(f"unknown model option {key!r}: {model} declares no options "
                             f"(see `membench models {model}`)")
    close = difflib.get_close_matches(key, names, n=1, cutoff=0.5)
    hint = f"; did you mean {close[0]}?" if close else ""
    return MembenchError(f"unknown model option {key!r} for {model}{hint} (known options: {', '.join(names)})")


def non_default(declared: tuple[Option, ...], values: dict[str, str]) -> dict[str, str]:
    """The checked `values` that differ from their declared defaults, sorted by name: what
    makes a configuration differ from the model's protocol."""
    known = {o.name: o for o in declared}
    return {k: v for k, v in sorted(values.items()) if k not in known or known[k].default_text != v}


def file_options(declared: tuple[Option, ...], values: dict[str, str]) -> dict[str, str]:
    """{name: path} of the given options that name a file (type "path")."""
    kinds = {o.name: o.type for o in declared}
    return {k: v for k, v in values.items() if kinds.get(k) == "path"}


def weights_option(what: str, trained: bool = False) -> Option:
    """The common `weights=PATH` option: a state_dict file loaded instead of the default
    weights; `trained`: the file holds the trained model (not only pretrained parts)."""
    return Option("weights", "path", help=f"load {what} from this file instead of the default weights",
                  trained=trained)


def key_values(pairs: list[str], flag: str) -> dict[str, str]:
    """`KEY=VALUE` pairs of a repeatable flag (`--model-option`, `--dataset-option`) as a dict;
    a pair without `=` is a one-line error naming the flag."""
    out = {}
    for pair in pairs:
        key, sep, value = pair.partition("=")
        if not sep or not key:
            raise MembenchError(f"{flag} takes KEY=VALUE, got {pair!r}")
        out[key.strip()] = value.strip()
    return out
