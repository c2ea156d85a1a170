"""Problems found in site data: one record per problem, so a whole site can be listed at once."""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum
from pathlib import Path

from common.errors import DataError


class ProblemKind(StrEnum):
    """Stable codes of every kind of bad input the data layer recognises."""

    UNREADABLE = "unreadable"
    NOT_3D = "not-3d"
    NON_FINITE = "non-finite"
    GRID_MISMATCH = "grid-mismatch"
    LABEL_NOT_INTEGER = "label-not-integer"
    LABEL_OUTSIDE_SCHEMA = "label-outside-schema"
    LABEL_EMPTY = "label-empty"
    NOT_HU = "not-hounsfield"
    MISSING_PARTNER = "missing-partner"
    BAD_LAYOUT = "bad-layout"
    NO_CASES = "no-cases"
    NO_CONTRAST = "no-contrast"


@dataclass(frozen=True)
class Problem:
    """One thing wrong with one file, with what to do about it."""

    case_id: str
    path: Path
    kind: ProblemKind
    message: str
    hint: str = ""

    def to_error(self) -> DataError:
        """The typed error a caller raises when it stops at this problem."""
        return DataError(self.path, self.kind.value, self.message, self.hint)

    def __str__(self) -> str:
        text = f"{self.path}: {self.message}"
        return f"{text} ({self.hint})" if self.hint else text


class SiteDataError(DataError):
    """A site folder has problems; every one of them is listed."""

    def __init__(self, root: Path, problems: list[Problem], hint: str) -> None:
        self.problems = problems
        lines = "\n".join(f"  - {problem}" for problem in problems)
        count = len(problems)
        message = f"{count} problem{'s' if count != 1 else ''} found:\n{lines}\n"
        super().__init__(root, "site-problems", message, hint)
