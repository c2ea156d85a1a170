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
import SimpleITK as sitk

from common.config import FedsynthConfig, load_config
from common.data.imageio import read_image
from common.data.loading import load_case
from common.data.preprocess import prepare_case
from common.data.site import check_site, usable_cases
from common.errors import DataError, FedsynthError
from common.release import MANIFEST_FILE, read_manifest, release_intensity

IMAGES_DIR, LABELS_DIR = "imagesTr", "labelsTr"
IMAGE_SUFFIX, LABEL_SUFFIX = "_0000.nii.gz", ".nii.gz"


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


def release_settings(release: Path, overrides: dict[str, object] | None = None) -> FedsynthConfig:
    """The run settings a release was made with (its manifest), with ``overrides`` on top.

    Raises:
        EvaluationInputError: no manifest, or a manifest fedsynth cannot read.
    """
    if not (release / MANIFEST_FILE).is_file():
        raise EvaluationInputError(
            f"{release}: no {MANIFEST_FILE}; give a release written by `fedsynth sample` or a "
            "federated run (its folder has imagesTr/, labelsTr/, dataset.json and the manifest)"
        )
    try:
        manifest = read_manifest(release)
        settings = dict(manifest["run_config"])
    except (ValueError, KeyError, TypeError) as err:
        raise EvaluationInputError(
            f"{release / MANIFEST_FILE}: unreadable manifest ({err})"
        ) from None
    return load_config({**settings, **(overrides or {})})  # type: ignore[dict-item]


def _spacing(config: FedsynthConfig) -> tuple[float, float, float]:
    x, y, z = config.data.target_spacing
    return (x, y, z)


def _shape_zyx(config: FedsynthConfig) -> tuple[int, int, int]:
    x, y, z = config.data.target_shape
    return (z, y, x)


def load_release(release: Path, config: FedsynthConfig) -> list[EvalCase]:
    """Every synthetic case of a release, checked to lie on the release's grid.

    Raises:
        EvaluationInputError: a case's image or label map is missing, unreadable or on
            another grid.
    """
    cases = []
    images = sorted((release / IMAGES_DIR).glob(f"*{IMAGE_SUFFIX}"))
    if not images:
        raise EvaluationInputError(f"{release / IMAGES_DIR}: no synthetic images here")
    for image_path in images:
        case_id = image_path.name.removesuffix(IMAGE_SUFFIX)
        label_path = release / LABELS_DIR / f"{case_id}{LABEL_SUFFIX}"
        image, label = _read(image_path), _read(label_path)
        for path, array in ((image_path, image), (label_path, label)):
            if array.shape != _shape_zyx(config):
                raise EvaluationInputError(
                    f"{path}: grid {array.shape[::-1]} (x, y, z), but the release's manifest "
                    f"says data.target-shape = {config.data.target_shape}: the release was "
                    "altered; sample it again"
                )
        cases.append(
            EvalCase(case_id, image.astype(np.float32), label.astype(np.uint8), _spacing(config))
        )
    return cases


def _read(path: Path) -> np.ndarray:
    if not path.is_file():
        raise EvaluationInputError(f"{path}: missing; a release pairs every image with a label map")
    try:
        return sitk.GetArrayFromImage(read_image(path))
    except DataError as err:
        raise EvaluationInputError(str(err)) from None


def load_real(root: Path, config: FedsynthConfig) -> list[EvalCase]:
    """A real evaluation set, checked, prepared with ``config``'s data settings (the release's)
    and mapped to release units.

    Raises:
        EvaluationInputError: the folder does not exist.
        SiteDataError: cases have problems (each listed with its file) and
            ``data.skip-bad-cases`` is off.
    """
    if not root.is_dir():
        raise EvaluationInputError(f"{root}: no such folder; give the real evaluation set")
    report = check_site(root, config.data)
    intensity = release_intensity(config)
    cases = []
    for case in usable_cases(report, config.data):
        loaded = load_case(case.files, config.data, report.listing.label_remap)
        if loaded.image is None or loaded.label is None:  # pragma: no cover - checked above
            raise EvaluationInputError(f"{case.files.image}: vanished while loading")
        prepared = prepare_case(case.case_id, loaded.image, loaded.label, config.data)
        image = intensity.inverse(prepared.image).astype(np.float32)
        cases.append(EvalCase(case.case_id, image, prepared.label, _spacing(config)))
    return cases


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
