"""``vtt create``: a balanced, seeded, blinded draw of real and synthetic cases.

The real cases are checked and prepared with the release's own data settings (its manifest:
grid, units) and both sets are written by :func:`evaluator.vtt.render.write_case`. Which cases
are drawn and each reader's reading order follow the seed; the case ids and the tokens are
secret random values, so that neither can be guessed from the seed.
"""

from __future__ import annotations

import json
import re
import secrets
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from common.atomic import atomic_directory, atomic_write_bytes, atomic_write_text
from common.config import FedsynthConfig, Scalar
from common.seeding import numpy_rng
from evaluator.cases import EvalCase, check_same_modality, load_real, load_release, release_settings
from evaluator.evaluate import anonymised
from evaluator.vtt.render import write_case
from evaluator.vtt.study import (
    ADMIN,
    CASE_SUFFIX,
    CASES_DIR,
    KEY_FILE,
    STUDY_FILE,
    TOKENS_FILE,
    Reader,
    Study,
    StudyError,
)
from evaluator.vtt.tokens import new_token, token_digest

CASE_ID_BYTES = 6
"""Random bytes of a case id (12 hex digits)."""
READER_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,39}")
"""A reader name: letters, digits, '.', '_' or '-', at most 40 characters."""
PRIVATE_MODE = 0o600
DEFAULT_READERS = "reader-1,reader-2"


@dataclass(frozen=True)
class CreatedStudy:
    """A new study and its tokens (name -> token, the admin's among them), shown once."""

    study: Study
    tokens: dict[str, str]


def parse_readers(text: str) -> list[str]:
    """Reader names from "ana,ben,chloe".

    Raises:
        StudyError: no name, a name with other characters, a repeated name, or "admin".
    """
    names = [name.strip() for name in text.split(",") if name.strip()]
    if not names:
        raise StudyError("--readers: give at least one reader name, e.g. --readers ana,ben")
    for name in names:
        if not READER_NAME.fullmatch(name) or name == ADMIN:
            raise StudyError(
                f"--readers: {name!r} is not a reader name (letters, digits, '.', '_', '-', "
                f"at most 40 characters; not {ADMIN!r})"
            )
    repeated = sorted({name for name in names if names.count(name) > 1})
    if repeated:
        raise StudyError(f"--readers: {', '.join(repeated)} given more than once")
    return names


def draw(available: int, n: int, seed: int, source: str) -> list[int]:
    """``n`` of ``available`` case positions, seeded per source, in ascending order.

    Raises:
        StudyError: fewer than ``n`` cases are available.
    """
    if n < 1:
        raise StudyError(f"--n {n}: draw at least one case of each source")
    if available < n:
        raise StudyError(
            f"--n {n}: only {available} {source} cases are usable; lower --n or add cases"
        )
    chosen = numpy_rng(seed, "vtt", "draw", source).choice(available, size=n, replace=False)
    return sorted(int(i) for i in chosen)


def _case_ids(count: int) -> list[str]:
    ids: set[str] = set()
    while len(ids) < count:
        ids.add(secrets.token_hex(CASE_ID_BYTES))
    return list(ids)


def _tokens_text(tokens: dict[str, str]) -> str:
    lines = [
        "# fedsynth visual Turing test: secret tokens. Keep this file to yourself.",
        "# A reader's link is http://HOST:PORT/login#TOKEN (the token never reaches a log).",
    ]
    lines += [f"{name}\t{token}" for name, token in tokens.items()]
    return "\n".join(lines) + "\n"


def _sources(
    real: list[EvalCase], synthetic: list[EvalCase], n: int, seed: int
) -> list[tuple[str, EvalCase]]:
    drawn = [("real", real[i]) for i in draw(len(real), n, seed, "real")]
    drawn += [("synthetic", synthetic[i]) for i in draw(len(synthetic), n, seed, "synthetic")]
    return drawn


def create_study(
    real: Path,
    synthetic: Path,
    n: int,
    out: Path,
    readers: list[str],
    *,
    overrides: dict[str, Scalar] | None = None,
    overwrite: bool = False,
) -> CreatedStudy:
    """Draw ``n`` real and ``n`` synthetic cases and write the study folder ``out``.

    Raises:
        EvaluationInputError: no manifest, a real set of another modality, cases off the grid.
        SiteDataError: real cases with problems (unless ``data.skip-bad-cases``).
        StudyError: ``n`` out of range or bad reader names.
        OutputExistsError: ``out`` holds files and ``overwrite`` is false.
    """
    config = release_settings(synthetic, dict(overrides or {}))
    check_same_modality(release_settings(synthetic), config.data.modality, real)
    synthetic_cases = load_release(synthetic, config)
    real_cases = anonymised(load_real(real, config))
    drawn = _sources(real_cases, synthetic_cases, n, config.seed)
    ids = _case_ids(len(drawn))
    tokens = {ADMIN: new_token(), **{name: new_token() for name in readers}}
    with atomic_directory(out, overwrite=overwrite) as staging:
        key = {}
        for case_id, (source, case) in sorted(zip(ids, drawn, strict=True)):
            write_case(case.image, config.data, staging / CASES_DIR / f"{case_id}{CASE_SUFFIX}")
            key[case_id] = {"source": source, "origin": case.case_id}
        study = _study(out, config, sorted(ids), readers, tokens)
        atomic_write_text(staging / STUDY_FILE, json.dumps(study.to_json(), indent=2))
        key_text = json.dumps(key, indent=2, sort_keys=True).encode("utf-8")
        atomic_write_bytes(staging / KEY_FILE, key_text, mode=PRIVATE_MODE)
        tokens_text = _tokens_text(tokens).encode("utf-8")
        atomic_write_bytes(staging / TOKENS_FILE, tokens_text, mode=PRIVATE_MODE)
    return CreatedStudy(study, tokens)


def _study(
    out: Path,
    config: FedsynthConfig,
    cases: list[str],
    readers: list[str],
    tokens: dict[str, str],
) -> Study:
    x, y, z = config.data.target_shape
    sx, sy, sz = config.data.target_spacing
    orders = []
    for index, name in enumerate(readers):
        order = numpy_rng(config.seed, "vtt", "order", index).permutation(np.asarray(cases))
        orders.append(Reader(name, token_digest(tokens[name]), tuple(str(c) for c in order)))
    return Study(
        folder=out.resolve(),
        modality=config.data.modality,
        shape=(x, y, z),
        spacing=(sx, sy, sz),
        seed=config.seed,
        cases=tuple(cases),
        readers=tuple(orders),
        admin_sha256=token_digest(tokens[ADMIN]),
    )
