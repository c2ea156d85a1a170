"""The evaluator's inputs: a synthetic release and a real evaluation set, on one grid, in one unit.

A release (nnU-Net raw + ``manifest.json``) already sits on the training grid (its run's
``data.target-shape`` and ``-spacing``), in release units: Hounsfield units for CT, the fixed
release range for MRI. The real set, in any layout fedsynth reads, is checked and prepared with
the release's own data settings, then mapped to the same release units, so that every metric
compares like with like.

Refused with an :class:`EvaluationInputError` naming the folder and what to do: a release
without a manifest, a real set of another modality, cases on another grid. Real cases with
problems are listed per case (they are left out only with ``data.skip-bad-cases``).
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np

from common.config import FedsynthConfig, Scalar
from common.data.loading import CaseReport, load_case
from common.data.preprocess import prepare_case
from common.data.site import CaseCallback, SiteReport, check_site, usable_cases
from common.errors import FedsynthError
from common.release import release_intensity
from common.release_reader import read_release_pair, release_case_ids, release_config


class EvaluationInputError(FedsynthError, ValueError):
    """A release or real set cannot be evaluated as given; the message says why and what to do."""


@dataclass(frozen=True)
class EvalCase:
    """One case on the release grid: ``image`` float32 (z, y, x) in release units (HU for CT),
    ``label`` uint8 (z, y, x) schema values, ``spacing`` (x, y, z) in mm."""

    case_id: str
    image: np.ndarray
    label: np.ndarray
    spacing: tuple[float, float, float]


def release_settings(release: Path, overrides: dict[str, Scalar] | None = None) -> FedsynthConfig:
    """The run settings a release was made with (its manifest), with ``overrides`` on top.

    Raises:
        EvaluationInputError: no manifest, or a manifest fedsynth cannot read.
    """
    return release_config(release, EvaluationInputError, overrides)


def _spacing(config: FedsynthConfig) -> tuple[float, float, float]:
    x, y, z = config.data.target_spacing
    return (x, y, z)


def _shape_zyx(config: FedsynthConfig) -> tuple[int, int, int]:
    x, y, z = config.data.target_shape
    return (z, y, x)


def _grid_hint(config: FedsynthConfig) -> str:
    return (
        f"the release's manifest says data.target-shape = {config.data.target_shape}: the "
        "release was altered; sample it again"
    )


def release_cases(release: Path) -> list[str]:
    """The case ids of a release, in file order.

    Raises:
        EvaluationInputError: the release has no images.
    """
    return release_case_ids(release, EvaluationInputError)


def load_release_case(release: Path, case_id: str, config: FedsynthConfig) -> EvalCase:
    """One synthetic case of a release, checked to lie on the release's grid.

    Raises:
        EvaluationInputError: its image or label map is missing, unreadable or on another grid.
    """
    image, label = read_release_pair(
        release, case_id, _shape_zyx(config), EvaluationInputError, _grid_hint(config)
    )
    return EvalCase(case_id, image.astype(np.float32), label.astype(np.uint8), _spacing(config))


def load_release(release: Path, config: FedsynthConfig) -> list[EvalCase]:
    """Every synthetic case of a release, checked to lie on the release's grid.

    Raises:
        EvaluationInputError: no images, or a case's image or label map is missing,
            unreadable or on another grid.
    """
    return [load_release_case(release, c, config) for c in release_cases(release)]


@dataclass(frozen=True)
class RealSet:
    """A checked real evaluation set: its report and the cases to use, in order."""

    report: SiteReport
    usable: list[CaseReport]


def check_real(root: Path, config: FedsynthConfig, on_case: CaseCallback | None = None) -> RealSet:
    """Check a real evaluation set with ``config``'s data settings (images are not kept);
    ``on_case`` is called as each case is checked.

    Raises:
        EvaluationInputError: the folder does not exist.
        SiteDataError: cases have problems (each listed with its file) and
            ``data.skip-bad-cases`` is off.
    """
    if not root.is_dir():
        raise EvaluationInputError(f"{root}: no such folder; give the real evaluation set")
    report = check_site(root, config.data, on_case)
    return RealSet(report, usable_cases(report, config.data))


def prepare_real(real: RealSet, case: CaseReport, config: FedsynthConfig) -> EvalCase:
    """One checked real case, prepared with ``config``'s data settings and mapped to release
    units."""
    loaded = load_case(case.files, config.data, real.report.listing.label_remap)
    if loaded.image is None or loaded.label is None:  # pragma: no cover - checked above
        raise EvaluationInputError(f"{case.files.image}: vanished while loading")
    prepared = prepare_case(case.case_id, loaded.image, loaded.label, config.data)
    image = release_intensity(config).inverse(prepared.image).astype(np.float32)
    return EvalCase(case.case_id, image, prepared.label, _spacing(config))


def load_real(root: Path, config: FedsynthConfig) -> list[EvalCase]:
    """A real evaluation set, checked, prepared with ``config``'s data settings (the release's)
    and mapped to release units.

    Raises:
        EvaluationInputError: the folder does not exist.
        SiteDataError: cases have problems (each listed with its file) and
            ``data.skip-bad-cases`` is off.
    """
    real = check_real(root, config)
    return [prepare_real(real, case, config) for case in real.usable]


def check_same_modality(release_config: FedsynthConfig, real_modality: str, real: Path) -> None:
    """Refuse a real set of another modality than the release's (another label schema).

    Raises:
        EvaluationInputError: the modalities differ.
    """
    if release_config.data.modality != real_modality:
        raise EvaluationInputError(
            f"{real}: data.modality = {real_modality}, but the release is "
            f"{release_config.data.modality} (another label schema): evaluate a release "
            "against real cases of its own modality"
        )


def with_skip_bad(config: FedsynthConfig, skip_bad: bool) -> FedsynthConfig:
    """``config`` with ``data.skip-bad-cases`` set."""
    return replace(config, data=replace(config.data, skip_bad_cases=skip_bad))
