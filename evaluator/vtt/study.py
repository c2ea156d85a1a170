"""A study folder: what the reading server may show, and the answer key it never shows.

Layout of ``STUDY/``:

- ``study.json``: modality, grid, seed, the case ids (random, sorted), each reader's reading
  order and the SHA-256 of each token (never a token itself);
- ``key.json``: the answer key (case id -> real or synthetic, and where it came from: a
  release case id or the position of a real case, never a real case id); server-side only;
- ``tokens.txt``: the readers' and the admin's secret tokens, mode 0600, for the admin alone;
- ``cases/<id>.nii``: one image per case, every one written the same way;
- ``labels/<id>.nii``: one label map per case, only in a study made with ``--labels``;
- ``answers.sqlite``: the readers' answers (made by ``vtt serve``).
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from common.errors import FedsynthError

STUDY_FILE = "study.json"
KEY_FILE = "key.json"
TOKENS_FILE = "tokens.txt"
CASES_DIR = "cases"
LABELS_DIR = "labels"
CASE_SUFFIX = ".nii"
ANSWERS_FILE = "answers.sqlite"
STUDY_FORMAT = "fedsynth-vtt/2"
"""Version 2 records whether readers see label maps."""
SOURCES = ("real", "synthetic")
"""What a case is, and what a reader answers."""
ADMIN = "admin"
"""The name of the study's administrator (not a reader name)."""


class StudyError(FedsynthError, ValueError):
    """A study cannot be made, served or scored as asked; the message says what to do."""


@dataclass(frozen=True)
class Reader:
    """One reader: a name, the SHA-256 of their token, and the order they read the cases in."""

    name: str
    token_sha256: str
    order: tuple[str, ...]


@dataclass(frozen=True)
class Study:
    """What ``study.json`` holds (nothing in it tells real from synthetic)."""

    folder: Path
    modality: str
    shape: tuple[int, int, int]
    """Voxels (x, y, z)."""
    spacing: tuple[float, float, float]
    """Millimetres (x, y, z)."""
    seed: int
    cases: tuple[str, ...]
    readers: tuple[Reader, ...]
    admin_sha256: str
    labels: bool
    """Whether readers may show each case's label map over its image."""

    def case_path(self, case_id: str) -> Path:
        """Where a case's image is."""
        return self.folder / CASES_DIR / f"{case_id}{CASE_SUFFIX}"

    def labels_path(self, case_id: str) -> Path:
        """Where a case's label map is (in a study with label maps)."""
        return self.folder / LABELS_DIR / f"{case_id}{CASE_SUFFIX}"

    @property
    def answers_path(self) -> Path:
        """The answers database."""
        return self.folder / ANSWERS_FILE

    def reader(self, name: str) -> Reader:
        """The reader called ``name``.

        Raises:
            StudyError: no such reader.
        """
        for reader in self.readers:
            if reader.name == name:
                return reader
        raise StudyError(f"{self.folder}: no reader called {name!r}")

    def to_json(self) -> dict[str, Any]:
        """A JSON-ready dict (the folder is where it is read from, not stored)."""
        return {
            "format": STUDY_FORMAT,
            "modality": self.modality,
            "shape": list(self.shape),
            "spacing": list(self.spacing),
            "seed": self.seed,
            "cases": list(self.cases),
            "readers": [
                {"name": r.name, "token_sha256": r.token_sha256, "order": list(r.order)}
                for r in self.readers
            ],
            "admin_sha256": self.admin_sha256,
            "labels": self.labels,
        }


def _read_json(path: Path, what: str) -> Any:
    if not path.is_file():
        raise StudyError(f"{path}: missing; give a study folder made by `fedsynth vtt create`")
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except ValueError as err:
        raise StudyError(f"{path}: unreadable {what} ({err}); make the study again") from None


def _flag(value: Any) -> bool:
    if not isinstance(value, bool):
        raise ValueError(f"labels = {value!r}, not true or false")
    return value


def load_study(folder: Path) -> Study:
    """Read ``folder/study.json``.

    Raises:
        StudyError: no such file, not JSON, another format, or fields missing.
    """
    data = _read_json(folder / STUDY_FILE, "study file")
    try:
        if data["format"] != STUDY_FORMAT:
            raise StudyError(
                f"{folder / STUDY_FILE}: format {data['format']!r}, not {STUDY_FORMAT}; make "
                "the study again with this fedsynth (`fedsynth vtt create`)"
            )
        x, y, z = (int(v) for v in data["shape"])
        sx, sy, sz = (float(v) for v in data["spacing"])
        readers = tuple(
            Reader(str(r["name"]), str(r["token_sha256"]), tuple(str(c) for c in r["order"]))
            for r in data["readers"]
        )
        return Study(
            folder=folder,
            modality=str(data["modality"]),
            shape=(x, y, z),
            spacing=(sx, sy, sz),
            seed=int(data["seed"]),
            cases=tuple(str(c) for c in data["cases"]),
            readers=readers,
            admin_sha256=str(data["admin_sha256"]),
            labels=_flag(data["labels"]),
        )
    except (KeyError, TypeError, ValueError) as err:
        if isinstance(err, StudyError):
            raise
        raise StudyError(f"{folder / STUDY_FILE}: incomplete study file ({err!r})") from None


def load_key(folder: Path) -> dict[str, str]:
    """The answer key: case id -> "real" or "synthetic".

    Raises:
        StudyError: no key, not JSON, or a source that is neither.
    """
    data = _read_json(folder / KEY_FILE, "answer key")
    key = {str(case): str(entry.get("source")) for case, entry in data.items()}
    wrong = sorted(case for case, source in key.items() if source not in SOURCES)
    if wrong:
        raise StudyError(f"{folder / KEY_FILE}: cases {wrong} are neither real nor synthetic")
    return key
