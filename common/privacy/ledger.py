"""The site's privacy ledger: every DP-SGD step ever taken on each of its patients, kept for good.

One JSON file per site (``site-ledger.json`` in node config ``ledger-dir``; the layout is in
:mod:`common.privacy.ledger_format`) with a history per case, keyed by each case's source
fingerprint (``CacheIndex.case_fingerprints``): a run charges every case it trains on, so adding,
removing or leaving out a case never resets the others, and a case in two datasets accumulates
both. A case's epsilon is computed from the runs that included it, each at its own sample rate
(that run's batch over its dataset's size). The numbers reported for a dataset (its spent and
projected epsilon) are the maximum over its cases. Version-1 ledgers (one file per dataset)
are carried over the first time their dataset is opened (:mod:`common.privacy.ledger_migration`).

Every change re-reads the file under an exclusive lock, checks it, and writes it atomically, so
epsilon accumulates across rounds, runs, crashes, restarts and processes. Charge a run *before*
training (:meth:`PrivacyLedger.charge`): a crash can then never leave spent privacy unrecorded.
One file rather than one per case: a charge of a 1,000-case dataset is then one atomic write
under one lock (all of its cases or none), and the folder stays one file however many cases.
"""

from __future__ import annotations

import fcntl
import json
import uuid
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from datetime import UTC, datetime
from pathlib import Path

from common.atomic import atomic_write_text
from common.config import PrivacyConfig
from common.data.cache import CacheIndex
from common.errors import ConfigError
from common.privacy.accounting import History, compute_epsilon, extend_history, history_entry
from common.privacy.ledger_errors import (
    BudgetExceededError,
    LedgerCorruptError,
    LedgerError,
    LedgerMismatchError,
)
from common.privacy.ledger_format import (
    FINGERPRINT_PATTERN,
    SITE_LEDGER_FILE,
    LedgerContents,
    RunRecord,
    case_set_id,
    contents_json,
    parse_contents,
    read_json,
)
from common.privacy.ledger_migration import (
    carry_over,
    mark_carried_over,
    v1_path,
    warn_of_others,
)

__all__ = [
    "BudgetExceededError",
    "LedgerCorruptError",
    "LedgerError",
    "LedgerMismatchError",
    "PrivacyLedger",
    "RunRecord",
]

REPREPARE_HINT = "a cache prepared by an older fedsynth has none: run `fedsynth data prepare` again"


def _check_fingerprints(folder: Path, cases: Sequence[str], dataset: str) -> None:
    """Refuse missing or malformed fingerprints, and two cases with the same source image."""
    if not cases:
        raise LedgerError(folder, f"the dataset has no per-case fingerprints; {REPREPARE_HINT}")
    named = [("case", case) for case in cases] + ([("dataset", dataset)] if dataset else [])
    for name, value in named:
        if not FINGERPRINT_PATTERN.fullmatch(value):
            raise LedgerError(
                folder,
                f"{value!r} is not a {name}'s source fingerprint (a SHA-256 in hex); "
                f"{REPREPARE_HINT}",
            )
    first: dict[str, int] = {}
    for position, case in enumerate(cases, start=1):
        if case in first:
            raise LedgerError(
                folder,
                f"cases {first[case]} and {position} of this dataset (in the cache's case order) "
                "hold the same source image; DP-SGD's guarantee is per patient, so a patient "
                "twice in a dataset spends more than it accounts for: leave the copy out",
            )
        first[case] = position


class PrivacyLedger:
    """A site's privacy ledger, seen from one dataset's cases (see the module docstring).

    Open it with :meth:`open` or :meth:`for_cache`; the constructor is for them and tests.
    """

    def __init__(self, folder: Path, cases: Sequence[str], privacy: PrivacyConfig) -> None:
        self.path = folder / SITE_LEDGER_FILE
        self.cases = tuple(cases)
        """The dataset's per-case source fingerprints, in the cache's case order."""
        self.case_set = case_set_id(self.cases)
        self.privacy = privacy
        self._contents = LedgerContents()
        self._epsilons: dict[tuple[tuple[float, float, int], ...], float] = {}

    @classmethod
    def open(
        cls, folder: Path, cases: Sequence[str], privacy: PrivacyConfig, *, dataset: str = ""
    ) -> PrivacyLedger:
        """The site ledger in ``folder`` for a dataset of ``cases`` (fingerprints, in order).

        ``dataset`` (the dataset's source fingerprint) carries its version-1 ledger over.

        Raises:
            LedgerError: a fingerprint is missing or malformed, two cases hold the same image,
                or the file cannot be read.
            LedgerCorruptError: the file is not a valid ledger (corrupt JSON, bad entries).
            LedgerMismatchError: the ledger was kept with another ``privacy.accountant`` or
                ``privacy.delta``, or a version-1 file belongs to another dataset.
            ConfigError: ``privacy.delta`` is 0 (DP-SGD needs delta > 0).
        """
        _check_fingerprints(folder, cases, dataset)
        if privacy.delta <= 0:
            raise ConfigError("privacy.delta must be > 0 for DP-SGD (e.g. 1e-5)")
        ledger = cls(folder, cases, privacy)
        if dataset and v1_path(folder, dataset).exists():
            with ledger._locked():
                ledger._reload()
                if carry_over(folder, dataset, ledger.cases, privacy, ledger._contents):
                    ledger._save()
                mark_carried_over(folder, dataset)
        ledger._reload()
        if dataset and folder.is_dir():
            warn_of_others(folder, ledger._contents, dataset)
        return ledger

    @classmethod
    def for_cache(cls, folder: Path, index: CacheIndex, privacy: PrivacyConfig) -> PrivacyLedger:
        """The site ledger in ``folder`` for the cases of a prepared cache (see :meth:`open`)."""
        return cls.open(folder, index.case_fingerprints, privacy, dataset=index.source_fingerprint)

    # -- reading ---------------------------------------------------------------------------
    @property
    def runs(self) -> tuple[RunRecord, ...]:
        """Every charge that included a case of this dataset, oldest first."""
        mine = set(self.cases)
        sets = self._contents.case_sets
        return tuple(run for run in self._contents.runs if mine & sets[run.case_set])

    def case_histories(self, *, excluding: str | None = None) -> list[History]:
        """Each case's history (every run that included it, but ``excluding``), in order."""
        return [self._contents.history_of(case, excluding=excluding) for case in self.cases]

    def case_epsilons(self) -> list[float]:
        """Epsilon spent on each case of this dataset so far, in the cache's case order."""
        return [self._epsilon(history) for history in self.case_histories()]

    def history(self, *, excluding: str | None = None) -> History:
        """The history of this dataset's most spent case (optionally but run ``excluding``)."""
        histories = self.case_histories(excluding=excluding)
        return max(histories, key=self._epsilon)

    def spent_epsilon(self) -> float:
        """Epsilon spent so far on this dataset's most spent case, at the ledger's delta."""
        return max(self.case_epsilons())

    def projected_epsilons(
        self, noise_multiplier: float, sample_rate: float, steps: int
    ) -> list[float]:
        """Each case's epsilon after ``steps`` more steps with these settings, in order."""
        return [
            self._epsilon(extend_history(history, noise_multiplier, sample_rate, steps))
            for history in self.case_histories()
        ]

    def projected_epsilon(self, noise_multiplier: float, sample_rate: float, steps: int) -> float:
        """The most spent case's epsilon after ``steps`` more steps with these settings."""
        return max(self.projected_epsilons(noise_multiplier, sample_rate, steps))

    def check_budget(
        self, planned_noise_multiplier: float, sample_rate: float, planned_steps: int
    ) -> float:
        """The projected epsilon of the planned steps, if every case stays within the budget.

        Raises:
            BudgetExceededError: a case's projection exceeds ``privacy.budget-epsilon``; the
                message gives how many cases would, and the worst one's position, spent and
                projected epsilon, and what to do.
        """
        projected = self.projected_epsilons(planned_noise_multiplier, sample_rate, planned_steps)
        worst = max(range(len(projected)), key=projected.__getitem__)
        over = sum(1 for epsilon in projected if epsilon > self.privacy.budget_epsilon)
        if over:
            raise BudgetExceededError(
                self.path,
                self.case_epsilons()[worst],
                projected[worst],
                self.privacy.budget_epsilon,
                self.privacy.delta,
                cases_over=over,
                cases=len(projected),
                position=worst + 1,
            )
        return projected[worst]

    # -- writing ---------------------------------------------------------------------------
    def record(
        self, noise_multiplier: float, sample_rate: float, steps: int, *, run_id: str | None = None
    ) -> RunRecord:
        """Append steps already taken (or committed to) on every case and save; never refused
        by the budget.

        Raises:
            ValueError: ``run_id`` was already recorded.
        """
        with self._locked():
            self._reload()
            return self._append(run_id or uuid.uuid4().hex, noise_multiplier, sample_rate, steps)

    def charge(self, run_id: str, noise_multiplier: float, sample_rate: float, steps: int) -> float:
        """Charge run ``run_id`` on every case before it trains; the spent epsilon after.

        Checks the budget and records, under one lock. Charging a run again (a resumed run) on
        the same cases with the same noise and sample rate and no more steps is a no-op.

        Raises:
            BudgetExceededError: the planned steps would bring a case over the budget (nothing
                is recorded).
            LedgerError: ``run_id`` was charged before on other cases, with other settings or
                fewer steps.
        """
        with self._locked():
            self._reload()
            previous = next((r for r in self._contents.runs if r.run_id == run_id), None)
            if previous is None:
                self.check_budget(noise_multiplier, sample_rate, steps)
                self._append(run_id, noise_multiplier, sample_rate, steps)
            elif (previous.noise_multiplier, previous.sample_rate, previous.case_set) != (
                noise_multiplier,
                sample_rate,
                self.case_set,
            ) or steps > previous.steps:
                raise LedgerError(
                    self.path,
                    f"run {run_id} was charged for {previous.steps} steps at noise multiplier "
                    f"{previous.noise_multiplier:g} and sample rate {previous.sample_rate:g}"
                    f"{'' if previous.case_set == self.case_set else ' on other cases'}; "
                    f"continuing it with {steps} steps at {noise_multiplier:g} and "
                    f"{sample_rate:g} would spend privacy it was not charged for: resume it "
                    "with its original settings and data, or start a new run",
                )
        return self.spent_epsilon()

    # -- internals -------------------------------------------------------------------------
    def _epsilon(self, history: History) -> float:
        key = tuple(history)
        if key not in self._epsilons:
            privacy = self.privacy
            self._epsilons[key] = compute_epsilon(history, privacy.delta, privacy.accountant)
        return self._epsilons[key]

    def _append(self, run_id: str, sigma: float, rate: float, steps: int) -> RunRecord:
        if any(run.run_id == run_id for run in self._contents.runs):
            raise ValueError(f"run {run_id} is already in the ledger {self.path}")
        sigma, rate, steps = history_entry(sigma, rate, steps)
        after = self.projected_epsilon(sigma, rate, steps)
        when = datetime.now(UTC).isoformat(timespec="seconds")
        record = RunRecord(run_id, when, sigma, rate, steps, self.case_set, after)
        self._contents.case_sets.setdefault(self.case_set, frozenset(self.cases))
        self._contents.runs.append(record)
        self._save()
        return record

    def _save(self) -> None:
        contents = self._contents
        epsilons = {case: self._epsilon(contents.history_of(case)) for case in contents.all_cases()}
        data = contents_json(contents, self.privacy, epsilons)
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
        data = read_json(self.path)
        self._contents = (
            LedgerContents() if data is None else parse_contents(self.path, data, self.privacy)
        )
