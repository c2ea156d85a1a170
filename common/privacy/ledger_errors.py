"""The privacy ledger's typed errors (re-exported by :mod:`common.privacy.ledger`)."""

from __future__ import annotations

from pathlib import Path

from common.errors import FedsynthError

KEEP_HINT = (
    "The ledger records the privacy already spent on this site's cases, so training stays "
    "refused until it is readable: restore the file from a backup (never delete it: that would "
    "reset the budget), or ask the data owner how to proceed"
)


class LedgerError(FedsynthError):
    """A privacy ledger cannot be used as it is; ``path`` names the file or folder."""

    def __init__(self, path: Path, message: str) -> None:
        self.path = path
        super().__init__(f"{path}: {message}")


class LedgerCorruptError(LedgerError):
    """The ledger file is not valid JSON or not a well-formed ledger."""


class LedgerMismatchError(LedgerError):
    """The ledger was kept with another accountant, delta or dataset than configured."""


class BudgetExceededError(LedgerError):
    """Planned training would bring a case past the site's ``privacy.budget-epsilon``.

    ``spent`` and ``projected`` are the worst case's; ``cases_over`` of the ``cases`` trained on
    would pass the budget; ``position`` (1-based, in the cache's case order) names the worst case
    without naming the patient, so the message may be logged anywhere at the site.
    """

    def __init__(
        self,
        path: Path,
        spent: float,
        projected: float,
        budget: float,
        delta: float,
        *,
        cases_over: int = 1,
        cases: int = 1,
        position: int = 1,
    ) -> None:
        self.spent, self.projected, self.budget = spent, projected, budget
        self.cases_over, self.cases, self.position = cases_over, cases, position
        remaining = max(0.0, budget - spent)
        super().__init__(
            path,
            f"training refused before it started: it would bring {cases_over} of the {cases} "
            f"cases it trains on over the budget privacy.budget-epsilon = {budget:g}; the worst, "
            f"case {position} in the cache's case order, from {spent:.4g} (spent so far) to "
            f"{projected:.4g} at delta {delta:g} ({remaining:.4g} remains). Plan fewer steps "
            "(training.max-steps, training.local-epochs, federation.num-rounds), add more noise "
            "(privacy.noise-multiplier, or a smaller privacy.target-epsilon), leave the spent "
            "cases out of the dataset, or raise privacy.budget-epsilon if the data owner agrees",
        )
