"""The audit's inputs as case sets on one grid, in the site's preprocessed units ([-1, 1]).

Real cases (training and held-out, any layout fedsynth reads) are checked and prepared with the
site's data settings (``prepare_case``: orientation, spacing, crop around the body, intensity
mapping); synthetic cases are a release (nnU-Net raw: ``imagesTr/<case>_0000.nii.gz``,
``labelsTr/<case>.nii.gz``, in release units) mapped to the same units. The settings come from
the release's manifest (:func:`audit_config`), so that real cases are prepared on its grid and
in its units. Every refusal is an :class:`AuditInputError` naming the path at fault.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path

import numpy as np

from common.audit.search import CaseSet
from common.config import FedsynthConfig, Scalar
from common.data.loading import load_case
from common.data.preprocess import prepare_case
from common.data.schema import schema_for
from common.data.site import check_site, usable_cases
from common.errors import FedsynthError
from common.release import MANIFEST_FILE, release_intensity, release_settings
from common.release_reader import read_release_pairs, release_config

SITE_READING_KEYS = (
    "data.layout",
    "data.image-pattern",
    "data.label-pattern",
    "data.brats-sequence",
    "data.label-remap",
    "data.max-voxels",
    "data.require-tumour",
    "data.skip-bad-cases",
    "data.geometry-tolerance",
    "data.hu-min",
    "data.hu-max",
)
"""How a site's own files are found and checked: the only data settings an audit may change
(every other one decides the grid, the units or the label schema of the prepared cases)."""


class AuditInputError(FedsynthError, ValueError):
    """An audit input cannot be used as given; the message names the path and what to do."""


def structure_values(modality: str) -> tuple[int, ...]:
    """The label values of a modality's structures (its schema's non-zero values), sorted."""
    return tuple(sorted(schema_for(modality).labels.values()))


def _adjustable(key: str) -> bool:
    return key.startswith("audit.") or key in SITE_READING_KEYS


def audit_config(release: Path, overrides: Mapping[str, Scalar]) -> FedsynthConfig:
    """The release's settings (its manifest's), with the audit settings and the site's
    file-reading settings of ``overrides`` on top; other overrides must agree with the release.

    Raises:
        AuditInputError: no or an unreadable manifest, or an override that contradicts the
            release (each such key named with both values).
        ConfigError: an unknown key or a value out of range.
    """
    recorded = release_settings(release_config(release, AuditInputError))
    config = release_config(release, AuditInputError, dict(overrides))
    given = release_settings(config)  # as a manifest records them: no local paths
    contradictions = [
        f"{key} = {given.get(key)!r} but the release was made with {recorded.get(key)!r}"
        for key in sorted(overrides)
        if not _adjustable(key) and given.get(key) != recorded.get(key)
    ]
    if contradictions:
        raise AuditInputError(
            f"{release / MANIFEST_FILE}: {'; '.join(contradictions)}. Real cases are prepared "
            "with the release's settings (its grid, units and labels); change only audit.* and "
            f"how your files are read ({', '.join(SITE_READING_KEYS)})"
        )
    return config


def _shape_zyx(config: FedsynthConfig) -> tuple[int, int, int]:
    x, y, z = config.data.target_shape
    return (z, y, x)


def _stack(images: list[np.ndarray], labels: list[np.ndarray]) -> CaseSet:
    return CaseSet.of(np.stack(images), np.stack(labels))


def load_real_cases(root: Path, config: FedsynthConfig) -> tuple[CaseSet, list[str]]:
    """A site's real cases, prepared with ``config.data``; returns the set and the case ids
    (which stay at the site: the audit names cases by position only).

    Raises:
        AuditInputError: ``root`` is not a folder.
        SiteDataError: cases have problems (each listed) and ``data.skip-bad-cases`` is off.
    """
    if not root.is_dir():
        raise AuditInputError(f"{root}: no such folder; give a folder of real cases")
    report = check_site(root, config.data)
    images, labels, ids = [], [], []
    for case in usable_cases(report, config.data):
        loaded = load_case(case.files, config.data, report.listing.label_remap)
        if loaded.image is None or loaded.label is None:  # pragma: no cover - checked above
            raise AuditInputError(f"{case.files.image}: vanished while loading")
        prepared = prepare_case(case.case_id, loaded.image, loaded.label, config.data)
        images.append(prepared.image)
        labels.append(prepared.label)
        ids.append(case.case_id)
    return _stack(images, labels), ids


def load_synthetic_cases(release: Path, config: FedsynthConfig) -> tuple[CaseSet, list[str]]:
    """A release's synthetic cases in preprocessed units, checked to lie on ``config``'s grid.

    Raises:
        AuditInputError: no such folder, no images, a missing or unreadable file, another grid.
    """
    if not release.is_dir():
        raise AuditInputError(f"{release}: no such folder; give a release folder")
    hint = (
        f"the audit's data.target-shape is {config.data.target_shape} (the release's manifest "
        "says so): a release must hold its cases on its manifest's grid; sample it again"
    )
    pairs = read_release_pairs(release, _shape_zyx(config), AuditInputError, hint)
    intensity = release_intensity(config)
    images = [intensity.forward(image) for _, image, _ in pairs]
    labels = [label.astype(np.uint8) for _, _, label in pairs]
    return _stack(images, labels), [case_id for case_id, _, _ in pairs]
