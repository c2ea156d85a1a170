"""A version-1 ledger (one file per dataset) is carried over once, never reset, never doubled."""

from __future__ import annotations

import hashlib
import json
import logging
from pathlib import Path

import pytest

from common.config import PrivacyConfig
from common.privacy.accounting import compute_epsilon
from common.privacy.ledger import (
    LedgerCorruptError,
    LedgerError,
    LedgerMismatchError,
    PrivacyLedger,
)

DATASET = hashlib.sha256(b"site A's source cases").hexdigest()
OTHER = hashlib.sha256(b"site A's older source cases").hexdigest()
A, B, C = (hashlib.sha256(f"case {name}".encode()).hexdigest() for name in "abc")
PRIVACY = PrivacyConfig(budget_epsilon=50.0, delta=1e-5, accountant="rdp")
RUNS = [("run-1", 2.0, 0.5, 20), ("run-2", 2.0, 0.5, 10), ("run-3", 3.0, 1.0, 5)]


def _epsilon(*entries: tuple[float, float, int]) -> float:
    return compute_epsilon(list(entries), PRIVACY.delta, PRIVACY.accountant)


def _write_v1(
    folder: Path, dataset: str = DATASET, changes: dict[str, object] | None = None
) -> Path:
    """A ledger exactly as fedsynth's version-1 ``PrivacyLedger._save`` wrote it."""
    history: list[list[float | int]] = []
    runs = []
    for run_id, sigma, rate, steps in RUNS:
        if history and history[-1][:2] == [sigma, rate]:
            history[-1][2] += steps
        else:
            history.append([sigma, rate, steps])
        after = _epsilon(*((float(s), float(r), int(n)) for s, r, n in history))
        when = "2026-11-30T09:00:00+00:00"
        runs.append(
            {
                "run_id": run_id,
                "when": when,
                "noise_multiplier": sigma,
                "sample_rate": rate,
                "steps": steps,
                "epsilon_after": after,
            }
        )
    data = {
        "format": "fedsynth-privacy-ledger",
        "format_version": 1,
        "fingerprint": dataset,
        "accountant": "rdp",
        "delta": 1e-5,
        "spent_epsilon": runs[-1]["epsilon_after"],
        "history": history,
        "runs": runs,
        **(changes or {}),
    }
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / f"{dataset}.json"
    path.write_text(json.dumps(data, indent=2) + "\n", encoding="utf-8")
    return path


V1_SPENT = _epsilon((2.0, 0.5, 30), (3.0, 1.0, 5))


def _open(folder: Path, cases: tuple[str, ...] = (A, B)) -> PrivacyLedger:
    return PrivacyLedger.open(folder, cases, PRIVACY, dataset=DATASET)


def test_every_case_inherits_its_dataset_s_v1_history(tmp_path: Path) -> None:
    v1 = _write_v1(tmp_path)
    original = json.loads(v1.read_text(encoding="utf-8"))
    ledger = _open(tmp_path)
    assert ledger.case_epsilons() == [V1_SPENT, V1_SPENT]
    assert ledger.spent_epsilon() == pytest.approx(original["spent_epsilon"])
    assert [run.run_id for run in ledger.runs] == ["run-1", "run-2", "run-3"]
    site = json.loads(ledger.path.read_text(encoding="utf-8"))
    ((entry),) = site["migrated"]
    assert (entry["dataset"], entry["runs"]) == (DATASET, 3)
    marker = json.loads(v1.read_text(encoding="utf-8"))  # kept, marked, contents inside
    assert (marker["format_version"], marker["migrated_to"]) == (2, "site-ledger.json")
    assert marker["v1"] == original


def test_a_migrated_ledger_is_never_counted_twice_and_goes_on(tmp_path: Path) -> None:
    _write_v1(tmp_path)
    _open(tmp_path).charge("run-4", 2.0, 0.5, 10)
    again = _open(tmp_path)  # the marker and the site ledger's record: no second carry-over
    assert again.case_epsilons() == [_epsilon((2.0, 0.5, 30), (3.0, 1.0, 5), (2.0, 0.5, 10))] * 2
    assert len(again.runs) == 4
    assert again.charge("run-3", 3.0, 1.0, 5) == again.spent_epsilon()  # a v1 run resumes free
    grown = PrivacyLedger.open(tmp_path, (A, B, C), PRIVACY)  # one case more, later
    assert grown.case_epsilons()[2] == 0.0
    assert grown.case_epsilons()[:2] == again.case_epsilons()


def test_a_crash_between_the_two_writes_neither_doubles_nor_resets(tmp_path: Path) -> None:
    v1 = _write_v1(tmp_path)
    original = v1.read_text(encoding="utf-8")
    _open(tmp_path)
    v1.write_text(original, encoding="utf-8")  # as if the process died before the marker
    ledger = _open(tmp_path)
    assert ledger.case_epsilons() == [V1_SPENT, V1_SPENT]
    assert len(ledger.runs) == 3
    assert "migrated_to" in json.loads(v1.read_text(encoding="utf-8"))


def test_a_deleted_site_ledger_is_rebuilt_from_the_marker(tmp_path: Path) -> None:
    _write_v1(tmp_path)
    ledger = _open(tmp_path)
    ledger.path.unlink()  # never do this; the v1 history still comes back
    assert _open(tmp_path).case_epsilons() == [V1_SPENT, V1_SPENT]


def test_other_datasets_v1_ledgers_are_named_in_a_warning(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    _write_v1(tmp_path)
    _write_v1(tmp_path, OTHER)
    with caplog.at_level(logging.WARNING, logger="fedsynth.privacy"):
        ledger = _open(tmp_path)
    assert "1 version-1 ledgers of other datasets" in caplog.text
    assert ledger.case_epsilons() == [V1_SPENT, V1_SPENT]  # only its own dataset's history
    assert json.loads((tmp_path / f"{OTHER}.json").read_text())["format_version"] == 1


@pytest.mark.parametrize(
    ("changes", "error", "words"),
    [
        ({"fingerprint": OTHER}, LedgerMismatchError, "renamed or copied"),
        ({"delta": 1e-6}, LedgerMismatchError, "privacy.delta=1e-06"),
        ({"accountant": "prv"}, LedgerMismatchError, "privacy.accountant=prv"),
        ({"history": [[2.0, 0.5, 1]]}, LedgerCorruptError, "does not match its run records"),
        ({"runs": [{"run_id": "x"}]}, LedgerCorruptError, "not a valid privacy ledger"),
        ({"format_version": 7}, LedgerError, "format version 7"),
    ],
)
def test_a_bad_v1_ledger_refuses_training_and_is_left_as_it_was(
    tmp_path: Path, changes: dict[str, object], error: type[Exception], words: str
) -> None:
    v1 = _write_v1(tmp_path, changes=changes)
    before = v1.read_text(encoding="utf-8")
    with pytest.raises(error, match=words) as caught:
        _open(tmp_path)
    assert str(v1) in str(caught.value)
    assert v1.read_text(encoding="utf-8") == before
    assert not (tmp_path / "site-ledger.json").exists()


def test_a_corrupt_v1_file_is_a_typed_error(tmp_path: Path) -> None:
    v1 = _write_v1(tmp_path)
    v1.write_text("{cut", encoding="utf-8")
    with pytest.raises(LedgerCorruptError, match="restore the file from a backup"):
        _open(tmp_path)


def test_v1_runs_already_in_the_site_ledger_are_refused(tmp_path: Path) -> None:
    PrivacyLedger.open(tmp_path, (A, B), PRIVACY).record(2.0, 0.5, 1, run_id="run-2")
    _write_v1(tmp_path)
    with pytest.raises(LedgerError, match="edited or copied"):
        _open(tmp_path)
