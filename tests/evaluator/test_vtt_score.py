"""`vtt score` and the answers store: stored answers against the key, hand-counted."""

from __future__ import annotations

import csv
import json
import sqlite3
from pathlib import Path

import pytest
from typer.testing import CliRunner
from vtt_support import make_study, make_world

from common.errors import OutputExistsError
from evaluator.vtt.score import write_scores
from evaluator.vtt.store import Answer, AnswerConflictError, AnswerError, AnswerStore
from evaluator.vtt.study import StudyError, load_key, load_study
from simulations.cli import app


@pytest.fixture(scope="module")
def study(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("vtt-score")
    make_study(make_world(root), root / "study", n=2)
    return root / "study"


def _answer(reader: str, case: str, call: str, confidence: int = 3, at: float = 1.0) -> Answer:
    return Answer(reader, case, call, confidence, "", at)


def test_answers_are_final_and_a_repeat_changes_nothing(tmp_path: Path) -> None:
    store = AnswerStore(tmp_path / "a.sqlite")
    first, created = store.submit(_answer("ana", "c1", "real", 4, at=1.0))
    assert created
    again, created = store.submit(_answer("ana", "c1", "real", 4, at=2.0))
    assert not created
    assert again == first  # the first time stays
    with pytest.raises(AnswerConflictError, match="already answered"):
        store.submit(_answer("ana", "c1", "synthetic", 4))
    store.submit(_answer("ben", "c1", "synthetic", 2, at=3.0))
    reopened = AnswerStore(tmp_path / "a.sqlite")
    assert [(a.reader, a.call) for a in reopened.answers()] == [
        ("ana", "real"),
        ("ben", "synthetic"),
    ]
    assert [a.reader for a in reopened.answers("ben")] == ["ben"]
    mode = sqlite3.connect(tmp_path / "a.sqlite").execute("PRAGMA journal_mode").fetchone()[0]
    assert mode == "wal"


@pytest.mark.parametrize(
    ("call", "confidence", "comment", "message"),
    [
        ("fake", 3, "", "answer one of real, synthetic"),
        ("real", 0, "", "give 1"),
        ("real", 6, "", "give 1"),
        ("real", 3, "x" * 2001, "at most 2000"),
    ],
)
def test_answers_outside_the_form_are_refused(
    tmp_path: Path, call: str, confidence: int, comment: str, message: str
) -> None:
    store = AnswerStore(tmp_path / "a.sqlite")
    with pytest.raises(AnswerError, match=message):
        store.submit(Answer("ana", "c1", call, confidence, comment, 1.0))
    assert store.answers() == []


def test_scores_of_stored_answers_match_a_hand_count(study: Path, tmp_path: Path) -> None:
    key = load_key(study)
    cases = load_study(study).cases
    real = [c for c in cases if key[c] == "real"]
    synthetic = [c for c in cases if key[c] == "synthetic"]
    store = AnswerStore(load_study(study).answers_path)
    # ana: all right, confident; ben: right on the real cases, calls every synthetic case real
    for case in cases:
        store.submit(_answer("ana", case, key[case], 5))
        store.submit(_answer("ben", case, "real", 2))
    result = write_scores(study, tmp_path / "scores")
    assert result.readers["ana"].accuracy == 1.0
    assert result.readers["ben"].sensitivity == 0.0
    assert result.readers["ben"].specificity == 1.0
    assert result.pooled.accuracy == pytest.approx(6 / 8)
    # 6 of 8: P(X >= 6) = (28 + 8 + 1) / 256, two-sided 74 / 256
    assert result.pooled.p_value == pytest.approx(74 / 256)
    # real cases: both say real (2, 0); synthetic: one each (1, 1). P = (1 + 1 + 0 + 0) / 4,
    # shares 6/8 and 2/8: Pe = 0.625; kappa = (0.5 - 0.625) / 0.375 = -1/3
    assert result.kappa == pytest.approx(-1 / 3)
    assert result.kappa_cases == 4
    assert result.confidence[5].accuracy == 1.0
    assert result.confidence[2].accuracy == 0.5
    assert result.confidence[1].answers == 0
    rows = list(csv.DictReader((tmp_path / "scores" / "scores.csv").open()))
    assert [r["reader"] for r in rows] == ["ana", "ben", "pooled"]
    assert float(rows[2]["accuracy"]) == pytest.approx(0.75)
    answers = list(csv.DictReader((tmp_path / "scores" / "answers.csv").open()))
    assert len(answers) == 8
    assert {a["case"] for a in answers if a["truth"] == "synthetic"} == set(synthetic)
    assert {a["case"] for a in answers if a["truth"] == "real"} == set(real)
    numbers = json.loads((tmp_path / "scores" / "scores.json").read_text(encoding="utf-8"))
    assert numbers["fleiss_kappa"]["value"] == pytest.approx(-1 / 3)
    assert numbers["confidence"]["1"]["accuracy"] is None  # not a number: no answers
    page = (tmp_path / "scores" / "report.html").read_text(encoding="utf-8")
    assert "Fleiss" in page
    assert "data:image/png;base64," in page
    with pytest.raises(OutputExistsError):
        write_scores(study, tmp_path / "scores")


def test_scoring_without_answers_or_with_stray_answers_is_refused(tmp_path: Path) -> None:
    make_study(make_world(tmp_path), tmp_path / "study", n=1, readers="ana")
    runner = CliRunner()
    result = runner.invoke(
        app, ["vtt", "score", str(tmp_path / "study"), "--out", str(tmp_path / "o")]
    )
    assert result.exit_code == 2
    assert "no answers yet" in result.output
    AnswerStore(load_study(tmp_path / "study").answers_path).submit(_answer("ana", "zz", "real"))
    with pytest.raises(StudyError, match="case zz, which the answer key does not have"):
        write_scores(tmp_path / "study", tmp_path / "o")
    with pytest.raises(StudyError, match=r"study\.json: missing"):
        write_scores(tmp_path, tmp_path / "o")
    assert not (tmp_path / "o").exists()


def test_one_reader_has_no_kappa_and_the_command_says_so(tmp_path: Path) -> None:
    make_study(make_world(tmp_path), tmp_path / "study", n=1, readers="ana")
    study = load_study(tmp_path / "study")
    key = load_key(tmp_path / "study")
    for case in study.cases:
        AnswerStore(study.answers_path).submit(_answer("ana", case, key[case], 4))
    result = CliRunner().invoke(
        app, ["vtt", "score", str(study.folder), "--out", str(tmp_path / "o")]
    )
    assert result.exit_code == 0, result.output
    assert "pooled accuracy 1.000" in result.output
    numbers = json.loads((tmp_path / "o" / "scores.json").read_text(encoding="utf-8"))
    assert numbers["fleiss_kappa"] == {
        "value": None,
        "cases": 0,
        "note": "needs answers from two readers or more",
    }
