"""`membench demo-data DIR`, `membench datasets`, `membench data check`, `membench data
download` and `membench data import`: making, listing, checking, fetching and installing
datasets."""

from __future__ import annotations

from pathlib import Path

from membench.commands.common import add_data_options, add_image_options, non_negative, positive
from membench.commands.data.check import cmd_check


def add_parser(sub) -> None:
    p = sub.add_parser("demo-data", help="write the synthetic demo dataset (LaMem layout)",
                       description="Write a deterministic synthetic dataset in exactly the LaMem layout "
                                   "whose scores depend learnably on image content.")
    p.add_argument("dir", type=Path)
    p.add_argument("--images", type=int, default=None, help="number of images (default 1200)")
    p.add_argument("--splits", type=positive, default=5, help="number of random splits (default 5)")
    p.add_argument("--seed", type=non_negative, default=0)
    p.set_defaults(func=cmd_demo_data)

    p = sub.add_parser("data", help="dataset tools")
    dsub = p.add_subparsers(dest="data_command", metavar="SUBCOMMAND", required=True)
    c = dsub.add_parser("check", help="validate a dataset: counts per split and every problem found")
    add_data_options(c)
    add_image_options(c)
    c.set_defaults(func=cmd_check)
    from membench.commands.data.download import add_parser as add_download
    from membench.commands.data.importing import add_parser as add_import
    from membench.commands.data.listing import add_parser as add_listing

    add_download(dsub)
    add_import(dsub)
    add_listing(sub)


def cmd_demo_data(args) -> int:
    from membench.data.demo import DEFAULT_IMAGES, generate

    root = generate(args.dir, n_images=args.images or DEFAULT_IMAGES, n_splits=args.splits, seed=args.seed)
    print(f"wrote {args.images or DEFAULT_IMAGES} images and {args.splits} splits to {root}")
    return 0
