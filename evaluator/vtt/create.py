"""``vtt create``: a balanced, seeded, blinded draw of real and synthetic cases.

The real cases are checked with the release's own data settings (its manifest: grid, units);
the drawn ones are prepared with them and both sets are written by
:func:`evaluator.vtt.render.write_case` (and :func:`~evaluator.vtt.render.write_labels` when
readers see label maps). Which cases are drawn and each reader's reading order follow the seed;
the case ids and the tokens are secret random values, so that neither can be guessed from the
seed.
"""

from __future__ import annotations

import json
import re
import secrets
from collections.abc import Callable
from dataclasses import dataclass
from functools import partial
from pathlib import Path

import numpy as np

from common.atomic import atomic_directory, atomic_write_bytes, atomic_write_text
from common.config import FedsynthConfig, Scalar
from common.seeding import numpy_rng
from evaluator.cases import (
    EvalCase,
    check_real,
    check_same_modality,
    load_release_case,
    prepare_real,
    release_cases,
    release_settings,
)
from evaluator.evaluate import REAL_ID_PREFIX, Progress, ProgressEvent
from evaluator.vtt.render import write_case, write_labels
from evaluator.vtt.study import (
    ADMIN,
    CASE_SUFFIX,
    CASES_DIR,
    KEY_FILE,
    LABELS_DIR,
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
CHECK_STEP = "checking the real cases"
WRITE_STEP = "writing the drawn cases"


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


Loader = Callable[[], EvalCase]


def _drawn_cases(
    real: Path, synthetic: Path, n: int, config: FedsynthConfig, report: Progress
) -> list[tuple[str, str, Loader]]:
    """(source, origin, loader) of each drawn case; a real case's origin is its position."""
    checked = 0

    def on_case(_: str) -> None:
        nonlocal checked
        checked += 1
        report(ProgressEvent(CHECK_STEP, checked))

    report(ProgressEvent(CHECK_STEP))
    real_set = check_real(real, config, on_case)
    release_ids = release_cases(synthetic)
    drawn: list[tuple[str, str, Loader]] = []
    for i in draw(len(real_set.usable), n, config.seed, "real"):
        loader = partial(prepare_real, real_set, real_set.usable[i], config)
        drawn.append(("real", f"{REAL_ID_PREFIX}{i + 1:03d}", loader))
    for i in draw(len(release_ids), n, config.seed, "synthetic"):
        loader = partial(load_release_case, synthetic, release_ids[i], config)
        drawn.append(("synthetic", release_ids[i], loader))
    return drawn


def create_study(
    real: Path,
    synthetic: Path,
    n: int,
    out: Path,
    readers: list[str],
    *,
    labels: bool = False,
    overrides: dict[str, Scalar] | None = None,
    overwrite: bool = False,
    on_progress: Progress | None = None,
) -> CreatedStudy:
    """Draw ``n`` real and ``n`` synthetic cases and write the study folder ``out`` (with each
    case's label map when ``labels``); ``on_progress`` hears of each case checked and written.

    Raises:
        EvaluationInputError: no manifest, a real set of another modality, cases off the grid.
        SiteDataError: real cases with problems (unless ``data.skip-bad-cases``).
        StudyError: ``n`` out of range or bad reader names.
        OutputExistsError: ``out`` holds files and ``overwrite`` is false.
    """
    report = on_progress or (lambda _: None)
    config = release_settings(synthetic, dict(overrides or {}))
    check_same_modality(release_settings(synthetic), config.data.modality, real)
    drawn = _drawn_cases(real, synthetic, n, config, report)
    ids = _case_ids(len(drawn))
    tokens = {ADMIN: new_token(), **{name: new_token() for name in readers}}
    with atomic_directory(out, overwrite=overwrite) as staging:
        key = {}
        report(ProgressEvent(WRITE_STEP, 0, len(drawn)))
        ordered = sorted(zip(ids, drawn, strict=True))
        for done, (case_id, (source, origin, load)) in enumerate(ordered, start=1):
            case = load()
            name = f"{case_id}{CASE_SUFFIX}"
            write_case(case.image, config.data, staging / CASES_DIR / name)
            if labels:
                write_labels(case.label, config.data, staging / LABELS_DIR / name)
            key[case_id] = {"source": source, "origin": origin}
            report(ProgressEvent(WRITE_STEP, done, len(drawn)))
        study = _study(out, config, sorted(ids), readers, tokens, labels)
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
    labels: bool,
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
        labels=labels,
    )
