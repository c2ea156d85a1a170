"""bench.fuzz: the figures of a short run add up, and a reader that kills the process is a
counted failure, not the end of the run."""

from __future__ import annotations

import os
import signal

import pytest

from bench import fuzz_property
from bench.fuzz import fuzz
from bench.fuzz_files import FuzzCase, SetField
from bench.fuzz_property import Outcome, run_isolated


def test_a_short_run_counts_every_case_and_finds_no_failure() -> None:
    figures = fuzz(examples=12, seed=0)
    assert figures["cases_tried"] == 12
    assert sum(figures["outcomes"].values()) == 12
    assert sum(figures["cases_by_layout_and_format"].values()) == 12
    assert figures["failures_found"] == 0
    assert figures["failures_by_type"] == {}
    assert figures["seconds"] > 0


def test_an_isolated_case_reports_what_the_reader_said() -> None:
    outcome = run_isolated(FuzzCase("mha", mutations=(SetField("NDims", "-1"),)))
    assert outcome.status == "refused"
    assert outcome.kind == "unreadable"
    assert "'NDims' is '-1'" in outcome.detail


@pytest.mark.parametrize(
    ("signum", "name"), [(signal.SIGSEGV, "SIGSEGV"), (signal.SIGABRT, "SIGABRT")]
)
def test_a_crashing_reader_is_a_failure_named_by_its_signal(
    monkeypatch: pytest.MonkeyPatch, signum: int, name: str
) -> None:
    monkeypatch.setattr(fuzz_property, "run_case", lambda *_: os.kill(os.getpid(), signum))
    assert run_isolated(FuzzCase("nii")) == Outcome(
        "failure", f"Crash({name})", "the reading process died"
    )


def test_a_fault_of_the_fuzzer_itself_is_named_as_such(monkeypatch: pytest.MonkeyPatch) -> None:
    def broken(*_: object) -> Outcome:
        raise KeyError("no such format")

    monkeypatch.setattr(fuzz_property, "run_case", broken)
    outcome = run_isolated(FuzzCase("nii"))
    assert (outcome.status, outcome.kind) == ("failure", "FuzzerError(KeyError)")


def test_a_run_out_of_time_skips_the_cases_left() -> None:
    figures = fuzz(examples=5, seed=0, minutes=1e-9)
    assert figures["examples_asked"] == 5
    assert figures["cases_tried"] == 0
    assert figures["minutes_allowed"] == 1e-9
