"""What a result records so that every number can be traced to what produced it: the run's
configuration (membench.results.configuration), the recipe each stage executed, the git state of
the code, the versions of membench and of the plugin that provided the model, and the
sha256 of every weight or checkpoint file that was loaded.

No torch here; the runner calls `record` once per job. The files a job loads are collected
by membench.weights.files_loaded, the precision helpers live in membench.engine.precision.
"""

from __future__ import annotations

from dataclasses import asdict
from functools import lru_cache
from pathlib import Path

from membench.results.configuration import Configuration, from_settings
from membench.weights.files_loaded import end_job, sha256_file

# -- the configuration of a job ------------------------------------------------------------

def configuration_of_job(spec, cfg, *, precision: str, outcomes: dict | None = None, extra: dict | None = None,
                         dataset=None) -> Configuration:
    """The configuration a job of `spec` ran with. `precision` is what the device actually
    computed in ("fp32" on the CPU whatever was asked); the frozen-train cache counts only
    when a stage used it (`outcomes`); `extra` holds further non-default settings (released
    weights, image decoding)."""
    from membench.options import file_options

    options = dict(getattr(cfg, "options", {}) or {})
    declared = tuple(getattr(spec, "options", ()))
    files = {k: sha256_file(v) for k, v in file_options(declared, options).items() if Path(v).expanduser().is_file()}
    train = cfg.train if getattr(spec, "trainable", True) else "full"  # an evaluate-only model has no other mode
    extra = dict(extra or {})
    if "weights" in extra:
        train = "full"  # "the authors' weights" already says: evaluated without training
    checkpoint = str(cfg.checkpoint) if cfg.checkpoint and train == "none" else None
    if checkpoint and Path(checkpoint).is_file():
        files["checkpoint"] = sha256_file(checkpoint)
    used_cache = max([int(o.get("frozen_train_cache") or 0) for o in (outcomes or {}).values()] or [0])
    return from_settings({
        "preset": cfg.preset, "options": options, "train": train, "checkpoint": checkpoint,
        "pretrained": cfg.pretrained, "init": cfg.init, "patience": cfg.patience, "precision": precision,
        "frozen_train_cache": used_cache, "dataset_options": dataset_settings(dataset, cfg),
        "extra": extra, "files": files,
    }, declared)


def dataset_settings(dataset, cfg) -> dict[str, str]:
    """Dataset options that change the numbers on the same data: a dataset object may list
    them (`configuration` attribute); otherwise the split seed, when not the default."""
    own = getattr(dataset, "configuration", None)
    if isinstance(own, dict):
        return {str(k): str(v) for k, v in own.items()}
    given = dict(getattr(cfg, "dataset_options", {}) or {})
    seed = given.get("seed")
    return {"seed": str(seed)} if seed not in (None, "", "0") else {}


# -- provenance -------------------------------------------------------------------------------

@lru_cache(maxsize=1)
def git_commit() -> str:
    """membench's HEAD commit, read once per process: a run pins it when it starts
    (`pin_source_state`), so that a commit made while a long run trains is not
    recorded as the code that produced its results."""
    import subprocess

    try:
        out = subprocess.run(["git", "rev-parse", "--short=12", "HEAD"], cwd=Path(__file__).parent,
                             capture_output=True, text=True, timeout=5)
        return out.stdout.strip() if out.returncode == 0 else "unknown"
    except (OSError, subprocess.SubprocessError):
        return "unknown"


# What can change a result: the code and its declared dependencies. Docs, tests and the
# leaderboards/ a run may itself write into (an in-repo --out) cannot.
CODE_PATHS = (":/membench", ":/plugins", ":/pyproject.toml")


@lru_cache(maxsize=1)
def git_dirty() -> bool | None:
    """Whether membench's code has uncommitted changes (`code_dirty`), read once per process,
    like the commit."""
    return code_dirty(Path(__file__).parent)


def code_dirty(where: Path) -> bool | None:
    """Whether the git checkout holding `where` has uncommitted changes to tracked files under
    CODE_PATHS (None: not a git checkout, e.g. an installed wheel)."""
    import subprocess

    try:
        out = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no", "--", *CODE_PATHS],
                             cwd=where, capture_output=True, text=True, timeout=10)
    except (OSError, subprocess.SubprocessError):
        return None
    return bool(out.stdout.strip()) if out.returncode == 0 else None


def pin_source_state() -> None:
    """Read the commit and the dirty flag now, at the start of a run: every result of this
    process records the state of the tree its code was loaded from, not the state of the
    tree when the result was written (an edit or commit during a run would else be
    recorded as the code that ran)."""
    git_commit()
    git_dirty()


def distribution_versions(spec) -> dict:
    """{"membench": version, "plugin": {"module", "distribution", "version"}}: the installed
    distributions of membench and of the package whose code built the model."""
    from importlib.metadata import PackageNotFoundError, packages_distributions, version

    def dist_version(name):
        try:
            return version(name)
        except PackageNotFoundError:
            return None

    build = spec.build if isinstance(spec.build, str) else getattr(spec.build, "__module__", "") or ""
    module = build.partition(":")[0] or (spec.plugin or "")
    top = module.split(".")[0]
    dists = packages_distributions().get(top, [])
    dist = dists[0] if dists else None
    return {"membench": dist_version("membench"),
            "plugin": {"name": spec.plugin, "module": module, "distribution": dist,
                       "version": dist_version(dist) if dist else None}}


def executed_recipe(stages, outcomes: dict, patience: int) -> list[dict]:
    """Per stage, the recipe it executed: its own settings with the patience in force, or
    for a chained stage the upstream job's recipe and run id (never the placeholder Stage's
    defaults)."""
    out = []
    for stage in stages:
        if stage.model:
            done = outcomes.get(stage.name, {})
            out.append({"name": stage.name, "model": stage.model, "run_id": done.get("run_id"),
                        "recipe": done.get("recipe")})
        else:
            out.append({**asdict(stage), "patience": stage.patience or patience})
    return out


def identify(row: dict, provenance: dict, configuration: Configuration, *, spec, stages, outcomes: dict,
             cfg, precision: str, loaded: dict[str, str]) -> None:
    """Add what identifies a job's numbers to its row and run JSON, in place: configuration
    (readable and id), precision, git dirty flag; in the JSON also the executed recipe per
    stage, init/pretrained as the row states them, the distributions and the files loaded."""
    dirty = git_dirty()
    row.update({"configuration": configuration.label, "config_id": configuration.id, "precision": precision,
                "git_dirty": "" if dirty is None else dirty})
    provenance["configuration"] = configuration.to_dict()
    provenance["recipe"] = executed_recipe(stages, outcomes, cfg.patience)
    config = provenance.setdefault("config", {})
    config.update({"init": row.get("init", config.get("init")), "init_requested": cfg.init,
                   "pretrained": row.get("pretrained", config.get("pretrained")), "precision": precision})
    env = provenance.setdefault("environment", {})
    env["git_dirty"] = dirty
    env["distributions"] = distribution_versions(spec)
    provenance["files_loaded"] = loaded


def record(row: dict, provenance: dict, *, spec, cfg, device, dataset, stages, outcomes: dict,
           train_mode: str) -> None:
    """Everything above for one finished job (the runner's one call): the configuration it
    ran with, then `identify`. Closes the job's collection of loaded files."""
    from membench.data import images
    from membench.weights import released

    precision = "bf16" if device.amp else "fp32"
    extra = {}
    if hasattr(released, "configuration_extra"):
        extra.update(released.configuration_extra(spec, train_mode, cfg.checkpoint))
    if hasattr(images, "decoding_settings"):
        extra.update({k.replace("_", "-"): v for k, v in images.decoding_settings().items()})
    configuration = configuration_of_job(spec, cfg, precision=precision, outcomes=outcomes, extra=extra,
                                         dataset=dataset)
    identify(row, provenance, configuration, spec=spec, stages=stages, outcomes=outcomes, cfg=cfg,
             precision=precision, loaded=end_job())
