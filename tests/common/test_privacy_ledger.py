"""The per-case ledger accumulates each case's epsilon across processes and datasets, refuses
over-budget runs and bad files."""

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


def _fp(name: str) -> str:
    return hashlib.sha256(name.encode()).hexdigest()


A, B, C, D = (_fp(f"case {name}") for name in "abcd")
CASES = (A, B, C)
PRIVACY = PrivacyConfig(budget_epsilon=50.0, delta=1e-5, accountant="rdp")
SIGMA, RATE = 2.0, 0.1
FILE = "site-ledger.json"


def _open(
    folder: Path, privacy: PrivacyConfig = PRIVACY, cases: tuple[str, ...] = CASES
) -> PrivacyLedger:
    return PrivacyLedger.open(folder, cases, privacy)


def _epsilon(*entries: tuple[float, float, int]) -> float:
    return compute_epsilon(list(entries), PRIVACY.delta, PRIVACY.accountant)


def test_new_ledger_is_empty_and_written_on_first_record(tmp_path: Path) -> None:
    ledger = _open(tmp_path / "ledger")
    assert ledger.spent_epsilon() == 0.0
    assert ledger.case_epsilons() == [0.0, 0.0, 0.0]
    assert not ledger.path.exists()
    record = ledger.record(SIGMA, RATE, 20, run_id="run-1")
    assert ledger.path == tmp_path / "ledger" / FILE
    data = json.loads(ledger.path.read_text(encoding="utf-8"))
    assert (data["format_version"], data["accountant"], data["delta"]) == (2, "rdp", 1e-5)
    (case_set,) = data["case_sets"]
    assert data["case_sets"][case_set] == sorted(CASES)
    assert sorted(data["cases"]) == sorted(CASES)
    for case in data["cases"].values():
        assert case["history"] == [[SIGMA, RATE, 20]]
        assert case["spent_epsilon"] == pytest.approx(_epsilon((SIGMA, RATE, 20)))
    (run,) = data["runs"]
    assert run["run_id"] == "run-1"
    assert (run["steps"], run["noise_multiplier"], run["sample_rate"]) == (20, SIGMA, RATE)
    assert run["case_set"] == case_set
    assert (
        run["epsilon_after"] == record.epsilon_after == pytest.approx(_epsilon((SIGMA, RATE, 20)))
    )
    assert run["when"].endswith("+00:00")
    assert data["migrated"] == []
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
    one, two = _open(tmp_path), _open(tmp_path, cases=(B, C, D))
    one.charge("a", SIGMA, RATE, 10)
    two.charge("b", SIGMA, RATE, 10)  # re-reads the file under the lock before appending
    assert _open(tmp_path).case_histories() == [
        [(SIGMA, RATE, 10)],
        [(SIGMA, RATE, 20)],
        [(SIGMA, RATE, 20)],
    ]


def test_a_case_added_continues_every_overlapping_case_and_starts_at_zero(tmp_path: Path) -> None:
    _open(tmp_path).charge("run-1", SIGMA, 0.5, 20)  # 2 of 3 cases per batch
    grown = _open(tmp_path, cases=(A, B, C, D))  # one more patient: a new source fingerprint
    first = _epsilon((SIGMA, 0.5, 20))
    assert grown.case_epsilons() == [first, first, first, 0.0]
    assert grown.spent_epsilon() == first  # the dataset's figure is its most spent case's
    grown.charge("run-2", SIGMA, 0.25, 30)  # 1 of 4 per batch: that run's own sample rate
    both = _epsilon((SIGMA, 0.5, 20), (SIGMA, 0.25, 30))
    assert grown.case_epsilons() == [both, both, both, _epsilon((SIGMA, 0.25, 30))]
    assert _open(tmp_path).spent_epsilon() == both


def test_a_case_removed_continues_every_remaining_case(tmp_path: Path) -> None:
    _open(tmp_path).charge("run-1", SIGMA, RATE, 20)
    shrunk = _open(tmp_path, cases=(A, C))  # B left out (--skip-bad, or withdrawn)
    assert shrunk.case_epsilons() == [_epsilon((SIGMA, RATE, 20))] * 2
    shrunk.charge("run-2", SIGMA, RATE, 30)
    assert _open(tmp_path, cases=(A, C)).case_epsilons() == [_epsilon((SIGMA, RATE, 50))] * 2
    assert _open(tmp_path, cases=(B,)).case_epsilons() == [_epsilon((SIGMA, RATE, 20))]


def test_a_case_in_two_datasets_accumulates_both(tmp_path: Path) -> None:
    PrivacyLedger.open(tmp_path, (A, B), PRIVACY).charge("ct-study", 3.0, 0.5, 40)
    PrivacyLedger.open(tmp_path, (B, C, D), PRIVACY).charge("mri-study", 4.0, 1 / 3, 60)
    ledger = PrivacyLedger.open(tmp_path, (A, B, C, D), PRIVACY)
    only_ct, only_mri = _epsilon((3.0, 0.5, 40)), _epsilon((4.0, 1 / 3, 60))
    combined = _epsilon((3.0, 0.5, 40), (4.0, 1 / 3, 60))
    assert (only_ct, only_mri, combined) == pytest.approx((5.4008, 3.0561, 6.3981), abs=1e-4)
    assert ledger.case_histories()[1] == [(3.0, 0.5, 40), (4.0, 1 / 3, 60)]
    assert ledger.case_epsilons() == [only_ct, combined, only_mri, only_mri]
    assert combined > max(only_ct, only_mri)
    assert ledger.spent_epsilon() == combined
    assert ledger.history() == [(3.0, 0.5, 40), (4.0, 1 / 3, 60)]  # the most spent case's
    stored = json.loads(ledger.path.read_text(encoding="utf-8"))["cases"][B]
    assert stored["spent_epsilon"] == pytest.approx(combined)


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
    assert "it would bring 3 of the 3 cases it trains on over the budget" in message
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


def test_one_spent_case_refuses_a_dataset_that_is_otherwise_fresh(tmp_path: Path) -> None:
    privacy = PrivacyConfig(budget_epsilon=16.0)
    PrivacyLedger.open(tmp_path, (C,), privacy).charge("pilot", SIGMA, 1.0, 4)
    spent = _epsilon((SIGMA, 1.0, 4))
    fresh = PrivacyLedger.open(tmp_path, (A, B, C, D), privacy)  # C is its third case
    projected = _epsilon((SIGMA, 1.0, 4), (SIGMA, 0.25, 400))
    assert _epsilon((SIGMA, 0.25, 400)) < 16.0 < projected  # fresh cases alone would fit
    assert spent < 16.0
    with pytest.raises(BudgetExceededError) as caught:
        fresh.charge("study", SIGMA, 0.25, 400)
    error = caught.value
    assert (error.cases_over, error.cases, error.position) == (1, 4, 3)
    assert (error.spent, error.projected) == (pytest.approx(spent), pytest.approx(projected))
    assert "bring 1 of the 4 cases" in str(error)
    assert "case 3 in the cache's case order" in str(error)
    assert C not in str(error)  # no fingerprint in a message
    assert [run.run_id for run in PrivacyLedger.open(tmp_path, (A, B, D), privacy).runs] == []


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
    with pytest.raises(LedgerError, match="on other cases"):
        _open(tmp_path, cases=(A, B)).charge("run-1", SIGMA, RATE, 20)
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
    assert str(tmp_path / FILE) in str(caught.value)
    for word in words:
        assert word in str(caught.value)


def _tamper(data: dict, how: str) -> str:
    case_set = next(iter(data["case_sets"]))
    if how == "CHANGE_HISTORY":  # someone edited a case's history to spend less
        data["cases"][A]["history"] = [[SIGMA, RATE, 1]]
    elif how == "CHANGE_STEPS":
        data["runs"][0]["steps"] = "ten"
    elif how == "DROP_CASE":  # a case taken out of a case set: its id no longer matches
        data["case_sets"][case_set].remove(A)
    elif how == "DROP_CASE_SET":
        data["runs"][0]["case_set"] = _fp("no such set")
    elif how == "FORGET_CASE":
        del data["cases"][B]
    else:
        return how
    return json.dumps(data)


@pytest.mark.parametrize(
    "how",
    [
        "{not json",
        "[]",
        '{"format": "something else"}',
        "CHANGE_HISTORY",
        "CHANGE_STEPS",
        "DROP_CASE",
        "DROP_CASE_SET",
        "FORGET_CASE",
    ],
)
def test_corrupt_ledger_is_a_typed_error_naming_the_file(tmp_path: Path, how: str) -> None:
    ledger = _open(tmp_path)
    ledger.record(SIGMA, RATE, 10)
    data = json.loads(ledger.path.read_text(encoding="utf-8"))
    ledger.path.write_text(_tamper(data, how), encoding="utf-8")
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
    ledger.path.write_text(json.dumps({**data, "format_version": 3}), encoding="utf-8")
    with pytest.raises(LedgerError, match="format version 3"):
        _open(tmp_path)


@pytest.mark.parametrize("fingerprint", ["", "abc", A.upper(), "../" + A[3:]])
def test_missing_or_malformed_fingerprint_is_refused(tmp_path: Path, fingerprint: str) -> None:
    with pytest.raises(LedgerError, match="source fingerprint"):
        PrivacyLedger.open(tmp_path, (B, fingerprint), PRIVACY)
    if fingerprint:
        with pytest.raises(LedgerError, match="dataset's source fingerprint"):
            PrivacyLedger.open(tmp_path, (B,), PRIVACY, dataset=fingerprint)


def test_a_dataset_without_case_fingerprints_is_refused(tmp_path: Path) -> None:
    with pytest.raises(LedgerError, match="run `fedsynth data prepare` again"):
        PrivacyLedger.open(tmp_path, (), PRIVACY)


def test_the_same_image_twice_in_a_dataset_is_refused(tmp_path: Path) -> None:
    with pytest.raises(LedgerError, match="cases 1 and 3 of this dataset") as caught:
        PrivacyLedger.open(tmp_path, (A, B, A), PRIVACY)
    assert "leave the copy out" in str(caught.value)
    assert A not in str(caught.value)


def test_zero_delta_is_a_config_error(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=r"privacy\.delta must be > 0"):
        _open(tmp_path, PrivacyConfig(delta=0.0))


def test_unusable_folder_is_a_ledger_error(tmp_path: Path) -> None:
    blocker = tmp_path / "file"
    blocker.write_text("", encoding="utf-8")
    with pytest.raises(LedgerError, match="cannot read the privacy ledger"):
        PrivacyLedger.open(blocker, CASES, PRIVACY)
