"""The readers' answers in SQLite (WAL journal, synchronous commits): each answer is on disk
before the reply, so a killed server loses nothing.

An answer is final once given: giving the same answer again changes nothing (idempotent); a
different answer for a case already answered is refused.
"""

from __future__ import annotations

import sqlite3
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from common.errors import FedsynthError
from evaluator.vtt.study import SOURCES

CONFIDENCE_LEVELS = (1, 2, 3, 4, 5)
COMMENT_MAX_CHARS = 2000
BUSY_TIMEOUT_S = 10.0
"""How long a write waits for another connection's write to finish."""
SCHEMA = """
CREATE TABLE IF NOT EXISTS answers (
    reader TEXT NOT NULL,
    case_id TEXT NOT NULL,
    call TEXT NOT NULL,
    confidence INTEGER NOT NULL,
    comment TEXT NOT NULL,
    answered_at REAL NOT NULL,
    PRIMARY KEY (reader, case_id)
)
"""


class AnswerError(FedsynthError, ValueError):
    """An answer cannot be stored as given."""


class AnswerConflictError(AnswerError):
    """The case was already answered differently; answers are final."""


@dataclass(frozen=True)
class Answer:
    """One reader's answer for one case, as given."""

    reader: str
    case_id: str
    call: str
    confidence: int
    comment: str
    answered_at: float
    """Seconds since the epoch."""

    def same_as(self, other: Answer) -> bool:
        """Whether two answers say the same (the time aside)."""
        return (self.call, self.confidence, self.comment) == (
            other.call,
            other.confidence,
            other.comment,
        )


def check_answer(call: str, confidence: int, comment: str) -> None:
    """Refuse an answer outside the form's choices.

    Raises:
        AnswerError: a call other than real/synthetic, confidence outside 1-5, a long comment.
    """
    if call not in SOURCES:
        raise AnswerError(f"call {call!r}: answer one of {', '.join(SOURCES)}")
    if confidence not in CONFIDENCE_LEVELS:
        raise AnswerError(f"confidence {confidence}: give 1 (a guess) to 5 (certain)")
    if len(comment) > COMMENT_MAX_CHARS:
        raise AnswerError(f"comment of {len(comment)} characters: at most {COMMENT_MAX_CHARS}")


class AnswerStore:
    """The answers database of one study."""

    def __init__(self, path: Path) -> None:
        self.path = path
        with self._connection() as db:
            db.execute("PRAGMA journal_mode=WAL")
            db.execute(SCHEMA)

    @contextmanager
    def _connection(self) -> Iterator[sqlite3.Connection]:
        db = sqlite3.connect(self.path, timeout=BUSY_TIMEOUT_S, isolation_level=None)
        try:
            db.execute("PRAGMA synchronous=FULL")
            yield db
        finally:
            db.close()

    def submit(self, answer: Answer) -> tuple[Answer, bool]:
        """Store ``answer``; returns the stored answer and whether it is new.

        Raises:
            AnswerError: the answer is outside the form's choices.
            AnswerConflictError: the case was already answered differently.
        """
        check_answer(answer.call, answer.confidence, answer.comment)
        with self._connection() as db:
            db.execute("BEGIN IMMEDIATE")
            try:
                stored = self._one(db, answer.reader, answer.case_id)
                if stored is None:
                    db.execute(
                        "INSERT INTO answers VALUES (?, ?, ?, ?, ?, ?)",
                        (
                            answer.reader,
                            answer.case_id,
                            answer.call,
                            answer.confidence,
                            answer.comment,
                            answer.answered_at,
                        ),
                    )
                db.execute("COMMIT")
            except BaseException:
                db.execute("ROLLBACK")
                raise
        if stored is None:
            return answer, True
        if not stored.same_as(answer):
            raise AnswerConflictError(
                f"case {answer.case_id} is already answered; answers are final"
            )
        return stored, False

    @staticmethod
    def _one(db: sqlite3.Connection, reader: str, case_id: str) -> Answer | None:
        row = db.execute(
            "SELECT * FROM answers WHERE reader = ? AND case_id = ?", (reader, case_id)
        ).fetchone()
        return Answer(*row) if row else None

    def answers(self, reader: str | None = None) -> list[Answer]:
        """Every answer (of one reader, when named), in the order given."""
        query = "SELECT * FROM answers"
        args: tuple[str, ...] = ()
        if reader is not None:
            query, args = query + " WHERE reader = ?", (reader,)
        with self._connection() as db:
            rows = db.execute(query + " ORDER BY answered_at, reader, case_id", args).fetchall()
        return [Answer(*row) for row in rows]


def now() -> float:
    """The time an answer is given."""
    return time.time()
