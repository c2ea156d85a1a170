"""The audit's inputs as case sets on one grid, in the site's preprocessed units ([-1, 1]).

Real cases (training and held-out, any layout fedsynth reads) are checked and prepared with the
site's data settings (``prepare_case``: orientation, spacing, crop around the body, intensity
mapping); synthetic cases are a release (nnU-Net raw: ``imagesTr/<case>_0000.nii.gz``,
``labelsTr/<case>.nii.gz``, in release units) mapped to the same units. Every refusal is an
:class:`AuditInputError` naming the path at fault.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from common.audit.search import CaseSet
from common.config import FedsynthConfig
from common.data.loading import load_case
from common.data.preprocess import prepare_case
from common.data.site import check_site, usable_cases
from common.errors import FedsynthError
from common.release import release_intensity
from common.release_reader import read_release_pairs


class AuditInputError(FedsynthError, ValueError):
    """An audit input cannot be used as given; the message names the path and what to do."""


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
        f"the site's data.target-shape is {config.data.target_shape}: audit against real "
        "cases prepared on the release's grid (its manifest's data settings)"
    )
    pairs = read_release_pairs(release, _shape_zyx(config), AuditInputError, hint)
    intensity = release_intensity(config)
    images = [intensity.forward(image) for _, image, _ in pairs]
    labels = [label.astype(np.uint8) for _, _, label in pairs]
    return _stack(images, labels), [case_id for case_id, _, _ in pairs]
