"""The one exception type the CLI turns into a clean one-line message (exit code 2)."""

from __future__ import annotations

from pathlib import Path


class MembenchError(Exception):
    """A problem the user can fix: bad input, missing file, unknown name.

    `where` names the file (and line) so the message reads `file:line: what is wrong`.
    """

    def __init__(self, message: str, path: str | Path | None = None, line: int | None = None):
        self.message = message
        self.path = None if path is None else str(path)
        self.line = line
        super().__init__(str(self))

    def __str__(self) -> str:
        if self.path is None:
            return self.message
        where = self.path if self.line is None else f"{self.path}:{self.line}"
        return f"{where}: {self.message}"


class WeightsUnavailable(MembenchError):
    """Published or ImageNet weights are not on this machine and could not be downloaded
    (offline, or no URL for them: membench.weights.resolve)."""


class StopRequested(Exception):
    """Raised inside training when the user pressed Ctrl-C and a checkpoint was saved."""
