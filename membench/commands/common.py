"""Options shared by several commands: choosing the data and parsing key=value pairs."""

from __future__ import annotations

from membench.data.datasets import open_named
from membench.options import key_values  # noqa: F401  (commands import it from here)
from membench.util.files import membench_home  # noqa: F401  (commands import it from here)


def non_negative(text: str, least: int = 0) -> int:
    """argparse type of counts and seeds (`--workers`, `--seed`, `--n-boot`): an integer >= 0,
    else argparse's one-line error (exit 2) instead of a traceback from torch or numpy."""
    import argparse

    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expects an integer, not {text!r}") from None
    if value < least:
        raise argparse.ArgumentTypeError(f"must be {least} or more, not {value}")
    return value


def positive(text: str) -> int:
    """argparse type of a count that cannot be 0 (`demo-data --splits`)."""
    return non_negative(text, least=1)


def add_data_options(p, splits: bool = True) -> None:
    p.add_argument("--data", default="demo", metavar="DIR|demo",
                   help="dataset directory, or 'demo' for the built-in synthetic data (default)")
    p.add_argument("--dataset", default=None, metavar="NAME",
                   help="dataset plugin reading --data (default: lamem for a directory, demo for 'demo')")
    p.add_argument("--dataset-option", action="append", default=[], metavar="KEY=VALUE",
                   help="option for the dataset plugin (repeatable)")
    if splits:
        p.add_argument("--splits", default="all", help="'all' or a comma list such as 1,3 (default: all)")


def add_image_options(p) -> None:
    """How images are decoded (see membench/data/images.py); set for workers by apply_image_options."""
    p.add_argument("--exif-orientation", choices=("ignore", "apply"), default="ignore",
                   help="EXIF rotation tags: ignore them as the reference pipelines do (default), or "
                        "apply them (recorded in the configuration)")
    p.add_argument("--max-image-pixels", type=int, default=None, metavar="N",
                   help="allow images of up to N pixels (default: Pillow's decompression-bomb limit, "
                        "178,956,970)")


def apply_image_options(args) -> None:
    from membench.data.images import set_decoding

    set_decoding(getattr(args, "exif_orientation", None), getattr(args, "max_image_pixels", None))


def model_options(pairs: list[str], specs) -> dict[str, str]:
    """`--model-option` pairs checked before any work starts: each option against every
    selected model that declares it (one that no selected model declares, or an ill-typed
    value, is a one-line error naming the known options); returns the canonical values.
    Each model later receives only the options it declares (`RunConfig.for_model`,
    `membench.options.applicable`)."""
    from membench.options import check_for_models

    given = key_values(pairs, "--model-option")
    checked: dict[str, str] = {}
    for values in check_for_models([(s.name, s.options) for s in specs], given).values():
        for key, value in values.items():
            checked.setdefault(key, value)
    return {key: checked[key] for key in given if key in checked}


def open_dataset(args):
    """The dataset object named by --dataset/--data/--dataset-option (see DatasetSpec)."""
    return open_named(args.dataset, args.data, key_values(args.dataset_option, "--dataset-option"))

