"""Training curves in the experiment trackers people already use: `membench run --log
tensorboard[=DIR]` and `--log mlflow[=URI]` (repeatable).

Per job (one model on one split) each tracker gets, live, every epoch of every stage:
`<stage>/train_loss`, `<stage>/val_rho`, `<stage>/val_mse` and `<stage>/lr` at step = the
epoch (1-based, as in the run JSON's stage histories), and at the end the job's test rho and
MSE and its configuration label (membench.results.configuration; "protocol" for the protocol).

    tensorboard  event files in DIR/<run id>/split<k>/ (default DIR: ./tensorboard), written with
                 torch.utils.tensorboard (needs the `tensorboard` package)
    mlflow       one MLflow run per job in the experiment "membench" of the tracking URI (default:
                 MLflow's own, MLFLOW_TRACKING_URI or ./mlflow.db; any URI MLflow accepts, e.g. a
                 tracking server http://host:5000)

Trackers only mirror what the run JSON records; the leaderboard stays the source of truth.
A resumed job logs the epochs it runs; a job reused from an earlier run logs nothing.
"""

from __future__ import annotations

import contextlib
import math
from dataclasses import dataclass
from pathlib import Path

from membench.errors import MembenchError

KINDS = ("tensorboard", "mlflow")
DEFAULT_TENSORBOARD_DIR = "tensorboard"
EXPERIMENT = "membench"
PACKAGES = {"tensorboard": "tensorboard", "mlflow": "mlflow"}
CURVES = ("train_loss", "val_rho", "val_mse", "lr")


@dataclass(frozen=True)
class Tracker:
    """One `--log` value: a tracker kind and where it writes ("" for its default)."""

    kind: str
    target: str = ""

    @property
    def directory(self) -> Path:
        return Path(self.target or DEFAULT_TENSORBOARD_DIR)

    def hint(self) -> str:
        if self.kind == "tensorboard":
            return f"training curves: tensorboard --logdir {self.directory}"
        where = f" --backend-store-uri {self.target}" if self.target else ""
        return f"training curves: mlflow ui{where}   (experiment {EXPERIMENT!r})"


def parse(values) -> list[Tracker]:
    """`--log` values ("tensorboard", "tensorboard=DIR", "mlflow", "mlflow=URI", or a comma list)."""
    out = []
    for value in values or ():
        for item in filter(None, (v.strip() for v in str(value).split(","))):
            kind, _, target = item.partition("=")
            if kind not in KINDS:
                raise MembenchError(f"--log {item}: unknown tracker {kind!r}; choose from {', '.join(KINDS)} "
                                    "(e.g. --log tensorboard or --log mlflow=http://localhost:5000)")
            out.append(Tracker(kind, target.strip()))
    return out


def check_installed(trackers: list[Tracker]) -> None:
    """Before anything trains: each tracker's package is importable."""
    import importlib.util

    for t in trackers:
        if importlib.util.find_spec(PACKAGES[t.kind]) is None:
            raise MembenchError(f"--log {t.kind} needs the {PACKAGES[t.kind]} package: "
                                f"pip install 'membench[tracking]' (or pip install {PACKAGES[t.kind]})")


class _TensorBoard:
    def __init__(self, tracker: Tracker, run_id: str, split: int):
        from torch.utils.tensorboard import SummaryWriter

        from membench.util.files import safe_name

        self.writer = SummaryWriter(log_dir=str(tracker.directory / safe_name(run_id) / f"split{split}"))

    def scalar(self, key: str, value: float, step: int) -> None:
        self.writer.add_scalar(key, value, step)

    def text(self, key: str, value: str) -> None:
        self.writer.add_text(key, value)

    def close(self, failed: bool) -> None:
        self.writer.close()


class _MLflow:
    def __init__(self, tracker: Tracker, run_id: str, split: int, tags: dict):
        from mlflow.tracking import MlflowClient

        self.client = MlflowClient(tracking_uri=tracker.target or None)
        experiment = self.client.get_experiment_by_name(EXPERIMENT)
        experiment_id = experiment.experiment_id if experiment else self.client.create_experiment(EXPERIMENT)
        self.run = self.client.create_run(experiment_id, run_name=f"{run_id} split{split}", tags=tags).info.run_id
        for key, value in tags.items():
            self.client.log_param(self.run, key, value)

    def scalar(self, key: str, value: float, step: int) -> None:
        self.client.log_metric(self.run, key, value, step=step)

    def text(self, key: str, value: str) -> None:
        self.client.set_tag(self.run, key, value)

    def close(self, failed: bool) -> None:
        self.client.set_terminated(self.run, status="FAILED" if failed else "FINISHED")


class JobLog:
    """The trackers of one job; without trackers every call does nothing."""

    def __init__(self, trackers: list[Tracker], run_id: str, model: str, dataset: str, split: int):
        tags = {"membench.run_id": run_id, "model": model, "dataset": dataset, "split": str(split)}
        self.sinks = [_TensorBoard(t, run_id, split) if t.kind == "tensorboard" else _MLflow(t, run_id, split, tags)
                      for t in trackers]

    def epoch(self, stage: str, record: dict) -> None:
        """One entry of a stage's history (membench.engine.stage: epoch, lr, train_loss, val_rho, val_mse)."""
        for key in CURVES:
            value = record.get(key)
            if value is None or not math.isfinite(value):
                continue  # e.g. rho of constant predictions: no point rather than a fake one
            for sink in self.sinks:
                sink.scalar(f"{stage}/{key}", float(value), int(record["epoch"]))

    def finish(self, row: dict) -> None:
        """The job's test metrics and configuration label (the row of results.csv)."""
        for key in ("rho", "mse"):
            if row.get(key) is not None and math.isfinite(float(row[key])):
                for sink in self.sinks:
                    sink.scalar(f"test/{key}", float(row[key]), 0)
        for sink in self.sinks:
            sink.text("configuration", row.get("configuration") or "protocol")
            sink.text("config_id", row.get("config_id") or "")

    def close(self, failed: bool = False) -> None:
        for sink in self.sinks:
            sink.close(failed)


@contextlib.contextmanager
def job_log(trackers, run_id: str, model: str, dataset: str, split: int):
    """A JobLog for the duration of a job: closed when it ends, marked failed if it raised."""
    log = JobLog(parse(trackers), run_id, model, dataset, split)
    try:
        yield log
    except BaseException:
        log.close(failed=True)
        raise
    log.close()
