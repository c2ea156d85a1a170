"""Accounting reproduces Opacus' pinned epsilons, resumes without restarting, finds the noise."""

from __future__ import annotations

import json
import math

import pytest

from common.errors import ConfigError
from common.privacy.accounting import (
    TARGET_EPSILON_TOLERANCE,
    compute_epsilon,
    extend_history,
    history_of,
    new_accountant,
    noise_multiplier_for,
    normalize_history,
    total_steps,
)

SIGMA, RATE, DELTA = 1.5, 0.04, 1e-5
PINNED = 1e-7
"""Opacus' accountants_test.py pins these with assertAlmostEqual: 7 decimal places."""


def test_rdp_reproduces_opacus_pinned_epsilon() -> None:
    # accountants_test.py: steps = int(90 / 0.04) = 2250
    history = [(SIGMA, RATE, 2250)]
    assert compute_epsilon(history, DELTA, "rdp") == pytest.approx(7.32911117143, abs=PINNED)


def test_prv_reproduces_opacus_pinned_epsilon() -> None:
    # accountants_test.py: steps = int(90 // 0.04), which is 2249 in floating point
    history = [(SIGMA, RATE, int(90 // 0.04))]
    assert compute_epsilon(history, DELTA, "prv") == pytest.approx(6.777395712150674, abs=PINNED)


@pytest.mark.parametrize("mechanism", ["rdp", "prv"])
def test_resumed_accountant_continues_the_same_run(mechanism: str) -> None:
    first = new_accountant(mechanism)
    for _ in range(1250):
        first.step(noise_multiplier=SIGMA, sample_rate=RATE)
    saved = json.loads(json.dumps(first.state_dict()))  # as a checkpoint or ledger stores it
    resumed = new_accountant(mechanism)
    resumed.load_state_dict(saved)
    for _ in range(1000):
        resumed.step(noise_multiplier=SIGMA, sample_rate=RATE)
    uninterrupted = compute_epsilon([(SIGMA, RATE, 2250)], DELTA, mechanism)
    assert history_of(resumed) == [(SIGMA, RATE, 2250)]
    assert resumed.get_epsilon(delta=DELTA) == uninterrupted
    restarted = compute_epsilon([(SIGMA, RATE, 1000)], DELTA, mechanism)
    assert restarted < 0.75 * uninterrupted


def test_history_round_trips_and_merges_like_opacus() -> None:
    history = extend_history([], SIGMA, RATE, 1250)
    history = extend_history(json.loads(json.dumps(history)), SIGMA, RATE, 1000)
    assert history == [(SIGMA, RATE, 2250)]
    history = extend_history(history, 2.0, RATE, 10)
    assert history == [(SIGMA, RATE, 2250), (2.0, RATE, 10)]
    assert total_steps(history) == 2260
    assert extend_history(history, 3.0, RATE, 0) == history
    assert history_of(new_accountant("rdp", history)) == history


def test_epsilon_of_a_split_history_is_the_epsilon_of_the_whole() -> None:
    whole = compute_epsilon([(SIGMA, RATE, 2250), (2.0, 0.1, 50)], DELTA, "rdp")
    split = [(SIGMA, RATE, 1000), (SIGMA, RATE, 1250), (2.0, 0.1, 50)]
    assert compute_epsilon(split, DELTA, "rdp") == whole


def test_epsilon_of_nothing_and_of_no_noise() -> None:
    assert compute_epsilon([], DELTA, "prv") == 0.0
    assert compute_epsilon([(SIGMA, RATE, 0)], DELTA, "rdp") == 0.0
    assert compute_epsilon([(0.0, RATE, 1)], DELTA, "prv") == math.inf


@pytest.mark.parametrize(
    ("mechanism", "target", "rate", "steps"),
    [("rdp", 8.0, 0.04, 2000), ("rdp", 2.0, 0.25, 40), ("prv", 2.0, 0.25, 40)],
)
def test_noise_for_a_target_epsilon_spends_that_epsilon(
    mechanism: str, target: float, rate: float, steps: int
) -> None:
    sigma = noise_multiplier_for(target, DELTA, rate, steps, mechanism)
    spent = compute_epsilon([(sigma, rate, steps)], DELTA, mechanism)
    assert (1 - TARGET_EPSILON_TOLERANCE) * target <= spent <= target
    assert spent == pytest.approx(target, rel=0.01)


def test_noise_for_opacus_pinned_target_is_close_to_opacus() -> None:
    # accounting test: epsilon 8, rate 0.04, 2000 steps -> 1.3562 with Opacus' 0.01 tolerance
    sigma = noise_multiplier_for(8.0, DELTA, RATE, 2000, "rdp")
    assert sigma == pytest.approx(1.3562, abs=2e-3)


def test_unreachable_target_is_a_config_error() -> None:
    with pytest.raises(ConfigError, match="target-epsilon = 1e-08 cannot be reached"):
        noise_multiplier_for(1e-8, DELTA, 1.0, 1000, "rdp")


@pytest.mark.parametrize(
    ("entry", "message"),
    [
        ((-1.0, RATE, 1), "noise multiplier"),
        ((SIGMA, 0.0, 1), "sample rate"),
        ((SIGMA, 1.5, 1), "sample rate"),
        ((SIGMA, RATE, 1.5), "steps"),
        ((SIGMA, RATE, -1), "steps"),
        ((SIGMA, "0.1", 1), "sample rate must be a number"),
        ((SIGMA, RATE), "history entry"),
    ],
)
def test_bad_history_entries_are_refused(entry: tuple[object, ...], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        normalize_history([entry])  # type: ignore[list-item]


def test_bad_accountant_or_delta_is_refused() -> None:
    with pytest.raises(ValueError, match="gdp"):
        compute_epsilon([(SIGMA, RATE, 1)], DELTA, "gdp")
    with pytest.raises(ValueError, match="delta"):
        compute_epsilon([(SIGMA, RATE, 1)], 0.0, "rdp")
