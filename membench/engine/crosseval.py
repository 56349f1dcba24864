"""Cross-dataset evaluation: the checkpoints of a finished run, scored on another dataset.

A finished run leaves WORK/<run_id>/split<k>/result.json per split (its leaderboard row,
its checkpoint and its provenance). `evaluate_run` rebuilds the model of each split with
the run's own options and preprocessing, loads that split's checkpoint (or, for a
`--train none` run, the same released weights) and scores either

  - part "test": the test images of split k of the evaluation dataset (checkpoint k on
    test split k, so in-domain and transfer numbers use the same protocol), or
  - part "all": every scored image of the evaluation dataset (the union of all parts of
    all its splits), once per checkpoint.

Each split becomes one leaderboard row whose `dataset` is the evaluation dataset and whose
`trained_on` is the dataset the checkpoint was trained on ("" for released weights that
membench did not train), with per-image predictions and provenance naming the source run.
The rows are also kept as WORK/<eval run_id>/split<k>/result.json, as `membench run` does.
"""

from __future__ import annotations

import hashlib
import json
import time
from dataclasses import fields
from pathlib import Path

from membench.engine.job import read_result, write_result
from membench.errors import MembenchError

PARTS = ("test", "all")


def trained_on(row: dict) -> str:
    """The dataset a row's model was trained on: the `trained_on` column when present,
    else the row's dataset for a trained run and "" (released weights) for `--train none`."""
    value = row.get("trained_on")
    if value not in (None, ""):
        return str(value)
    return str(row.get("dataset", "")) if row.get("train_mode") == "full" else ""


def find_run(ref: str, work_dir: Path) -> Path:
    """RUN as a job directory (WORK/<run_id>) or a run id under `work_dir`."""
    path = Path(ref).expanduser()
    candidates = [path] if path.is_dir() else [Path(work_dir) / ref]
    for c in candidates:
        if c.is_dir() and any(c.glob("split*/result.json")):
            return c
    where = candidates[0]
    if not where.is_dir():
        raise MembenchError(f"no finished run {ref!r}: give a run directory (WORK/<run_id>, see `membench "
                            "run --work-dir`) or a run id under --work-dir", where)
    raise MembenchError("no finished job here (split<k>/result.json); finish the run first (`membench run "
                        "... --resume`)", where)


def read_jobs(run_dir: Path) -> dict[int, dict]:
    jobs = {}
    for path in sorted(run_dir.glob("split*/result.json")):
        k = path.parent.name[len("split"):]
        if not k.isdigit():
            continue
        jobs[int(k)] = read_result(path)  # checksum and shape checked: damage is one line naming it
    return jobs


def preprocess_of(provenance: dict, where: Path):
    """The Preprocess the run used (its provenance), lists back to tuples."""
    from membench.spec import Preprocess

    saved = provenance.get("preprocess")
    if not isinstance(saved, dict):
        raise MembenchError("the run's provenance has no preprocessing", where)
    known = {f.name for f in fields(Preprocess)}
    unknown = sorted(set(saved) - known)
    if unknown:
        raise MembenchError(f"the run used preprocessing fields this membench does not know ({', '.join(unknown)}); "
                            "evaluate with the membench version that ran it", where)
    return Preprocess(**{k: tuple(v) if isinstance(v, list) else v for k, v in saved.items()})


def evaluation_samples(dataset, part: str, k: int):
    """The images checkpoint k is scored on."""
    if part == "test":
        check_split(dataset, k)
        return dataset.load_split(k).test
    every = {}
    for j in dataset.splits:
        for samples in dataset.load_split(j).parts().values():
            for s in samples:
                every.setdefault(s.name, s)
    return tuple(every[n] for n in sorted(every))


def check_split(dataset, k: int) -> None:
    if k not in dataset.splits:
        raise MembenchError(f"the evaluation dataset has no split {k} (splits: "
                            f"{', '.join(map(str, dataset.splits)) or 'none'}); use --eval-part all or --splits",
                            dataset.root)


def eval_run_id(source_run: str, dataset, part: str, on_bad_image: str) -> str:
    digest = hashlib.sha256(json.dumps([source_run, dataset.name, dataset.fingerprint(), part, on_bad_image])
                            .encode()).hexdigest()[:8]
    return f"{source_run}__on__{dataset.name}-{part}__{digest}"


def build_model(row: dict, provenance: dict, checkpoint: str | None, where: Path, split: int):
    from membench import registry
    from membench.engine.checkpoints import frozen_sources
    from membench.spec import BuildContext
    from membench.weights.checkpoint_check import load_into

    spec = registry.get_model(row["model"])
    config = provenance.get("config", {})
    authors = None if checkpoint else release_used(spec, provenance, split, where)
    # weights of the whole model replace every tensor (no ImageNet ones needed); those of a
    # part (a probe's head) load onto the model as the run built it
    whole = authors is not None and not authors.release.part
    ctx = BuildContext(pretrained=bool(config.get("pretrained", True)) and not whole,
                       init=config.get("init", "imagenet"), options=dict(config.get("options") or {}), device="cpu")
    if checkpoint and not Path(checkpoint).is_file():
        raise MembenchError("the run's checkpoint is gone (smoke and quick runs delete theirs unless run with "
                            "--keep-checkpoints); rerun the job to evaluate it", Path(checkpoint))
    sources = frozen_sources(Path(checkpoint)) if checkpoint else None
    if sources is not None:  # its frozen parts come from the files it names
        ctx.upstream.update(sources)
    model = spec.builder()(ctx)
    if checkpoint:  # as `membench run --train none --checkpoint` loads one (frugal or whole, strictly)
        load_into(model, spec.name, Path(checkpoint))
    elif authors is not None:  # the authors' weights the run evaluated, loaded as the run loaded them
        authors.load_into(model, split)
    elif row.get("train_mode") == "full":
        raise MembenchError("this trained job kept no checkpoint", where)
    return spec, model


def release_used(spec, provenance: dict, split: int, where: Path):
    """The installed authors' weights a `--train none` run evaluated (its run JSON names them),
    checked to be the very checkpoint it used; None for a run that used none."""
    used = provenance.get("released_weights")
    if not used:
        return None
    from membench.weights import released

    installed = released.installed(spec)
    if installed is None:
        raise MembenchError(f"split {split}: the run evaluated {used.get('label', 'released weights')}, which are not "
                            f"installed here: `membench weights fetch {spec.name}` (or `weights import`) first",
                            where)
    _, entry = installed.checkpoint(split)
    if entry["sha256"] != used.get("sha256"):
        raise MembenchError(f"split {split}: the installed {installed.release.name} checkpoint (sha256 "
                            f"{entry['sha256'][:12]}) is not the one the run evaluated "
                            f"({str(used.get('sha256'))[:12]}): install that release again", where)
    return installed


def _without_rho_note(notes: str) -> str:
    """The source row's notes less its own "rho undefined (...)": that said why the source
    run's test rho was undefined, not this evaluation's."""
    return "; ".join(p for p in notes.split("; ") if p and not p.startswith("rho undefined ("))


def check_inputs(run_dir: Path, jobs: dict[int, dict], chosen: list[int]) -> None:
    """What every chosen split needs, checked before any split is scored: its model is
    registered and takes the run's options, its preprocessing is known and its checkpoint
    is still on disk (one line naming every split whose checkpoint is gone)."""
    from membench import registry

    gone = []
    for k in chosen:
        saved, where = jobs[k], run_dir / f"split{k}" / "result.json"
        preprocess_of(saved["provenance"], where)
        spec = registry.get_model(saved["row"]["model"])
        spec.check_options(dict((saved["provenance"].get("config") or {}).get("options") or {}))
        checkpoint = saved.get("checkpoint")
        if checkpoint and not Path(checkpoint).is_file():
            gone.append((k, Path(checkpoint)))
        elif not checkpoint and saved["row"].get("train_mode") == "full":
            raise MembenchError(f"split {k}: this trained job kept no checkpoint", where)
        elif not checkpoint:
            release_used(spec, saved["provenance"], k, where)
    if gone:
        which = (f"checkpoint of split {gone[0][0]} is" if len(gone) == 1 else
                 f"checkpoints of splits {', '.join(str(k) for k, _ in gone)} are")
        raise MembenchError(f"the run's {which} gone (smoke and quick runs delete theirs "
                            "unless run with --keep-checkpoints; `membench runs` shows which were kept): rerun "
                            "the job with --keep-checkpoints, or choose other --splits", gone[0][1])


def _git_dirty():
    from membench.results.identity import git_dirty

    dirty = git_dirty()
    return "" if dirty is None else dirty


def evaluate_run(run_dir: Path, dataset, *, part: str = "test", splits: list[int] | None = None, out: Path,
                 work_dir: Path, device: str = "auto", batch_size: int = 32, on_bad_image: str = "fail",
                 say=print, progress=None) -> list[dict]:
    """Score every (selected) split's checkpoint of the run in `run_dir` on `dataset`;
    rows go to the leaderboard `out`. Returns the rows."""
    from membench.engine.device import resolve_device
    from membench.results.identity import pin_source_state
    from membench.results.leaderboard import add_result, check_predictions, valid_rows
    from membench.util.files import check_writable, refuse_links

    pin_source_state()  # the commit the code was loaded from, not the one when a row is written
    if part not in PARTS:
        raise MembenchError(f"--eval-part must be one of {', '.join(PARTS)}, not {part!r}")
    if batch_size < 1:
        raise MembenchError("--batch-size must be positive")
    jobs = read_jobs(run_dir)
    chosen = sorted(jobs) if splits is None else splits
    missing = [k for k in chosen if k not in jobs]
    if missing:
        raise MembenchError(f"the run has no finished split {', '.join(map(str, missing))} (finished: "
                            f"{', '.join(map(str, sorted(jobs)))})", run_dir)
    for k in chosen if part == "test" else ():
        check_split(dataset, k)
    check_inputs(run_dir, jobs, chosen)  # every split's model, options and checkpoint, before any work
    check_writable(out)
    valid_rows(Path(out) / "results.csv")
    source_run = jobs[chosen[0]]["row"]["run_id"]
    run_id = eval_run_id(source_run, dataset, part, on_bad_image)
    for k in chosen:  # each split's result.json goes to WORK/<run_id>/split<k>: never through a link
        refuse_links(Path(work_dir) / run_id / f"split{k}", work_dir)
    samples_of = _usable_samples(dataset, part, chosen, on_bad_image, say)
    dev = resolve_device(device)
    rows = []
    for k in chosen:
        job = _SplitJob(run_dir, jobs, k, chosen, source_run, run_id, dataset, part, on_bad_image, batch_size)
        row, predictions, provenance = job.evaluate(samples_of[k], dev, say, progress)
        check_predictions(row, predictions)  # non-finite (NaN weights): an error before anything is written
        write_result(Path(work_dir) / run_id / f"split{k}", row, jobs[k].get("checkpoint"), predictions, provenance,
                     leaderboard=out)
        add_result(out, row, predictions, provenance)
        rows.append(row)
    return rows


def _usable_samples(dataset, part: str, chosen: list[int], on_bad_image: str, say) -> dict:
    """Every image decoded once before any model runs: a bad file stops now (or is skipped)."""
    from membench.data.images import apply_policy, check_images

    samples_of = {k: evaluation_samples(dataset, part, k) for k in chosen}
    check = check_images([s for k in chosen for s in samples_of[k]])
    apply_policy(check, on_bad_image)
    if check.bad:
        say(f"skipping {len(check.bad)} missing or corrupt images (--on-bad-image skip)")
        samples_of = {k: tuple(s for s in v if str(s.path) not in check.bad) for k, v in samples_of.items()}
    return samples_of


class _SplitJob:
    """Checkpoint k of the source run scored on its evaluation images: one row."""

    def __init__(self, run_dir, jobs, k, chosen, source_run, run_id, dataset, part, on_bad_image, batch_size):
        self.run_dir, self.jobs, self.k, self.chosen = run_dir, jobs, k, chosen
        self.source_run, self.run_id, self.dataset, self.part = source_run, run_id, dataset, part
        self.on_bad_image, self.batch_size = on_bad_image, batch_size
        self.saved = jobs[k]

    def evaluate(self, samples, dev, say, progress):
        from membench.engine.inference import predict
        from membench.results.metrics import mse, rho_note, spearman

        started = time.time()
        k, dataset, part = self.k, self.dataset, self.part
        src_row, src_prov = self.saved["row"], self.saved["provenance"]
        where = self.run_dir / f"split{k}" / "result.json"
        pre = preprocess_of(src_prov, where)
        spec, model = build_model(src_row, src_prov, self.saved.get("checkpoint"), where, k)
        if len(samples) < 2:
            raise MembenchError(f"split {k}: fewer than 2 usable evaluation images", dataset.root)
        say(f"{spec.name} (split {k} of {self.source_run}) on {dataset.name}: {len(samples)} {part} images")
        scored = dev.prepare(model)  # predict reads the active feature store, if any
        task = progress.add_task(f"split {k}: {dataset.name} {part}", total=len(samples)) if progress else None
        preds = predict(scored, samples, pre, dev, batch_size=self.batch_size,
                        progress=(lambda n: progress.advance(task, n)) if progress else None)
        if progress:
            progress.remove_task(task)
        truth = [s.score for s in samples]
        row = self.row(src_row, dev, len(samples), spearman(preds, truth), mse(preds, truth),
                       round(time.time() - started, 2), rho_note(preds, truth))
        predictions = [(s.name, s.score, float(p)) for s, p in zip(samples, preds)]
        return row, predictions, self.provenance(spec, src_prov, dev)

    def row(self, src_row: dict, dev, n: int, rho: float, err: float, seconds: float, rho_note: str = "") -> dict:
        from membench import __version__
        from membench.engine.provenance import git_commit, hardware

        k, dataset = self.k, self.dataset
        source_trained_on = trained_on(src_row)
        scored_on = f"test split {k} of {dataset.name}" if self.part == "test" else f"all {n} images of {dataset.name}"
        note = (f"cross-dataset: checkpoint of run {self.source_run} split {k} "
                f"(trained on {source_trained_on or 'its released weights'}), scored on {scored_on}")
        return {  # the trained model's own columns (its configuration too), then the evaluation's
            **{c: src_row.get(c) for c in ("model", "params_total", "params_used", "params_trainable", "preset",
                                           "configuration", "config_id", "precision", "train_mode", "init",
                                           "pretrained", "epochs_run", "best_epoch", "best_val_rho", "seed")},
            "run_id": self.run_id, "dataset": dataset.name, "trained_on": source_trained_on, "split": k,
            "rho": rho, "mse": err, "n_test": n,
            "device": dev.type, "hardware": hardware(dev.type), "seconds": seconds,
            "git_commit": git_commit(), "git_dirty": _git_dirty(), "membench_version": __version__,
            "timestamp": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
            "data_fingerprint": dataset.fingerprint(),
            "notes": "; ".join(x for x in (note, _without_rho_note(src_row.get("notes") or ""), rho_note) if x),
        }

    def provenance(self, spec, src_prov: dict, dev) -> dict:
        from membench.data.feature_store import describe
        from membench.engine.provenance import environment

        dataset = self.dataset
        return {
            "run_id": self.run_id, "model": spec.name, "plugin": spec.plugin, "citation": spec.citation,
            "evaluated_from": {"run_id": self.source_run, "run_dir": str(self.run_dir),
                               "trained_on": trained_on(self.saved["row"]),
                               "checkpoints": {str(j): self.jobs[j].get("checkpoint") for j in self.chosen},
                               "source_provenance": src_prov},
            "dataset": {"name": dataset.name, "root": str(dataset.root), "fingerprint": dataset.fingerprint(),
                        "human_consistency": getattr(dataset, "human_consistency", None)},
            "eval_part": self.part, "on_bad_image": self.on_bad_image, "batch_size": self.batch_size,
            "preprocess": src_prov.get("preprocess"), "feature_store": describe(),
            "environment": environment(dev.type),
        }
