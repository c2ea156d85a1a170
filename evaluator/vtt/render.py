"""The one way every case is written and drawn, whatever its source.

Real and synthetic cases go through :func:`write_case` (the release grid, the release's data
type, an uncompressed NIfTI, so every file has the same header and the same size) and, when the
study has label maps, :func:`write_labels` (the same grid, uint8), and are drawn by
:func:`slice_png` (a window, 8-bit grey, a PNG without metadata): nothing but the voxels
differs between the two sources.
"""

from __future__ import annotations

from io import BytesIO
from pathlib import Path

import numpy as np
from PIL import Image

from common.config import DataConfig
from common.data.imageio import from_array, read_image, to_array, write_image
from common.data.preprocess import release_geometry
from common.release import MRI_RELEASE_RANGE
from common.reports.figures import CT_BONE_WINDOW, CT_SOFT_TISSUE_WINDOW

PLANES = ("axial", "coronal", "sagittal")
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
GREY_LEVELS = 255


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


def read_case(path: Path) -> np.ndarray:
    """A case's voxels as float32 (z, y, x)."""
    return to_array(read_image(path)).astype(np.float32)


def plane_size(shape_xyz: tuple[int, int, int], plane: str) -> int:
    """How many slices a plane has."""
    x, y, z = shape_xyz
    return {"axial": z, "coronal": y, "sagittal": x}[plane]


def slice_of(volume: np.ndarray, plane: str, index: int) -> np.ndarray:
    """One slice of a (z, y, x) volume as shown: anterior at the top of an axial slice,
    superior at the top of coronal and sagittal ones."""
    if plane == "axial":
        return volume[index]
    if plane == "coronal":
        return volume[::-1, index, :]
    return volume[::-1, :, index]


def slice_png(volume: np.ndarray, plane: str, index: int, window: tuple[float, float]) -> bytes:
    """A slice in a grey window as PNG bytes with no text or time chunks."""
    low, high = window
    scaled = (slice_of(volume, plane, index) - low) / (high - low) * GREY_LEVELS
    grey = np.clip(np.round(scaled), 0, GREY_LEVELS).astype(np.uint8)
    buffer = BytesIO()
    Image.fromarray(np.ascontiguousarray(grey), mode="L").save(buffer, format="PNG")
    return buffer.getvalue()
