"""The privacy ledger's file: its JSON layout (version 2, per case) and the checks on reading.

A site keeps one ledger file, ``site-ledger.json``, for every dataset it ever trained on:

- ``case_sets``: each dataset's cases once, as the sorted per-case source fingerprints
  (``CacheIndex.case_fingerprints``), keyed by :func:`case_set_id`;
- ``runs``: one record per charge (run or round): its noise multiplier, sample rate (that run's
  batch over its dataset's size), steps, the case set it trained on, the worst epsilon after it;
- ``cases``: per case fingerprint, its history (every run that included it) and epsilon, for
  auditors; the history is checked against the runs on every read, so an edit shows;
- ``migrated``: the dataset ledgers of version 1 (one file per dataset) carried over.

Version 1 files (``<dataset fingerprint>.json``) are read here only to be migrated.
"""

from __future__ import annotations

import hashlib
import json
import math
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from common.config import PrivacyConfig
from common.privacy.accounting import History, history_entry, normalize_history
from common.privacy.ledger_errors import KEEP_HINT, LedgerCorruptError, LedgerError
from common.privacy.ledger_errors import LedgerMismatchError as Mismatch

LEDGER_FORMAT = "fedsynth-privacy-ledger"
LEDGER_VERSION = 2
V1_VERSION = 1
SITE_LEDGER_FILE = "site-ledger.json"
"""The one ledger file of a site's ledger folder (node config ``ledger-dir``)."""
FINGERPRINT_PATTERN = re.compile(r"[0-9a-f]{64}")
"""A source fingerprint (of a case or a dataset) is a SHA-256 in lower-case hex."""


def case_set_id(cases: Iterable[str]) -> str:
    """The key of a set of case fingerprints: SHA-256 over them, sorted."""
    return hashlib.sha256("\n".join(sorted(set(cases))).encode("ascii")).hexdigest()


def json_float(value: float) -> float | None:
    """A JSON-ready epsilon: infinity (a step without noise) is written as null."""
    return value if math.isfinite(value) else None


@dataclass(frozen=True)
class RunRecord:
    """One charge: a run or round's DP-SGD steps on one case set, and the worst epsilon after."""

    run_id: str
    when: str
    noise_multiplier: float
    sample_rate: float
    steps: int
    case_set: str
    epsilon_after: float

    def to_json(self) -> dict[str, Any]:
        """A JSON-ready dict (an infinite epsilon is written as null)."""
        return {
            "run_id": self.run_id,
            "when": self.when,
            "noise_multiplier": self.noise_multiplier,
            "sample_rate": self.sample_rate,
            "steps": self.steps,
            "case_set": self.case_set,
            "epsilon_after": json_float(self.epsilon_after),
        }

    @classmethod
    def from_json(cls, data: Mapping[str, Any], case_set: str | None = None) -> RunRecord:
        """Inverse of :meth:`to_json`; ``case_set`` for a version-1 record, which has none.

        Raises:
            KeyError, TypeError, ValueError: the record is malformed.
        """
        sigma, rate, steps = history_entry(
            data["noise_multiplier"], data["sample_rate"], data["steps"]
        )
        run_id, when, after = data["run_id"], data["when"], data["epsilon_after"]
        case_set = data["case_set"] if case_set is None else case_set
        if not isinstance(run_id, str) or not run_id or not isinstance(when, str):
            raise ValueError(f"a run record needs a run_id and a when: {dict(data)}")
        if not isinstance(case_set, str) or not FINGERPRINT_PATTERN.fullmatch(case_set):
            raise ValueError(f"a run record needs the id of its case set: {dict(data)}")
        if after is not None and (isinstance(after, bool) or not isinstance(after, int | float)):
            raise ValueError(f"epsilon_after must be a number: {dict(data)}")
        epsilon = math.inf if after is None else float(after)
        return cls(run_id, when, sigma, rate, steps, case_set, epsilon)


@dataclass
class LedgerContents:
    """What a site's ledger file holds, as read and checked (``cases`` is derived from it)."""

    runs: list[RunRecord] = field(default_factory=list)
    case_sets: dict[str, frozenset[str]] = field(default_factory=dict)
    migrated: list[dict[str, Any]] = field(default_factory=list)

    def history_of(self, case: str, *, excluding: str | None = None) -> History:
        """Every run that included ``case`` (optionally but run ``excluding``), oldest first."""
        return normalize_history(
            (run.noise_multiplier, run.sample_rate, run.steps)
            for run in self.runs
            if run.run_id != excluding and case in self.case_sets[run.case_set]
        )

    def all_cases(self) -> list[str]:
        """Every case fingerprint of every case set, sorted."""
        return sorted(set().union(*self.case_sets.values()))

    def migrated_datasets(self) -> set[str]:
        """The dataset fingerprints whose version-1 ledgers were carried over."""
        return {str(entry.get("dataset")) for entry in self.migrated}


def check_accounting(path: Path, data: Mapping[str, Any], privacy: PrivacyConfig) -> None:
    """Refuse a ledger kept with another accountant or delta than ``privacy`` says."""
    accountant, delta = data.get("accountant"), data.get("delta")
    if accountant != privacy.accountant:
        raise Mismatch(
            path,
            f"this site's epsilon was accounted with the {accountant!r} accountant but "
            f"privacy.accountant = {privacy.accountant!r}; epsilons of different "
            f"accountants cannot be combined: set privacy.accountant={accountant} here",
        )
    if delta != privacy.delta:
        raise Mismatch(
            path,
            f"this site's epsilon was accounted at delta {delta!r} but privacy.delta = "
            f"{privacy.delta:g}; epsilons at different deltas cannot be combined: "
            f"set privacy.delta={delta} here",
        )


def check_version(path: Path, data: Any, version: int) -> None:
    """Refuse what is not a ledger, or a ledger of another format version than ``version``."""
    if not isinstance(data, dict) or data.get("format") != LEDGER_FORMAT:
        raise LedgerCorruptError(path, f"not a valid privacy ledger ({LEDGER_FORMAT}). {KEEP_HINT}")
    if data.get("format_version") != version:
        raise LedgerError(
            path,
            f"ledger format version {data.get('format_version')!r} is not {version}: open it "
            "with the fedsynth version that wrote it",
        )


def _case_sets(raw: Mapping[str, Any]) -> dict[str, frozenset[str]]:
    sets = {}
    for key, cases in raw.items():
        if not isinstance(cases, list) or not all(
            isinstance(c, str) and FINGERPRINT_PATTERN.fullmatch(c) for c in cases
        ):
            raise ValueError(f"case set {key} must list case fingerprints")
        if not cases or case_set_id(cases) != key:
            raise ValueError(f"case set {key} does not match its cases")
        sets[key] = frozenset(cases)
    return sets


def parse_contents(path: Path, data: Any, privacy: PrivacyConfig) -> LedgerContents:
    """The checked contents of a version-2 ledger's JSON ``data``.

    Raises:
        LedgerError: another format version. LedgerMismatchError: another accountant or delta.
        LedgerCorruptError: malformed, or a case's stored history differs from its runs.
    """
    check_version(path, data, LEDGER_VERSION)
    check_accounting(path, data, privacy)
    try:
        contents = LedgerContents(
            runs=[RunRecord.from_json(run) for run in data["runs"]],
            case_sets=_case_sets(data["case_sets"]),
            migrated=[dict(entry) for entry in data["migrated"]],
        )
        stored = {fp: normalize_history(case["history"]) for fp, case in data["cases"].items()}
        if any(run.case_set not in contents.case_sets for run in contents.runs):
            raise ValueError("a run names a case set the ledger does not hold")
        if len({run.run_id for run in contents.runs}) != len(contents.runs):
            raise ValueError("a run id is recorded twice")
    except (ValueError, KeyError, TypeError, AttributeError) as err:
        raise LedgerCorruptError(path, f"not a valid privacy ledger ({err}). {KEEP_HINT}") from None
    if sorted(stored) != contents.all_cases() or any(
        stored[case] != contents.history_of(case) for case in stored
    ):
        raise LedgerCorruptError(
            path, f"its case histories do not match its run records. {KEEP_HINT}"
        )
    return contents


def contents_json(
    contents: LedgerContents, privacy: PrivacyConfig, epsilons: Mapping[str, float]
) -> dict[str, Any]:
    """The JSON of a version-2 ledger; ``epsilons`` gives every case's spent epsilon."""
    return {
        "format": LEDGER_FORMAT,
        "format_version": LEDGER_VERSION,
        "accountant": privacy.accountant,
        "delta": privacy.delta,
        "case_sets": {key: sorted(cases) for key, cases in sorted(contents.case_sets.items())},
        "runs": [run.to_json() for run in contents.runs],
        "cases": {
            case: {
                "spent_epsilon": json_float(epsilons[case]),
                "history": [list(entry) for entry in contents.history_of(case)],
            }
            for case in contents.all_cases()
        },
        "migrated": contents.migrated,
    }


def parse_v1_runs(
    path: Path, data: Any, dataset: str, case_set: str, privacy: PrivacyConfig
) -> list[RunRecord]:
    """The runs of a version-1 (one file per dataset) ledger, as records of ``case_set``.

    Raises:
        LedgerError, LedgerMismatchError, LedgerCorruptError: as :func:`parse_contents`, and a
            mismatch when the file is for another dataset than ``dataset``.
    """
    check_version(path, data, V1_VERSION)
    if data.get("fingerprint") != dataset:
        raise Mismatch(
            path,
            f"the ledger inside is for dataset {data.get('fingerprint')!r}, not for "
            f"{dataset} as its file name says (renamed or copied?): restore this "
            "dataset's own ledger file from a backup",
        )
    check_accounting(path, data, privacy)
    try:
        runs = [RunRecord.from_json(run, case_set) for run in data["runs"]]
        stored = normalize_history(data["history"])
    except (ValueError, KeyError, TypeError) as err:
        raise LedgerCorruptError(path, f"not a valid privacy ledger ({err}). {KEEP_HINT}") from None
    if stored != normalize_history((r.noise_multiplier, r.sample_rate, r.steps) for r in runs):
        raise LedgerCorruptError(path, f"its history does not match its run records. {KEEP_HINT}")
    return runs


def read_json(path: Path) -> Any | None:
    """A ledger file's JSON, or None when there is no such file.

    Raises:
        LedgerError: the file cannot be read. LedgerCorruptError: it is not valid JSON.
    """
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        return None
    except (OSError, UnicodeDecodeError) as err:
        raise LedgerError(path, f"cannot read the privacy ledger ({err})") from None
    try:
        return json.loads(text)
    except ValueError as err:
        raise LedgerCorruptError(path, f"not a valid privacy ledger ({err}). {KEEP_HINT}") from None
