"""What every dataset plugin reads the same way, below all of them (lnsim and csvdata use it
too, and release builds on them): a release's MATLAB files, and the human-consistency value
a user gives as --dataset-option human_consistency=X."""

from __future__ import annotations

from pathlib import Path

from membench.errors import MembenchError


def load_mat(path: Path, release: str, missing: str = "", resave: str = "save(FILE, VARIABLE, '-v7')",
             **options) -> dict:
    """A MATLAB file read with scipy (options passed on); its absence (`missing`: where the
    release keeps it), a v7.3 (HDF5) file (`resave`: the MATLAB call that fixes it) or a
    damaged one is a one-line error."""
    import scipy.io

    if not path.is_file():
        raise MembenchError(f"missing: {missing or f'the {release} release has this file'}", path)
    try:
        return scipy.io.loadmat(str(path), **options)
    except NotImplementedError:  # scipy reads MATLAB files up to v7, not v7.3 (HDF5)
        raise MembenchError(f"MATLAB v7.3 (HDF5) file; re-save it in MATLAB with {resave}", path) from None
    except Exception as exc:
        first = str(exc).splitlines()[0] if str(exc) else ""
        raise MembenchError(f"cannot read MATLAB file ({type(exc).__name__}: {first})", path) from None


def variable(data: dict, name: str, path: Path):
    if name not in data:
        found = ", ".join(k for k in data if not k.startswith("__")) or "none"
        raise MembenchError(f"no variable {name!r} (variables found: {found})", path)
    return data[name]


def consistency_option(opts: dict[str, str], what: str = "a correlation") -> float | None:
    """--dataset-option human_consistency=X: a published value the files do not let
    membench compute, shown beside results as the ceiling (unset: None)."""
    text = opts.get("human_consistency")
    if text is None:
        return None
    try:
        value = float(text)
    except ValueError:
        value = float("nan")
    if not -1.0 <= value <= 1.0:
        raise MembenchError(f"dataset option human_consistency must be {what} in [-1, 1], got {text!r}")
    return value
