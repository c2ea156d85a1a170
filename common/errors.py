"""Typed errors that users see: each names what is wrong, where, and what to do."""

from __future__ import annotations

from pathlib import Path


class FedsynthError(Exception):
    """Base of every error fedsynth raises for a user's mistake; the CLI prints it as a message."""


class ConfigError(FedsynthError, ValueError):
    """A run setting is unknown, of the wrong type or out of range."""


class DataError(FedsynthError, ValueError):
    """A file or folder of site data cannot be used as it is.

    Attributes:
        path: the file or folder at fault.
        kind: a short stable code for the problem (see ``common.data.problems.ProblemKind``).
        hint: what the user can do about it.
    """

    def __init__(self, path: Path | str, kind: str, message: str, hint: str = "") -> None:
        self.path = Path(path)
        self.kind = kind
        self.message = message
        self.hint = hint
        text = f"{self.path}: {message}"
        if hint:
            text += f" ({hint})"
        super().__init__(text)


class DiskFullError(FedsynthError, OSError):
    """The disk ran out of space while an output was written; the output is as it was."""

    def __init__(self, path: Path) -> None:
        self.path = path
        super().__init__(
            f"the disk holding {path} is full (no space left on device); nothing was changed "
            f"there: free some space (or write elsewhere) and run the command again"
        )


class OutputExistsError(FedsynthError, FileExistsError):
    """An output folder already holds files and overwriting was not asked for."""

    def __init__(self, path: Path, hint: str = "choose another --out or pass --overwrite") -> None:
        self.path = path
        super().__init__(f"{path} already exists and is not empty: {hint}")
