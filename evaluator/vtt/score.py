"""``vtt score``: the readers' answers against the answer key, as CSV, JSON and an HTML page.

Per reader and pooled: accuracy, sensitivity and specificity for detecting synthetic cases,
with the exact binomial test against chance; Fleiss' kappa across the readers (on the cases
every reader answered); the pooled scores at each confidence level.
"""

from __future__ import annotations

import csv
import io
import json
import math
from collections.abc import Iterable, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from matplotlib.figure import Figure

from common.atomic import atomic_directory, atomic_write_text
from common.reports.html import Page, png
from evaluator.vtt.stats import (
    CHANCE,
    Judgement,
    Scores,
    agreement_table,
    by_confidence,
    fleiss_kappa,
    scores,
)
from evaluator.vtt.store import CONFIDENCE_LEVELS, AnswerStore
from evaluator.vtt.study import SOURCES, Study, StudyError, load_key, load_study

ANSWERS_CSV, SCORES_CSV, CONFIDENCE_CSV = "answers.csv", "scores.csv", "confidence.csv"
SCORES_JSON, REPORT_HTML = "scores.json", "report.html"
POOLED = "pooled"
SCORE_COLUMNS = ("answers", "correct", "accuracy", "sensitivity", "specificity", "p_value")


@dataclass(frozen=True)
class StudyScores:
    """Everything ``vtt score`` computes."""

    judgements: list[Judgement]
    readers: dict[str, Scores]
    pooled: Scores
    confidence: dict[int, Scores]
    kappa: float
    kappa_cases: int
    kappa_note: str


def judgements(study: Study, key: dict[str, str]) -> list[Judgement]:
    """Every stored answer beside its truth.

    Raises:
        StudyError: no answers database, or an answer for a case the key does not know.
    """
    if not study.answers_path.is_file():
        raise StudyError(
            f"{study.answers_path}: no answers yet; serve the study (`fedsynth vtt serve`) first"
        )
    found = []
    for answer in AnswerStore(study.answers_path).answers():
        if answer.case_id not in key:
            raise StudyError(
                f"{study.answers_path}: an answer for case {answer.case_id}, which the answer "
                "key does not have; score the study the answers were given for"
            )
        truth = key[answer.case_id]
        found.append(
            Judgement(answer.reader, answer.case_id, truth, answer.call, answer.confidence)
        )
    return found


def _kappa(found: list[Judgement], readers: list[str]) -> tuple[float, int, str]:
    if len(readers) < 2:
        return math.nan, 0, "needs answers from two readers or more"
    table = agreement_table(found, readers, SOURCES)
    if len(table) == 0:
        return math.nan, 0, "no case has been answered by every reader yet"
    note = f"{len(table)} cases answered by all {len(readers)} readers"
    return fleiss_kappa(table), len(table), note


def score(study: Study, key: dict[str, str]) -> StudyScores:
    """The study's scores from its stored answers."""
    found = judgements(study, key)
    readers = [r.name for r in study.readers if any(j.reader == r.name for j in found)]
    kappa, cases, note = _kappa(found, readers)
    return StudyScores(
        judgements=found,
        readers={name: scores([j for j in found if j.reader == name]) for name in readers},
        pooled=scores(found),
        confidence=dict(
            zip(CONFIDENCE_LEVELS, by_confidence(found, CONFIDENCE_LEVELS), strict=True)
        ),
        kappa=kappa,
        kappa_cases=cases,
        kappa_note=note,
    )


def csv_text(header: Sequence[str], rows: Iterable[Sequence[object]]) -> str:
    """CSV text with a header row."""
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow(header)
    writer.writerows(rows)
    return buffer.getvalue()


def _values(s: Scores) -> list[object]:
    return [getattr(s, column) for column in SCORE_COLUMNS]


def _score_rows(result: StudyScores) -> list[list[object]]:
    rows = [[name, *_values(s)] for name, s in result.readers.items()]
    return [*rows, [POOLED, *_values(result.pooled)]]


def _confidence_rows(result: StudyScores) -> list[list[object]]:
    return [[level, *_values(s)] for level, s in result.confidence.items()]


def _json_number(value: float) -> float | None:
    return None if math.isnan(value) else value


def _json(result: StudyScores) -> dict[str, Any]:
    def clean(s: Scores) -> dict[str, Any]:
        return {k: _json_number(v) if isinstance(v, float) else v for k, v in asdict(s).items()}

    return {
        "readers": {name: clean(s) for name, s in result.readers.items()},
        POOLED: clean(result.pooled),
        "confidence": {str(level): clean(s) for level, s in result.confidence.items()},
        "fleiss_kappa": {
            "value": _json_number(result.kappa),
            "cases": result.kappa_cases,
            "note": result.kappa_note,
        },
        "chance": CHANCE,
    }


def _figure(result: StudyScores) -> bytes:
    figure = Figure(figsize=(9, 3.2))
    left, right = figure.subplots(1, 2)
    names = [*result.readers, POOLED]
    left.bar(names, [s.accuracy for s in [*result.readers.values(), result.pooled]])
    left.set_title("accuracy per reader", fontsize=9)
    levels = [str(level) for level in result.confidence]
    right.bar(levels, [s.accuracy for s in result.confidence.values()])
    right.set_title("pooled accuracy by confidence", fontsize=9)
    right.set_xlabel("confidence (1 = a guess, 5 = certain)", fontsize=8)
    for axis in (left, right):
        axis.axhline(CHANCE, color="#a33", linestyle="--", linewidth=0.8)
        axis.set_ylim(0, 1)
    figure.tight_layout()
    return png(figure)


def report_html(result: StudyScores) -> str:
    """The scores as a self-contained HTML page."""
    page = Page("Visual Turing test")
    page.paragraph(
        "Positive = called synthetic. Sensitivity: synthetic cases called synthetic; "
        "specificity: real cases called real; p: two-sided exact binomial test of the correct "
        f"answers against chance ({CHANCE}).",
        "note",
    )
    page.heading("Per reader and pooled")
    page.table(("reader", *SCORE_COLUMNS), _score_rows(result))
    page.heading("Agreement between readers")
    page.table(
        ("Fleiss' kappa", "cases", "note"), [[result.kappa, result.kappa_cases, result.kappa_note]]
    )
    page.heading("By confidence (pooled)")
    page.table(("confidence", *SCORE_COLUMNS), _confidence_rows(result))
    page.image(_figure(result), "accuracy per reader and by confidence")
    return page.render()


def write_scores(study_folder: Path, out: Path, *, overwrite: bool = False) -> StudyScores:
    """Score the study in ``study_folder`` into ``out`` (answers.csv, scores.csv,
    confidence.csv, scores.json, report.html), atomically.

    Raises:
        StudyError: no study, no key, no answers.
        OutputExistsError: ``out`` holds files and ``overwrite`` is false.
    """
    result = score(load_study(study_folder), load_key(study_folder))
    answers = [
        [j.reader, j.case_id, j.truth, j.call, j.correct, j.confidence] for j in result.judgements
    ]
    with atomic_directory(out, overwrite=overwrite) as staging:
        header = ("reader", "case", "truth", "call", "correct", "confidence")
        atomic_write_text(staging / ANSWERS_CSV, csv_text(header, answers))
        atomic_write_text(
            staging / SCORES_CSV, csv_text(("reader", *SCORE_COLUMNS), _score_rows(result))
        )
        atomic_write_text(
            staging / CONFIDENCE_CSV,
            csv_text(("confidence", *SCORE_COLUMNS), _confidence_rows(result)),
        )
        atomic_write_text(staging / SCORES_JSON, json.dumps(_json(result), indent=2))
        atomic_write_text(staging / REPORT_HTML, report_html(result))
    return result
