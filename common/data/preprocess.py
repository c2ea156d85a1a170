"""Preparing a case for training: one grid, one shape, intensities in [-1, 1], geometry kept.

The steps, in order (``data`` is :class:`common.config.DataConfig`):

1. canonical orientation (``LPS``: axis-aligned scans get an identity direction);
2. resampling to ``data.target-spacing`` around the same centre (linear for the image, nearest
   neighbour for the label map);
3. the body mask (CT above ``data.ct-body-threshold-hu``, MRI above ``data.mri-body-fraction`` of
   the 99th percentile; largest connected component);
4. crop/pad to ``data.target-shape`` centred on the body's bounding box, padding with the
   background (CT: ``data.ct-window-min``, i.e. air; MRI: the image's minimum);
5. intensities to [-1, 1] (see :mod:`common.data.intensity`).

The prepared grid's world geometry and the intensity mapping travel with the case, so a volume
on that grid goes back to world coordinates and HU with :func:`to_world_image`. Synthetic cases
are released on :func:`release_geometry` instead, which holds no patient's position.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import SimpleITK as sitk

from common.config import DataConfig
from common.data.crop import body_mask, crop_or_pad, crop_start, mask_centre, window_geometry
from common.data.imageio import Geometry, from_array, to_array
from common.data.intensity import IntensityMapping, ct_mapping, mri_mapping
from common.data.problems import ProblemKind
from common.data.resample import canonical_orientation, resample_to_reference, respaced_geometry
from common.errors import DataError

__all__ = [
    "IntensityMapping",
    "PreparedCase",
    "label_on_source",
    "prepare_case",
    "release_geometry",
    "resample_to_reference",
    "to_world_image",
]

IDENTITY_DIRECTION = (1.0, 0.0, 0.0, 0.0, 1.0, 0.0, 0.0, 0.0, 1.0)
LABEL_MAX = int(np.iinfo(np.uint8).max)


@dataclass(frozen=True, eq=False)
class PreparedCase:
    """One case on the training grid.

    Attributes:
        case_id: the site's case identifier.
        image: float32 (z, y, x) in [-1, 1].
        label: uint8 (z, y, x), schema values.
        geometry: the prepared grid in world coordinates (size = ``data.target-shape``).
        intensity: maps ``image`` back to HU (CT) or the site's MRI intensities.
        source_geometry: the grid of the original image.
    """

    case_id: str
    image: np.ndarray
    label: np.ndarray
    geometry: Geometry
    intensity: IntensityMapping
    source_geometry: Geometry

    def __post_init__(self) -> None:
        shape = tuple(reversed(self.geometry.size))
        if self.image.dtype != np.float32 or self.image.shape != shape:
            raise ValueError(
                f"case {self.case_id}: image must be float32 of shape {shape} (z, y, x), "
                f"got {self.image.dtype} {self.image.shape}"
            )
        if self.label.dtype != np.uint8 or self.label.shape != shape:
            raise ValueError(
                f"case {self.case_id}: label must be uint8 of shape {shape} (z, y, x), "
                f"got {self.label.dtype} {self.label.shape}"
            )


def _background(image: sitk.Image, data: DataConfig) -> float:
    """The value of empty space in source units: air for CT, the minimum for MRI."""
    if data.modality == "ct":
        return float(data.ct_window_min)
    stats = sitk.MinimumMaximumImageFilter()
    stats.Execute(image)
    return float(stats.GetMinimum())


def _mapping(
    case_id: str, values: np.ndarray, body: np.ndarray, data: DataConfig
) -> IntensityMapping:
    if data.modality == "ct":
        return ct_mapping(data)
    try:
        return mri_mapping(values, body, data)
    except ValueError as err:
        raise DataError(
            Path(case_id),
            ProblemKind.NO_CONTRAST.value,
            str(err),
            "check the image or leave this case out",
        ) from None


def prepare_case(
    case_id: str, image: sitk.Image, label: sitk.Image, data: DataConfig
) -> PreparedCase:
    """Orient, resample, crop/pad around the body and normalise one loaded, validated case.

    Raises:
        DataError: an MRI without contrast inside the body (kind ``no-contrast``).
    """
    oriented = canonical_orientation(image)
    grid = respaced_geometry(Geometry.of(oriented), data.target_spacing)
    background = _background(oriented, data)
    values = to_array(resample_to_reference(oriented, grid, label=False, default=background))
    labels = to_array(resample_to_reference(canonical_orientation(label), grid, label=True))
    body = body_mask(values, data)
    mapping = _mapping(case_id, values, body, data)
    shape = tuple(reversed(data.target_shape))
    start = crop_start(mask_centre(body), shape)
    return PreparedCase(
        case_id=case_id,
        image=mapping.forward(crop_or_pad(values, start, shape, background)),
        label=crop_or_pad(labels, start, shape, 0),
        geometry=window_geometry(grid, tuple(reversed(start)), data.target_shape),
        intensity=mapping,
        source_geometry=Geometry.of(image),
    )


def to_world_image(
    array: np.ndarray, geometry: Geometry, intensity: IntensityMapping | None
) -> sitk.Image:
    """A (z, y, x) array on ``geometry`` as a world image.

    With an ``intensity`` mapping the array is normalised and comes back float32 in HU (CT) or
    MRI intensities; with ``None`` it is a label map and comes back uint8.

    Raises:
        ValueError: the array's shape is not the geometry's, or a label map is not integer or
            does not fit in uint8.
    """
    shape = tuple(reversed(geometry.size))
    if array.shape != shape:
        raise ValueError(f"array shape {array.shape} is not the geometry's {shape} (z, y, x)")
    if intensity is not None:
        return from_array(intensity.inverse(array), geometry)
    if not np.issubdtype(array.dtype, np.integer):
        raise ValueError(f"a label map must be an integer array, got {array.dtype}: round first")
    if array.size and (int(array.min()) < 0 or int(array.max()) > LABEL_MAX):
        raise ValueError(f"label values must lie in 0..{LABEL_MAX} to be written as uint8")
    return from_array(array.astype(np.uint8), geometry)


def label_on_source(case: PreparedCase) -> sitk.Image:
    """The prepared label map sampled back onto the original image's grid (nearest neighbour)."""
    prepared = from_array(case.label, case.geometry)
    return resample_to_reference(prepared, case.source_geometry, label=True)


def release_geometry(data: DataConfig) -> Geometry:
    """The grid of every released synthetic case: target spacing and shape, identity direction,
    centred on the world origin (no real patient's position is ever released)."""
    size = np.asarray(data.target_shape)
    origin = -(size - 1) / 2 * np.asarray(data.target_spacing)
    return Geometry(
        size=(int(size[0]), int(size[1]), int(size[2])),
        spacing=(
            float(data.target_spacing[0]),
            float(data.target_spacing[1]),
            float(data.target_spacing[2]),
        ),
        origin=(float(origin[0]), float(origin[1]), float(origin[2])),
        direction=IDENTITY_DIRECTION,
    )
