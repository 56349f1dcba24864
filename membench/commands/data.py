"""`membench demo-data DIR`, `membench data check` and `membench data download`: making,
checking and fetching datasets."""

from __future__ import annotations

from pathlib import Path

from membench.commands.common import add_data_options, add_image_options


def add_parser(sub) -> None:
    p = sub.add_parser("demo-data", help="write the synthetic demo dataset (LaMem layout)",
                       description="Write a deterministic synthetic dataset in exactly the LaMem layout "
                                   "whose scores depend learnably on image content.")
    p.add_argument("dir", type=Path)
    p.add_argument("--images", type=int, default=None, help="number of images (default 1200)")
    p.add_argument("--splits", type=int, default=5, help="number of random splits (default 5)")
    p.add_argument("--seed", type=int, default=0)
    p.set_defaults(func=cmd_demo_data)

    p = sub.add_parser("data", help="dataset tools")
    dsub = p.add_subparsers(dest="data_command", metavar="SUBCOMMAND", required=True)
    c = dsub.add_parser("check", help="validate a dataset: counts per split and every problem found")
    add_data_options(c)
    add_image_options(c)
    c.set_defaults(func=cmd_check)
    from membench.commands.data_download import add_parser as add_download

    add_download(dsub)


def cmd_demo_data(args) -> int:
    from membench.demo import DEFAULT_IMAGES, generate

    root = generate(args.dir, n_images=args.images or DEFAULT_IMAGES, n_splits=args.splits, seed=args.seed)
    print(f"wrote {args.images or DEFAULT_IMAGES} images and {args.splits} splits to {root}")
    return 0


def cmd_check(args) -> int:
    """Collect every problem (not only the first) and report them all; exit 1 if any."""
    from rich.console import Console

    from membench.commands.common import apply_image_options, open_dataset
    from membench.errors import MembenchError
    from membench.images import check_images
    from membench.lamem import incomplete_splits, parse_splits
    from membench.output import emit

    console = Console(stderr=True)
    apply_image_options(args)
    dataset = open_dataset(args)
    problems: list[str] = list(getattr(dataset, "problems", []) or [])
    rows, listed = [], []
    wanted = list(dataset.splits) if args.splits.strip() == "all" and dataset.splits else None
    if wanted is not None and dataset.root is not None:
        for k, missing in incomplete_splits(Path(dataset.root) / "splits").items():
            problems.append(f"{dataset.root}: split {k} is incomplete: missing splits/{', splits/'.join(missing)}")
            rows.append({"split": k, "train": None, "val": None, "test": None, "status": "incomplete"})
    for k in wanted or parse_splits(args.splits, dataset.splits, dataset.root or args.data):
        if hasattr(dataset, "split_problems"):  # every bad line, not only the first
            found = [str(e) for e in dataset.split_problems(k)]
            if found:
                problems.extend(found)
                rows.append({"split": k, "train": None, "val": None, "test": None,
                             "status": f"{len(found)} problem(s) in its split files; images not decoded"})
                continue
        try:
            split = dataset.load_split(k)
        except MembenchError as exc:
            problems.append(str(exc))
            rows.append({"split": k, "train": None, "val": None, "test": None, "status": "invalid"})
            continue
        rows.append({"split": k, **{p: len(s) for p, s in split.parts().items()}, "status": "ok"})
        for samples in split.parts().values():
            listed.extend(samples)
    with console.status(f"decoding {len({s.path for s in listed})} images"):
        check = check_images(listed)
    problems.extend(check.problems())
    emit(rows, ["split", "train", "val", "test", "status"], "table",
         title=f"{dataset.name} at {dataset.root or 'demo cache'}: {check.checked} distinct images decoded")
    for note in check.notes():
        print(note)
    if getattr(dataset, "human_consistency", None) is not None:
        print(f"human consistency (split-half rank correlation): {dataset.human_consistency:.3f}")
    for line in problems:
        print(f"problem: {line}")
    print(f"{len(problems)} problem(s) found" if problems else "no problems found")
    return 1 if problems else 0
