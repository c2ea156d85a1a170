"""The ledger accumulates epsilon across processes, refuses over-budget runs and bad files."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import pytest

from common.config import PrivacyConfig
from common.errors import ConfigError, FedsynthError
from common.privacy.accounting import compute_epsilon
from common.privacy.ledger import (
    BudgetExceededError,
    LedgerCorruptError,
    LedgerError,
    LedgerMismatchError,
    PrivacyLedger,
)

FINGERPRINT = hashlib.sha256(b"site A's source cases").hexdigest()
OTHER = hashlib.sha256(b"site B's source cases").hexdigest()
PRIVACY = PrivacyConfig(budget_epsilon=10.0, delta=1e-5, accountant="rdp")
SIGMA, RATE = 2.0, 0.1


def _open(folder: Path, privacy: PrivacyConfig = PRIVACY) -> PrivacyLedger:
    return PrivacyLedger.open(folder, FINGERPRINT, privacy)


def _epsilon(*entries: tuple[float, float, int]) -> float:
    return compute_epsilon(list(entries), PRIVACY.delta, PRIVACY.accountant)


def test_new_ledger_is_empty_and_written_on_first_record(tmp_path: Path) -> None:
    ledger = _open(tmp_path / "ledger")
    assert ledger.spent_epsilon() == 0.0
    assert not ledger.path.exists()
    record = ledger.record(SIGMA, RATE, 20, run_id="run-1")
    assert ledger.path == tmp_path / "ledger" / f"{FINGERPRINT}.json"
    data = json.loads(ledger.path.read_text(encoding="utf-8"))
    assert data["accountant"] == "rdp"
    assert data["delta"] == 1e-5
    assert data["fingerprint"] == FINGERPRINT
    assert data["history"] == [[SIGMA, RATE, 20]]
    assert data["spent_epsilon"] == pytest.approx(_epsilon((SIGMA, RATE, 20)))
    (run,) = data["runs"]
    assert run["run_id"] == "run-1"
    assert (run["steps"], run["noise_multiplier"], run["sample_rate"]) == (20, SIGMA, RATE)
    assert run["epsilon_after"] == record.epsilon_after == data["spent_epsilon"]
    assert run["when"].endswith("+00:00")
    assert [p.name for p in ledger.path.parent.glob("*.tmp")] == []


def test_epsilon_accumulates_across_processes(tmp_path: Path) -> None:
    first = _open(tmp_path)  # "process" 1: a run of 20 steps
    first.charge("run-1", SIGMA, RATE, 20)
    del first
    second = _open(tmp_path)  # "process" 2 opens the same ledger and continues it
    assert second.spent_epsilon() == pytest.approx(_epsilon((SIGMA, RATE, 20)))
    second.charge("run-2", SIGMA, RATE, 30)
    second.record(3.0, 0.2, 5)
    third = _open(tmp_path)
    assert third.history() == [(SIGMA, RATE, 50), (3.0, 0.2, 5)]
    assert third.spent_epsilon() == _epsilon((SIGMA, RATE, 50), (3.0, 0.2, 5))
    assert third.spent_epsilon() > _epsilon((SIGMA, RATE, 30))  # not a restart
    assert [run.run_id for run in third.runs][:2] == ["run-1", "run-2"]
    assert third.history(excluding="run-2") == [(SIGMA, RATE, 20), (3.0, 0.2, 5)]


def test_a_ledger_object_sees_charges_made_by_another(tmp_path: Path) -> None:
    one, two = _open(tmp_path), _open(tmp_path)
    one.charge("a", SIGMA, RATE, 10)
    two.charge("b", SIGMA, RATE, 10)  # re-reads the file under the lock before appending
    assert _open(tmp_path).history() == [(SIGMA, RATE, 20)]


def test_over_budget_run_is_refused_before_training(tmp_path: Path) -> None:
    privacy = PrivacyConfig(budget_epsilon=3.0)
    ledger = _open(tmp_path, privacy)
    ledger.charge("run-1", SIGMA, RATE, 20)
    spent = ledger.spent_epsilon()
    projected = _epsilon((SIGMA, RATE, 420))
    assert spent < 3.0 < projected
    with pytest.raises(BudgetExceededError) as caught:
        ledger.check_budget(SIGMA, RATE, 400)
    message = str(caught.value)
    assert f"from {spent:.4g} (spent so far) to {projected:.4g}" in message
    assert f"({3.0 - spent:.4g} remains)" in message
    assert "privacy.budget-epsilon = 3" in message
    for advice in ("fewer steps", "more noise", "if the data owner agrees"):
        assert advice in message
    assert str(ledger.path) in message
    assert isinstance(caught.value, FedsynthError)
    assert caught.value.projected == pytest.approx(projected)
    with pytest.raises(BudgetExceededError):
        ledger.charge("run-2", SIGMA, RATE, 400)
    assert _open(tmp_path, privacy).history() == [(SIGMA, RATE, 20)]  # nothing recorded
    assert ledger.check_budget(SIGMA, RATE, 5) == pytest.approx(_epsilon((SIGMA, RATE, 25)))


def test_recording_steps_taken_is_never_refused(tmp_path: Path) -> None:
    ledger = _open(tmp_path, PrivacyConfig(budget_epsilon=0.1))
    ledger.record(SIGMA, RATE, 400)
    assert ledger.spent_epsilon() > 0.1


def test_resumed_run_is_not_charged_twice(tmp_path: Path) -> None:
    ledger = _open(tmp_path)
    spent = ledger.charge("run-1", SIGMA, RATE, 20)
    assert ledger.charge("run-1", SIGMA, RATE, 20) == spent
    assert ledger.charge("run-1", SIGMA, RATE, 12) == spent
    assert _open(tmp_path).history() == [(SIGMA, RATE, 20)]
    with pytest.raises(LedgerError, match="run-1 was charged for 20 steps"):
        ledger.charge("run-1", SIGMA, RATE, 21)
    with pytest.raises(LedgerError, match="original settings"):
        ledger.charge("run-1", 3.0, RATE, 20)
    with pytest.raises(ValueError, match="already in the ledger"):
        ledger.record(SIGMA, RATE, 1, run_id="run-1")


@pytest.mark.parametrize(
    ("changed", "words"),
    [
        (PrivacyConfig(accountant="prv"), ["'rdp' accountant", "privacy.accountant=rdp"]),
        (PrivacyConfig(delta=1e-6), ["delta 1e-05", "privacy.delta=1e-05"]),
    ],
)
def test_ledger_of_another_accountant_or_delta_is_refused(
    tmp_path: Path, changed: PrivacyConfig, words: list[str]
) -> None:
    _open(tmp_path).record(SIGMA, RATE, 10)
    with pytest.raises(LedgerMismatchError) as caught:
        _open(tmp_path, changed)
    assert str(tmp_path / f"{FINGERPRINT}.json") in str(caught.value)
    for word in words:
        assert word in str(caught.value)


def test_ledger_of_another_dataset_is_refused(tmp_path: Path) -> None:
    ledger = PrivacyLedger.open(tmp_path, OTHER, PRIVACY)
    ledger.record(SIGMA, RATE, 10)
    ledger.path.rename(tmp_path / f"{FINGERPRINT}.json")
    with pytest.raises(LedgerMismatchError, match="renamed or copied"):
        _open(tmp_path)


@pytest.mark.parametrize(
    "text",
    [
        "{not json",
        "[]",
        '{"format": "something else"}',
        "CHANGE_HISTORY",
        "CHANGE_STEPS",
    ],
)
def test_corrupt_ledger_is_a_typed_error_naming_the_file(tmp_path: Path, text: str) -> None:
    ledger = _open(tmp_path)
    ledger.record(SIGMA, RATE, 10)
    data = json.loads(ledger.path.read_text(encoding="utf-8"))
    if text == "CHANGE_HISTORY":  # someone edited the history to spend less
        data["history"] = [[SIGMA, RATE, 1]]
        text = json.dumps(data)
    elif text == "CHANGE_STEPS":
        data["runs"][0]["steps"] = "ten"
        text = json.dumps(data)
    ledger.path.write_text(text, encoding="utf-8")
    with pytest.raises(LedgerCorruptError) as caught:
        _open(tmp_path)
    assert str(ledger.path) in str(caught.value)
    assert "restore the file from a backup" in str(caught.value)
    with pytest.raises(LedgerCorruptError):
        ledger.charge("next", SIGMA, RATE, 1)


def test_ledger_from_a_newer_version_is_refused(tmp_path: Path) -> None:
    ledger = _open(tmp_path)
    ledger.record(SIGMA, RATE, 10)
    data = json.loads(ledger.path.read_text(encoding="utf-8"))
    ledger.path.write_text(json.dumps({**data, "format_version": 2}), encoding="utf-8")
    with pytest.raises(LedgerError, match="format version 2"):
        _open(tmp_path)


@pytest.mark.parametrize("fingerprint", ["", "abc", FINGERPRINT.upper(), "../" + FINGERPRINT[3:]])
def test_missing_or_malformed_fingerprint_is_refused(tmp_path: Path, fingerprint: str) -> None:
    with pytest.raises(LedgerError, match="source fingerprint"):
        PrivacyLedger.open(tmp_path, fingerprint, PRIVACY)


def test_zero_delta_is_a_config_error(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=r"privacy\.delta must be > 0"):
        _open(tmp_path, PrivacyConfig(delta=0.0))


def test_unusable_folder_is_a_ledger_error(tmp_path: Path) -> None:
    blocker = tmp_path / "file"
    blocker.write_text("", encoding="utf-8")
    with pytest.raises(LedgerError, match="cannot read the privacy ledger"):
        PrivacyLedger.open(blocker, FINGERPRINT, PRIVACY)
