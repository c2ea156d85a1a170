"""Reading a release's synthetic pairs back as arrays (the evaluator's and the audit's input)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import SimpleITK as sitk

from common.config import FedsynthConfig, Scalar, load_config
from common.data.imageio import read_image
from common.data.nnunet import IMAGES_DIR, case_ids, case_paths
from common.errors import DataError, FedsynthError
from common.release import MANIFEST_FILE, read_manifest


def manifest_settings(release: Path, error: type[FedsynthError]) -> dict[str, Scalar]:
    """The run settings a release's manifest records (every one but the machine's paths).

    Raises:
        error: no manifest, or a manifest fedsynth cannot read.
    """
    if not (release / MANIFEST_FILE).is_file():
        raise error(
            f"{release}: no {MANIFEST_FILE}; give a release written by `fedsynth sample` or a "
            "federated run (its folder has imagesTr/, labelsTr/, dataset.json and the manifest)"
        )
    try:
        return dict(read_manifest(release)["run_config"])
    except (ValueError, KeyError, TypeError) as err:
        raise error(f"{release / MANIFEST_FILE}: unreadable manifest ({err})") from None


def release_config(
    release: Path, error: type[FedsynthError], overrides: dict[str, Scalar] | None = None
) -> FedsynthConfig:
    """The settings a release was made with (its manifest), with ``overrides`` on top.

    Raises:
        error: no manifest, or a manifest fedsynth cannot read.
        ConfigError: a setting is unknown or out of range.
    """
    return load_config({**manifest_settings(release, error), **(overrides or {})})


def _read(path: Path, error: type[FedsynthError]) -> np.ndarray:
    if not path.is_file():
        raise error(f"{path}: missing; a release pairs every image with a label map")
    try:
        return sitk.GetArrayFromImage(read_image(path))
    except DataError as err:
        raise error(str(err)) from None


def release_case_ids(release: Path, error: type[FedsynthError]) -> list[str]:
    """The case ids of a release's images, in file order.

    Raises:
        error: no images.
    """
    ids = case_ids(release)
    if not ids:
        raise error(f"{release / IMAGES_DIR}: no synthetic images here")
    return ids


def read_release_pair(
    release: Path,
    case_id: str,
    shape_zyx: tuple[int, int, int],
    error: type[FedsynthError],
    grid_hint: str,
) -> tuple[np.ndarray, np.ndarray]:
    """One case's (image, label map) as stored, checked to lie on ``shape_zyx``.

    Raises:
        error: a missing or unreadable file, or a case on another grid (the message ends with
            ``grid_hint``).
    """
    image_path, label_path = case_paths(release, case_id)
    image, label = _read(image_path, error), _read(label_path, error)
    for path, array in ((image_path, image), (label_path, label)):
        if array.shape != shape_zyx:
            raise error(f"{path}: grid {array.shape[::-1]} (x, y, z), but {grid_hint}")
    return image, label


def read_release_pairs(
    release: Path, shape_zyx: tuple[int, int, int], error: type[FedsynthError], grid_hint: str
) -> list[tuple[str, np.ndarray, np.ndarray]]:
    """Every (case id, image, label map) of a release in file order, each checked to lie on
    ``shape_zyx``; arrays as stored (images in release units).

    Raises:
        error: no images, a missing or unreadable file, or a case on another grid (the
            message ends with ``grid_hint``).
    """
    return [
        (case_id, *read_release_pair(release, case_id, shape_zyx, error, grid_hint))
        for case_id in release_case_ids(release, error)
    ]
