"""Voxel grids: canonical orientation and resampling, with the world position kept.

Every grid here is ITK's: sizes, spacings and origins in (x, y, z) order, millimetres, LPS.
"""

from __future__ import annotations

import numpy as np
import SimpleITK as sitk

from common.data.imageio import Geometry

CANONICAL_ORIENTATION = "LPS"
"""DICOM orientation code whose direction matrix is the identity (x to the patient's left, y to
posterior, z to superior): axis-aligned scans end up with an identity direction."""


def canonical_orientation(image: sitk.Image) -> sitk.Image:
    """The same voxels with axes permuted and flipped so the direction is closest to identity.

    Oblique scans keep a direction close to (not equal to) the identity; no voxel is interpolated.
    """
    return sitk.DICOMOrient(image, CANONICAL_ORIENTATION)


def _direction(geometry: Geometry) -> np.ndarray:
    return np.asarray(geometry.direction, dtype=np.float64).reshape(3, 3)


def grid_centre(geometry: Geometry) -> np.ndarray:
    """World position (x, y, z) of the centre of a grid (halfway between its end voxels)."""
    half_extent = (np.asarray(geometry.size) - 1) / 2 * np.asarray(geometry.spacing)
    return np.asarray(geometry.origin) + _direction(geometry) @ half_extent


def respaced_geometry(geometry: Geometry, spacing: tuple[float, float, float]) -> Geometry:
    """A grid with ``spacing`` covering the same field of view, centred on the same point.

    Each axis gets ``round(size * old_spacing / spacing)`` voxels (at least one), and the origin
    is moved so both grids share their centre: resampling never shifts the anatomy.
    """
    old_extent = np.asarray(geometry.size) * np.asarray(geometry.spacing)
    size = np.maximum(1, np.round(old_extent / np.asarray(spacing))).astype(int)
    half_extent = (size - 1) / 2 * np.asarray(spacing)
    origin = grid_centre(geometry) - _direction(geometry) @ half_extent
    return Geometry(
        size=(int(size[0]), int(size[1]), int(size[2])),
        spacing=(float(spacing[0]), float(spacing[1]), float(spacing[2])),
        origin=(float(origin[0]), float(origin[1]), float(origin[2])),
        direction=geometry.direction,
    )


def resample_to_reference(
    image: sitk.Image, reference: Geometry, *, label: bool, default: float = 0.0
) -> sitk.Image:
    """``image`` sampled on the ``reference`` grid, through world coordinates.

    Labels use nearest-neighbour interpolation and come out uint8; images use linear
    interpolation and come out float32. World points outside ``image`` get ``default``.
    """
    interpolator = sitk.sitkNearestNeighbor if label else sitk.sitkLinear
    pixel_type = sitk.sitkUInt8 if label else sitk.sitkFloat32
    return sitk.Resample(
        image,
        reference.size,
        sitk.Transform(),
        interpolator,
        reference.origin,
        reference.spacing,
        reference.direction,
        default,
        pixel_type,
    )
