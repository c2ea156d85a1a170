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

from common.atomic import atomic_directory, refuse_existing_output
from common.audit.inputs import (
    AuditInputError,
    audit_config,
    load_real_cases,
    load_synthetic_cases,
    structure_values,
)
from common.audit.membership import Membership, membership_attack
from common.audit.report import central_page, onsite_page
from common.audit.run import Audit, SearchProgress, run_audit
from common.audit.search import CaseSet
from common.config import FedsynthConfig, Scalar
from common.data.schema import schema_for
from common.models.checkpoint import load_model
from common.models.interface import GenerativeModel
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
    membership: Membership | None = None
    """The membership-inference attack on ``--model`` (None without one)."""

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


def _attacked_model(path: Path, config: FedsynthConfig) -> GenerativeModel:
    """The model file at ``path`` (the safe loader), checked to be on the audit's grid.

    Raises:
        CheckpointError: no such file, or not a readable fedsynth model file.
        AuditInputError: the model's grid (shape, modality, classes) is not the release's.
    """
    model, trained = load_model(path)
    x, y, z = config.data.target_shape
    shape = (z, y, x)
    classes = len(schema_for(config.data.modality).labels) + 1
    found = (model.spatial_shape, trained.data.modality, model.num_classes)
    if found != (shape, config.data.modality, classes):
        raise AuditInputError(
            f"{path}: the model works on {found[1]} cases of shape {found[0]} with {found[2]} "
            f"classes, the release's cases are {config.data.modality} of shape {shape} with "
            f"{classes} classes; give the model (RUN/server/model.pt) that made this release"
        )
    return model


def audit_folder(
    release: Path,
    train: Path,
    out: Path,
    *,
    holdout: Path | None = None,
    model: Path | None = None,
    overrides: Mapping[str, Scalar] | None = None,
    overwrite: bool = False,
    on_step: Step | None = None,
    on_search: SearchProgress | None = None,
) -> AuditOutcome:
    """Audit ``release`` against the real cases in ``train`` (calibrated on ``holdout`` when
    it holds at least ``audit.min-holdout`` cases) and write the folder ``out``; ``on_step``
    is told each step's name, ``on_search`` how far each search is (``run_audit``). With a
    ``model`` file, its membership-inference attack (``train`` members, ``holdout``
    non-members) adds the ``membership`` section.

    Raises:
        OutputExistsError: ``out`` holds files and ``overwrite`` is false (checked first).
        AuditInputError: a folder is missing, the release has no manifest or no cases, a case
            is on another grid, an override contradicts the release, too few training cases,
            the training folder given as held-out, ``model`` without ``holdout``, a model on
            another grid.
        CheckpointError: the model file is missing or unreadable.
        ConfigError: an ``audit.membership-timesteps`` value the diffusion model cannot take.
        SiteDataError: real cases have problems and ``data.skip-bad-cases`` is off.
    """
    say = on_step or (lambda _: None)
    refuse_existing_output(out, overwrite=overwrite)
    if not release.is_dir():
        raise AuditInputError(f"{release}: no such folder; give a release folder (--synthetic)")
    if holdout is not None and holdout.resolve() == train.resolve():
        raise AuditInputError(
            f"{holdout}: the --train folder given again as --holdout; held-out cases must be "
            "patients the generator was not trained on (or leave --holdout out)"
        )
    if model is not None and holdout is None:
        raise AuditInputError(
            f"{model}: membership inference (--model) needs --holdout: held-out real cases are "
            "its non-members, the --train cases its members"
        )
    config = audit_config(release, dict(overrides or {}))
    attacked = None if model is None else _attacked_model(model, config)
    say("reading the release")
    synthetic, synthetic_ids = load_synthetic_cases(release, config)
    say("checking and preparing the training cases")
    train_cases = _real(train, config, MIN_TRAIN)
    held = None
    if holdout is not None:
        say("checking and preparing the held-out cases")
        held = _real(holdout, config)
    membership = None
    if attacked is not None and held is not None:
        say("scoring membership inference")
        membership = membership_attack(attacked, train_cases, held, config.audit, config.seed)
    say("searching nearest neighbours")
    values = structure_values(config.data.modality)
    audit = run_audit(
        synthetic, synthetic_ids, train_cases, held, values, config.audit, on_search=on_search
    )
    say("writing the reports")
    onsite = onsite_page(
        audit,
        synthetic,
        train_cases,
        config.data.target_spacing,
        config.audit.report_closest,
        membership,
    )
    header = {
        "format": FORMAT,
        "modality": config.data.modality,
        "release": {key: read_manifest(release).get(key) for key in MANIFEST_KEYS},
    }
    with atomic_directory(out, overwrite=overwrite) as staging:
        section = {"membership": None if membership is None else membership.to_json()}
        (staging / AUDIT_FILE).write_text(strict_dumps({**header, **audit.result, **section}))
        (staging / REPORT_FILE).write_text(onsite, encoding="utf-8")
        (staging / CENTRAL_FILE).write_text(central_page(audit, membership), encoding="utf-8")
    return AuditOutcome(out, audit, membership)
