"""A release audited against a site's own cases, written as one folder: ``audit.json``,
``report.html`` (on-site) and ``central.html`` (distances only).

The folder appears whole or not at all; it names synthetic cases by their release ids and
training cases by site-local pseudonym, never by a real case id or a path.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from common.atomic import atomic_directory, is_nonempty_dir
from common.audit.inputs import (
    AuditInputError,
    audit_config,
    load_real_cases,
    load_synthetic_cases,
    structure_values,
)
from common.audit.report import central_page, onsite_page
from common.audit.run import Audit, SearchProgress, run_audit
from common.audit.search import CaseSet
from common.config import FedsynthConfig, Scalar
from common.errors import OutputExistsError
from common.release import read_manifest
from common.strict_json import strict_dumps

AUDIT_FILE = "audit.json"
REPORT_FILE = "report.html"
CENTRAL_FILE = "central.html"
FORMAT = "fedsynth-audit/1"
MANIFEST_KEYS = ("family", "model_hash", "seed", "cases")
"""What ``audit.json`` repeats of the release's manifest (no path, no site name)."""
MIN_TRAIN = 2
"""The fewest training cases an audit can calibrate on (leave-one-out needs two)."""

Step = Callable[[str], None]


@dataclass(frozen=True)
class AuditOutcome:
    """Where the audit was written, and what it found."""

    out: Path
    audit: Audit

    @property
    def result(self) -> dict[str, Any]:
        """The JSON-ready result (``audit.json`` without its header)."""
        return self.audit.result


def _real(root: Path, config: FedsynthConfig, minimum: int = 0) -> CaseSet:
    cases, _ = load_real_cases(root, config)  # real ids stay here: never written
    if len(cases) < minimum:
        raise AuditInputError(
            f"{root}: {len(cases)} usable training case(s); the audit needs at least "
            f"{minimum} to calibrate (give the cases the generator was trained on)"
        )
    return cases


def audit_folder(
    release: Path,
    train: Path,
    out: Path,
    *,
    holdout: Path | None = None,
    overrides: Mapping[str, Scalar] | None = None,
    overwrite: bool = False,
    on_step: Step | None = None,
    on_search: SearchProgress | None = None,
) -> AuditOutcome:
    """Audit ``release`` against the real cases in ``train`` (calibrated on ``holdout`` when
    it holds at least ``audit.min-holdout`` cases) and write the folder ``out``; ``on_step``
    is told each step's name, ``on_search`` how far each search is (``run_audit``).

    Raises:
        OutputExistsError: ``out`` holds files and ``overwrite`` is false (checked first).
        AuditInputError: a folder is missing, the release has no manifest or no cases, a case
            is on another grid, an override contradicts the release, too few training cases,
            the training folder given as held-out.
        SiteDataError: real cases have problems and ``data.skip-bad-cases`` is off.
    """
    say = on_step or (lambda _: None)
    if (out.exists() and not out.is_dir()) or (is_nonempty_dir(out) and not overwrite):
        raise OutputExistsError(out)
    if not release.is_dir():
        raise AuditInputError(f"{release}: no such folder; give a release folder (--synthetic)")
    if holdout is not None and holdout.resolve() == train.resolve():
        raise AuditInputError(
            f"{holdout}: the --train folder given again as --holdout; held-out cases must be "
            "patients the generator was not trained on (or leave --holdout out)"
        )
    config = audit_config(release, dict(overrides or {}))
    say("reading the release")
    synthetic, synthetic_ids = load_synthetic_cases(release, config)
    say("checking and preparing the training cases")
    train_cases = _real(train, config, MIN_TRAIN)
    held = None
    if holdout is not None:
        say("checking and preparing the held-out cases")
        held = _real(holdout, config)
    say("searching nearest neighbours")
    values = structure_values(config.data.modality)
    audit = run_audit(
        synthetic, synthetic_ids, train_cases, held, values, config.audit, on_search=on_search
    )
    say("writing the reports")
    onsite = onsite_page(
        audit, synthetic, train_cases, config.data.target_spacing, config.audit.report_closest
    )
    header = {
        "format": FORMAT,
        "modality": config.data.modality,
        "release": {key: read_manifest(release).get(key) for key in MANIFEST_KEYS},
    }
    with atomic_directory(out, overwrite=overwrite) as staging:
        (staging / AUDIT_FILE).write_text(strict_dumps({**header, **audit.result}))
        (staging / REPORT_FILE).write_text(onsite, encoding="utf-8")
        (staging / CENTRAL_FILE).write_text(central_page(audit), encoding="utf-8")
    return AuditOutcome(out, audit)
