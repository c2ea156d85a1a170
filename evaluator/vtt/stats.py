"""The statistics of a visual Turing test, as pure functions of the answers.

"Positive" is a case a reader calls synthetic: sensitivity is the fraction of synthetic cases
called synthetic, specificity the fraction of real cases called real. Readers who cannot tell
the sources apart score 0.5 on each; the binomial test says how surprising a count of correct
answers would be if they guessed.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

import numpy as np
from scipy.stats import binomtest

CHANCE = 0.5
"""The accuracy of a guess between two sources drawn in equal numbers."""


@dataclass(frozen=True)
class Judgement:
    """One answer beside the truth: ``truth`` and ``call`` are "real" or "synthetic"."""

    reader: str
    case_id: str
    truth: str
    call: str
    confidence: int

    @property
    def correct(self) -> bool:
        """Whether the reader was right."""
        return self.truth == self.call


@dataclass(frozen=True)
class Scores:
    """Accuracy, sensitivity and specificity of a set of answers, with the binomial test."""

    answers: int
    correct: int
    accuracy: float
    sensitivity: float
    specificity: float
    p_value: float
    """Two-sided exact binomial test of ``correct`` of ``answers`` against :data:`CHANCE`."""


def _ratio(numerator: int, denominator: int) -> float:
    return numerator / denominator if denominator else math.nan


def binomial_p(correct: int, total: int, chance: float = CHANCE) -> float:
    """Two-sided exact binomial p-value of ``correct`` successes in ``total`` trials (nan for
    none)."""
    if total == 0:
        return math.nan
    return float(binomtest(correct, total, chance, alternative="two-sided").pvalue)


def scores(judgements: Sequence[Judgement]) -> Scores:
    """The scores of ``judgements`` (nan where a denominator is zero)."""
    synthetic = [j for j in judgements if j.truth == "synthetic"]
    real = [j for j in judgements if j.truth == "real"]
    correct = sum(j.correct for j in judgements)
    return Scores(
        answers=len(judgements),
        correct=correct,
        accuracy=_ratio(correct, len(judgements)),
        sensitivity=_ratio(sum(j.correct for j in synthetic), len(synthetic)),
        specificity=_ratio(sum(j.correct for j in real), len(real)),
        p_value=binomial_p(correct, len(judgements)),
    )


def fleiss_kappa(counts: np.ndarray) -> float:
    """Fleiss' kappa of a (subjects, categories) table of how many raters chose each category;
    every subject must have the same number of raters (at least 2). nan when agreement by
    chance is already perfect (one category only).

    Raises:
        ValueError: no subjects, fewer than 2 raters, or unequal raters per subject.
    """
    table = np.asarray(counts, dtype=np.float64)
    if table.ndim != 2 or table.shape[0] == 0:
        raise ValueError("Fleiss' kappa needs a (subjects, categories) table with a subject")
    raters = table.sum(axis=1)
    if not np.all(raters == raters[0]) or raters[0] < 2:
        raise ValueError("Fleiss' kappa needs the same number (>= 2) of raters per subject")
    n = raters[0]
    shares = table.sum(axis=0) / table.sum()
    agreement = ((table * (table - 1)).sum(axis=1) / (n * (n - 1))).mean()
    by_chance = float((shares**2).sum())
    if by_chance == 1.0:
        return math.nan
    return float((agreement - by_chance) / (1.0 - by_chance))


def agreement_table(
    judgements: Iterable[Judgement], readers: Sequence[str], categories: Sequence[str]
) -> np.ndarray:
    """The (cases, categories) counts of the cases every one of ``readers`` answered."""
    calls: dict[str, dict[str, str]] = {}
    for j in judgements:
        calls.setdefault(j.case_id, {})[j.reader] = j.call
    complete = sorted(c for c, by in calls.items() if all(r in by for r in readers))
    table = np.zeros((len(complete), len(categories)), dtype=np.int64)
    for row, case_id in enumerate(complete):
        for reader in readers:
            table[row, categories.index(calls[case_id][reader])] += 1
    return table


def by_confidence(judgements: Sequence[Judgement], levels: Sequence[int]) -> list[Scores]:
    """Pooled scores of the answers given at each confidence level, in ``levels`` order."""
    return [scores([j for j in judgements if j.confidence == level]) for level in levels]
