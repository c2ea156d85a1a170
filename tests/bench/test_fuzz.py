"""bench.fuzz: the figures of a short run add up, and a reader that kills the process is a
counted failure, not the end of the run."""

from __future__ import annotations

import itertools
import os
import signal
from collections.abc import Callable

import pytest

from bench import fuzz as fuzz_module
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


def test_a_run_out_of_time_draws_no_further_case(monkeypatch: pytest.MonkeyPatch) -> None:
    """A clock at 0 s, then 30 s more at each reading, and 2 minutes allowed: cases are tried
    at 30, 60, 90 and 120 s; the fifth, drawn at 150 s, is the last case drawn."""
    drawn: list[FuzzCase] = []
    strategy = fuzz_module.fuzz_cases
    monkeypatch.setattr(fuzz_module, "fuzz_cases", lambda: strategy().map(_record(drawn)))
    monkeypatch.setattr(fuzz_module, "run_isolated", lambda _: Outcome("read"))
    figures = fuzz(examples=50, seed=0, minutes=2.0, clock=itertools.count(0, 30).__next__)
    assert figures["cases_tried"] == 4
    assert figures["outcomes"] == {"read": 4}
    assert len(drawn) == 5  # not 50: the time allowed is real
    assert figures["out_of_time"] is True
    assert figures["seconds"] == 180  # the clock's sixth reading
    assert figures["minutes_allowed"] == 2.0


def test_a_run_in_time_tries_every_case(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(fuzz_module, "run_isolated", lambda _: Outcome("read"))
    figures = fuzz(examples=6, seed=0, minutes=2.0, clock=itertools.count(0, 1).__next__)
    assert figures["cases_tried"] == 6
    assert figures["out_of_time"] is False


def _record(drawn: list[FuzzCase]) -> Callable[[FuzzCase], FuzzCase]:
    def record(case: FuzzCase) -> FuzzCase:
        drawn.append(case)
        return case

    return record
