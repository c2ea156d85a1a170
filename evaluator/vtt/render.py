"""The one way every case file is written, whatever its source, and the windows it is shown in.

Real and synthetic cases go through :func:`write_case` (the release grid, the release's data
type, an uncompressed NIfTI, so every file has the same header bytes and the same size) and,
when the study shows label maps, :func:`write_labels` (the same grid, uint8). The reader's
browser receives these files as they are and draws them with NiiVue: nothing but the voxels
differs between the two sources.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from common.config import DataConfig
from common.data.imageio import from_array, write_image
from common.data.preprocess import release_geometry
from common.release import MRI_RELEASE_RANGE
from common.reports.figures import CT_BONE_WINDOW, CT_SOFT_TISSUE_WINDOW

MRI_HIGH_CONTRAST = (
    MRI_RELEASE_RANGE[0] + 0.25 * (MRI_RELEASE_RANGE[1] - MRI_RELEASE_RANGE[0]),
    MRI_RELEASE_RANGE[0] + 0.75 * (MRI_RELEASE_RANGE[1] - MRI_RELEASE_RANGE[0]),
)
"""The middle half of the MRI release range: a steeper grey scale."""
WINDOWS: dict[str, dict[str, tuple[float, float]]] = {
    "ct": {"soft tissue": CT_SOFT_TISSUE_WINDOW, "bone": CT_BONE_WINDOW},
    "mri": {"full range": MRI_RELEASE_RANGE, "high contrast": MRI_HIGH_CONTRAST},
}
"""The window presets a reader chooses from, per modality (the first is the default)."""


def _write(array: np.ndarray, data: DataConfig, path: Path) -> None:
    written = from_array(np.ascontiguousarray(array), release_geometry(data))
    write_image(written, path, compress=False)


def write_case(image: np.ndarray, data: DataConfig, path: Path) -> None:
    """Write a (z, y, x) image in release units on the release grid: CT rounded to int16 HU,
    MRI float32; an uncompressed NIfTI so that the file size is the same for every case."""
    if data.modality == "ct":
        voxels = np.clip(np.round(image), np.iinfo(np.int16).min, np.iinfo(np.int16).max)
        _write(voxels.astype(np.int16), data, path)
    else:
        _write(np.asarray(image, dtype=np.float32), data, path)


def write_labels(label: np.ndarray, data: DataConfig, path: Path) -> None:
    """Write a (z, y, x) uint8 label map of schema values on the release grid, uncompressed."""
    _write(np.asarray(label, dtype=np.uint8), data, path)
