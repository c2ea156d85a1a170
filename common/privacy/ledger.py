"""The site's privacy ledger: every DP-SGD step ever taken on a dataset, kept for good.

One JSON file per dataset in the site's ledger folder (node config ``ledger-dir``), named by the
dataset's source fingerprint (``CacheIndex.source_fingerprint``): the same source cases always
reach the same file however they were re-prepared, so re-preparing cannot reset the budget. The
file holds the accountant and delta (fixed for the ledger's life: mixing them changes the maths),
Opacus' history of every step, one record per run or round, and the epsilon spent so far.

Every change re-reads the file under an exclusive lock, checks it, and writes it atomically, so
epsilon accumulates across rounds, runs, crashes, restarts and processes. Charge a run *before*
training (:meth:`PrivacyLedger.charge`): a crash can then never leave spent privacy unrecorded.
"""

from __future__ import annotations

import fcntl
import json
import math
import re
import uuid
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from common.atomic import atomic_write_text
from common.config import PrivacyConfig
from common.errors import ConfigError, FedsynthError
from common.privacy.accounting import (
    History,
    compute_epsilon,
    extend_history,
    history_entry,
    normalize_history,
)

LEDGER_FORMAT = "fedsynth-privacy-ledger"
LEDGER_VERSION = 1
FINGERPRINT_PATTERN = re.compile(r"[0-9a-f]{64}")
"""A source fingerprint is a SHA-256 in lower-case hex; it becomes the ledger's file name."""
KEEP_HINT = (
    "The ledger records the privacy already spent on this dataset, so training stays refused "
    "until it is readable: restore the file from a backup (never delete it: that would reset "
    "the budget), or ask the data owner how to proceed"
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
    """Planned training would spend more than the site's ``privacy.budget-epsilon``."""

    def __init__(
        self, path: Path, spent: float, projected: float, budget: float, delta: float
    ) -> None:
        self.spent, self.projected, self.budget = spent, projected, budget
        remaining = max(0.0, budget - spent)
        super().__init__(
            path,
            f"training refused before it started: it would bring this dataset's epsilon from "
            f"{spent:.4g} (spent so far) to {projected:.4g} at delta {delta:g}, over the budget "
            f"privacy.budget-epsilon = {budget:g} ({remaining:.4g} remains). Plan fewer steps "
            "(training.max-steps, training.local-epochs, federation.num-rounds), add more noise "
            "(privacy.noise-multiplier, or a smaller privacy.target-epsilon), or raise "
            "privacy.budget-epsilon if the data owner agrees",
        )


def _json_float(value: float) -> float | None:
    return value if math.isfinite(value) else None


@dataclass(frozen=True)
class RunRecord:
    """One charge: a run or round's DP-SGD steps, and the dataset's epsilon after them."""

    run_id: str
    when: str
    noise_multiplier: float
    sample_rate: float
    steps: int
    epsilon_after: float

    def to_json(self) -> dict[str, Any]:
        """A JSON-ready dict (an infinite epsilon is written as null)."""
        return {
            "run_id": self.run_id,
            "when": self.when,
            "noise_multiplier": self.noise_multiplier,
            "sample_rate": self.sample_rate,
            "steps": self.steps,
            "epsilon_after": _json_float(self.epsilon_after),
        }

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> RunRecord:
        """Inverse of :meth:`to_json` (raises KeyError, TypeError or ValueError on bad input)."""
        sigma, rate, steps = history_entry(
            data["noise_multiplier"], data["sample_rate"], data["steps"]
        )
        run_id, when, after = data["run_id"], data["when"], data["epsilon_after"]
        if not isinstance(run_id, str) or not run_id or not isinstance(when, str):
            raise ValueError(f"a run record needs a run_id and a when: {dict(data)}")
        if after is not None and (isinstance(after, bool) or not isinstance(after, int | float)):
            raise ValueError(f"epsilon_after must be a number: {dict(data)}")
        epsilon = math.inf if after is None else float(after)
        return cls(run_id, when, sigma, rate, steps, epsilon)


class PrivacyLedger:
    """A site's privacy ledger for one dataset (see the module docstring).

    Open it with :meth:`open`; the constructor is for :meth:`open` and tests.
    """

    def __init__(self, path: Path, fingerprint: str, privacy: PrivacyConfig) -> None:
        self.path = path
        self.fingerprint = fingerprint
        self.privacy = privacy
        self._runs: list[RunRecord] = []
        self._spent: float | None = None

    @classmethod
    def open(cls, folder: Path, fingerprint: str, privacy: PrivacyConfig) -> PrivacyLedger:
        """The ledger of the dataset with source ``fingerprint`` in ``folder`` (empty if new).

        Raises:
            LedgerError: the fingerprint is missing or malformed, or the file cannot be read.
            LedgerCorruptError: the file is not a valid ledger (corrupt JSON, bad entries).
            LedgerMismatchError: the ledger was kept with another ``privacy.accountant`` or
                ``privacy.delta``, or belongs to another dataset.
            ConfigError: ``privacy.delta`` is 0 (DP-SGD needs delta > 0).
        """
        if not FINGERPRINT_PATTERN.fullmatch(fingerprint):
            raise LedgerError(
                folder,
                f"{fingerprint!r} is not a dataset's source fingerprint (a SHA-256 in hex); a "
                "cache prepared by an older fedsynth has none: run `fedsynth data prepare` again",
            )
        if privacy.delta <= 0:
            raise ConfigError("privacy.delta must be > 0 for DP-SGD (e.g. 1e-5)")
        ledger = cls(folder / f"{fingerprint}.json", fingerprint, privacy)
        ledger._reload()
        return ledger

    # -- reading ---------------------------------------------------------------------------
    @property
    def runs(self) -> tuple[RunRecord, ...]:
        """Every charge so far, oldest first."""
        return tuple(self._runs)

    def history(self, *, excluding: str | None = None) -> History:
        """Opacus' history of every charged step (optionally leaving out run ``excluding``)."""
        return normalize_history(
            (run.noise_multiplier, run.sample_rate, run.steps)
            for run in self._runs
            if run.run_id != excluding
        )

    def spent_epsilon(self) -> float:
        """Epsilon spent on this dataset so far, at the ledger's delta."""
        if self._spent is None:
            self._spent = self._epsilon(self.history())
        return self._spent

    def projected_epsilon(self, noise_multiplier: float, sample_rate: float, steps: int) -> float:
        """Epsilon after ``steps`` more steps with these settings."""
        return self._epsilon(extend_history(self.history(), noise_multiplier, sample_rate, steps))

    def check_budget(
        self, planned_noise_multiplier: float, sample_rate: float, planned_steps: int
    ) -> float:
        """The projected epsilon of the planned steps, if it stays within the budget.

        Raises:
            BudgetExceededError: the projection exceeds ``privacy.budget-epsilon``; the message
                gives the spent and remaining budget, the projection, and what to do.
        """
        projected = self.projected_epsilon(planned_noise_multiplier, sample_rate, planned_steps)
        if projected > self.privacy.budget_epsilon:
            raise BudgetExceededError(
                self.path,
                self.spent_epsilon(),
                projected,
                self.privacy.budget_epsilon,
                self.privacy.delta,
            )
        return projected

    # -- writing ---------------------------------------------------------------------------
    def record(
        self, noise_multiplier: float, sample_rate: float, steps: int, *, run_id: str | None = None
    ) -> RunRecord:
        """Append steps already taken (or committed to) and save; never refused by the budget.

        Raises:
            ValueError: ``run_id`` was already recorded.
        """
        with self._locked():
            self._reload()
            return self._append(run_id or uuid.uuid4().hex, noise_multiplier, sample_rate, steps)

    def charge(self, run_id: str, noise_multiplier: float, sample_rate: float, steps: int) -> float:
        """Charge run ``run_id`` for its planned steps before it trains; the spent epsilon after.

        Checks the budget and records, under one lock. Charging a run again (a resumed run) with
        the same noise and sample rate and no more steps is a no-op.

        Raises:
            BudgetExceededError: the planned steps would exceed the budget (nothing is recorded).
            LedgerError: ``run_id`` was charged before with other settings or fewer steps.
        """
        with self._locked():
            self._reload()
            previous = next((run for run in self._runs if run.run_id == run_id), None)
            if previous is None:
                self.check_budget(noise_multiplier, sample_rate, steps)
                self._append(run_id, noise_multiplier, sample_rate, steps)
            elif (previous.noise_multiplier, previous.sample_rate) != (
                noise_multiplier,
                sample_rate,
            ) or steps > previous.steps:
                raise LedgerError(
                    self.path,
                    f"run {run_id} was charged for {previous.steps} steps at noise multiplier "
                    f"{previous.noise_multiplier:g} and sample rate {previous.sample_rate:g}; "
                    f"continuing it with {steps} steps at {noise_multiplier:g} and "
                    f"{sample_rate:g} would spend privacy it was not charged for: resume it "
                    "with its original settings, or start a new run",
                )
        return self.spent_epsilon()

    # -- internals -------------------------------------------------------------------------
    def _epsilon(self, history: History) -> float:
        return compute_epsilon(history, self.privacy.delta, self.privacy.accountant)

    def _append(self, run_id: str, sigma: float, rate: float, steps: int) -> RunRecord:
        if any(run.run_id == run_id for run in self._runs):
            raise ValueError(f"run {run_id} is already in the ledger {self.path}")
        sigma, rate, steps = history_entry(sigma, rate, steps)
        after = self.projected_epsilon(sigma, rate, steps)
        when = datetime.now(UTC).isoformat(timespec="seconds")
        record = RunRecord(run_id, when, sigma, rate, steps, after)
        self._runs.append(record)
        self._spent = after
        self._save()
        return record

    def _save(self) -> None:
        data = {
            "format": LEDGER_FORMAT,
            "format_version": LEDGER_VERSION,
            "fingerprint": self.fingerprint,
            "accountant": self.privacy.accountant,
            "delta": self.privacy.delta,
            "spent_epsilon": _json_float(self.spent_epsilon()),
            "history": [list(entry) for entry in self.history()],
            "runs": [run.to_json() for run in self._runs],
        }
        try:
            atomic_write_text(self.path, json.dumps(data, indent=2) + "\n")
        except OSError as err:
            raise LedgerError(self.path, f"cannot write the privacy ledger ({err})") from None

    @contextmanager
    def _locked(self) -> Iterator[None]:
        """Hold an exclusive lock on the ledger while it is re-read, changed and written."""
        lock = self.path.with_name(f".{self.path.name}.lock")
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            handle = lock.open("a")
        except OSError as err:
            raise LedgerError(self.path, f"cannot open the ledger folder ({err})") from None
        with handle:
            fcntl.flock(handle, fcntl.LOCK_EX)
            try:
                yield
            finally:
                fcntl.flock(handle, fcntl.LOCK_UN)

    def _reload(self) -> None:
        """Read the file again (no file: an empty ledger) and check it against the config."""
        try:
            text = self.path.read_text(encoding="utf-8")
        except FileNotFoundError:
            self._runs, self._spent = [], None
            return
        except (OSError, UnicodeDecodeError) as err:
            raise LedgerError(self.path, f"cannot read the privacy ledger ({err})") from None
        try:
            data = json.loads(text)
            if not isinstance(data, dict) or data.get("format") != LEDGER_FORMAT:
                raise ValueError(f"not a {LEDGER_FORMAT} file")
            self._check_header(data)
            runs = [RunRecord.from_json(run) for run in data["runs"]]
            stored = normalize_history(data["history"])
        except (ValueError, KeyError, TypeError) as err:  # JSONDecodeError is a ValueError
            raise LedgerCorruptError(
                self.path, f"not a valid privacy ledger ({err}). {KEEP_HINT}"
            ) from None
        self._runs, self._spent = runs, None
        if stored != self.history():
            raise LedgerCorruptError(
                self.path, f"its history does not match its run records. {KEEP_HINT}"
            )

    def _check_header(self, data: Mapping[str, Any]) -> None:
        """Refuse a ledger from a newer fedsynth, for another dataset, accountant or delta."""
        if data.get("format_version") != LEDGER_VERSION:
            raise LedgerError(
                self.path,
                f"ledger format version {data.get('format_version')!r} is not "
                f"{LEDGER_VERSION}: open it with the fedsynth version that wrote it",
            )
        if data.get("fingerprint") != self.fingerprint:
            raise LedgerMismatchError(
                self.path,
                f"the ledger inside is for dataset {data.get('fingerprint')!r}, not for "
                f"{self.fingerprint} as its file name says (renamed or copied?): restore "
                "this dataset's own ledger file from a backup",
            )
        accountant, delta = data.get("accountant"), data.get("delta")
        if accountant != self.privacy.accountant:
            raise LedgerMismatchError(
                self.path,
                f"this dataset's epsilon was accounted with the {accountant!r} accountant but "
                f"privacy.accountant = {self.privacy.accountant!r}; epsilons of different "
                f"accountants cannot be combined: set privacy.accountant={accountant} here",
            )
        if delta != self.privacy.delta:
            raise LedgerMismatchError(
                self.path,
                f"this dataset's epsilon was accounted at delta {delta!r} but privacy.delta = "
                f"{self.privacy.delta:g}; epsilons at different deltas cannot be combined: "
                f"set privacy.delta={delta} here",
            )
