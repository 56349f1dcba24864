"""`membench data check`: every problem of a dataset at once (also run at the end of
`membench data download`)."""

from __future__ import annotations

from pathlib import Path


def cmd_check(args) -> int:
    """Collect every problem (not only the first) and report them all; exit 1 if any."""
    from rich.console import Console

    from membench.commands.common import apply_image_options, open_dataset
    from membench.data.images import check_images
    from membench.data.layout import incomplete_splits, parse_splits
    from membench.errors import MembenchError
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
    for note in getattr(dataset, "notes", None) or []:  # what the plugin read and set aside, not a problem
        print(f"note: {note}")
    if getattr(dataset, "human_consistency", None) is not None:
        print(f"human consistency (split-half rank correlation): {dataset.human_consistency:.3f}")
    else:
        from membench import registry

        spec = registry.datasets().get(args.dataset or "")
        if spec is not None and spec.consistency_note:
            print(f"human consistency: {spec.consistency_note}")
    for line in problems:
        print(f"problem: {line}")
    print(f"{len(problems)} problem(s) found" if problems else "no problems found")
    return 1 if problems else 0
