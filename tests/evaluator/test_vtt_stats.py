"""The visual Turing test's statistics against hand-computed values."""

from __future__ import annotations

import math

import numpy as np
import pytest

from evaluator.vtt.stats import (
    Judgement,
    agreement_table,
    binomial_p,
    by_confidence,
    fleiss_kappa,
    scores,
)

WIKIPEDIA_FLEISS = np.array(
    [
        [0, 0, 0, 0, 14],
        [0, 2, 6, 4, 2],
        [0, 0, 3, 5, 6],
        [0, 3, 9, 2, 0],
        [2, 2, 8, 1, 1],
        [7, 7, 0, 0, 0],
        [3, 2, 6, 3, 0],
        [2, 5, 3, 2, 2],
        [6, 5, 2, 1, 0],
        [0, 2, 2, 3, 7],
    ]
)
"""Wikipedia's worked example: 10 subjects, 14 raters, 5 categories; kappa 0.210."""


def _j(reader: str, case: str, truth: str, call: str, confidence: int = 3) -> Judgement:
    return Judgement(reader, case, truth, call, confidence)


def test_fleiss_kappa_matches_the_worked_example() -> None:
    assert fleiss_kappa(WIKIPEDIA_FLEISS) == pytest.approx(0.2099, abs=5e-5)
    # two raters always agreeing on a balanced two-category set: P = 1, Pe = 0.5, kappa 1
    assert fleiss_kappa(np.array([[2, 0], [0, 2]])) == pytest.approx(1.0)
    # always disagreeing: P = 0, Pe = 0.5, kappa -1
    assert fleiss_kappa(np.array([[1, 1], [1, 1]])) == pytest.approx(-1.0)
    assert math.isnan(fleiss_kappa(np.array([[2, 0], [2, 0]])))  # one category: undefined


def test_fleiss_kappa_refuses_tables_it_cannot_score() -> None:
    with pytest.raises(ValueError, match="with a subject"):
        fleiss_kappa(np.zeros((0, 2)))
    with pytest.raises(ValueError, match="same number"):
        fleiss_kappa(np.array([[2, 0], [1, 0]]))
    with pytest.raises(ValueError, match="same number"):
        fleiss_kappa(np.array([[1, 0], [0, 1]]))  # one rater


def test_the_exact_binomial_test_against_chance() -> None:
    # 8 of 10: P(X >= 8) = (45 + 10 + 1) / 1024, doubled for two sides
    assert binomial_p(8, 10) == pytest.approx(2 * 56 / 1024)
    assert binomial_p(5, 10) == pytest.approx(1.0)
    assert binomial_p(10, 10) == pytest.approx(2 / 1024)
    assert math.isnan(binomial_p(0, 0))


def test_accuracy_sensitivity_and_specificity_count_synthetic_as_positive() -> None:
    answers = [
        _j("a", "1", "synthetic", "synthetic"),
        _j("a", "2", "synthetic", "synthetic"),
        _j("a", "3", "synthetic", "real"),
        _j("a", "4", "real", "real"),
        _j("a", "5", "real", "synthetic"),
    ]
    s = scores(answers)
    assert (s.answers, s.correct) == (5, 3)
    assert s.accuracy == pytest.approx(3 / 5)
    assert s.sensitivity == pytest.approx(2 / 3)
    assert s.specificity == pytest.approx(1 / 2)
    # 3 of 5: P(X >= 3) = (10 + 5 + 1) / 32 = 0.5, two-sided 1.0
    assert s.p_value == pytest.approx(1.0)
    empty = scores([])
    assert empty.answers == 0
    assert all(math.isnan(v) for v in (empty.accuracy, empty.sensitivity, empty.p_value))
    only_real = scores([_j("a", "4", "real", "real")])
    assert math.isnan(only_real.sensitivity)
    assert only_real.specificity == 1.0


def test_agreement_counts_only_cases_every_reader_answered() -> None:
    answers = [
        _j("a", "x", "real", "real"),
        _j("b", "x", "real", "synthetic"),
        _j("a", "y", "synthetic", "synthetic"),
        _j("b", "y", "synthetic", "synthetic"),
        _j("a", "z", "real", "real"),  # b has not answered z
    ]
    table = agreement_table(answers, ["a", "b"], ("real", "synthetic"))
    np.testing.assert_array_equal(table, [[1, 1], [0, 2]])
    # P = (0 + 1) / 2 = 0.5; shares 1/4, 3/4: Pe = 0.625; kappa = -0.125 / 0.375 = -1/3
    assert fleiss_kappa(table) == pytest.approx(-1 / 3)


def test_scores_by_confidence_level() -> None:
    answers = [
        _j("a", "1", "real", "real", 5),
        _j("b", "1", "real", "synthetic", 5),
        _j("a", "2", "synthetic", "synthetic", 1),
    ]
    low, middle, high = by_confidence(answers, (1, 3, 5))
    assert (low.answers, low.accuracy) == (1, 1.0)
    assert middle.answers == 0
    assert (high.answers, high.accuracy) == (2, 0.5)
