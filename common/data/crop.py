"""Body masks and the crop/pad of a grid to a fixed shape centred on the body.

Arrays are numpy (z, y, x); grid positions given to or returned by the ``*_xyz`` helpers are ITK
(x, y, z) voxel indices. A crop/pad moves the grid by whole voxels, so no voxel is interpolated and
the new origin is exact.
"""

from __future__ import annotations

import math

import numpy as np
from scipy import ndimage

from common.config import DataConfig
from common.data.imageio import Geometry

MRI_BODY_REFERENCE_PERCENTILE = 99.0
"""The MRI body mask keeps voxels above ``data.mri-body-fraction`` times this percentile of the
whole image (a near-maximum that ignores a few very bright voxels)."""


def largest_component(mask: np.ndarray) -> np.ndarray:
    """The largest face-connected component of a boolean mask (all False if it is empty)."""
    labelled, count = ndimage.label(mask)
    if count == 0:
        return np.zeros(mask.shape, dtype=bool)
    sizes = np.bincount(labelled.ravel())
    sizes[0] = 0
    return np.asarray(labelled == int(np.argmax(sizes)))


def body_mask(values: np.ndarray, data: DataConfig) -> np.ndarray:
    """The body (or head): largest connected component above the modality's threshold.

    CT: voxels above ``data.ct-body-threshold-hu``. MRI: voxels above ``data.mri-body-fraction``
    times the image's 99th percentile.
    """
    if data.modality == "ct":
        threshold = data.ct_body_threshold_hu
    else:
        reference = float(np.percentile(values, MRI_BODY_REFERENCE_PERCENTILE))
        threshold = data.mri_body_fraction * reference
    return largest_component(np.asarray(values) > threshold)


def mask_centre(mask: np.ndarray) -> tuple[float, ...]:
    """Centre of the mask's bounding box, in array (z, y, x) index units.

    An empty mask has no box: the centre of the whole array is returned instead.
    """
    boxes = ndimage.find_objects(mask.astype(np.uint8))
    if not boxes or boxes[0] is None:
        return tuple((n - 1) / 2 for n in mask.shape)
    return tuple((box.start + box.stop - 1) / 2 for box in boxes[0])


def crop_start(centre: tuple[float, ...], shape: tuple[int, ...]) -> tuple[int, ...]:
    """First index of a window of ``shape`` voxels whose centre is nearest to ``centre``.

    The window's centre is ``start + (n - 1) / 2``; ties round up, so the result never depends on
    floating-point banker's rounding. Negative starts (padding) are allowed.
    """
    return tuple(math.floor(c - (n - 1) / 2 + 0.5) for c, n in zip(centre, shape, strict=True))


def crop_or_pad(
    array: np.ndarray, start: tuple[int, ...], shape: tuple[int, ...], fill: float
) -> np.ndarray:
    """The window ``array[start : start + shape]``, with ``fill`` where it lies outside."""
    out = np.full(shape, fill, dtype=array.dtype)
    source, target = [], []
    for first, size, length in zip(start, shape, array.shape, strict=True):
        low, high = max(first, 0), min(first + size, length)
        if high <= low:
            return out
        source.append(slice(low, high))
        target.append(slice(low - first, high - first))
    out[tuple(target)] = array[tuple(source)]
    return out


def window_geometry(
    geometry: Geometry, start_xyz: tuple[int, ...], size_xyz: tuple[int, ...]
) -> Geometry:
    """The grid of a window starting at voxel ``start_xyz`` of ``geometry`` (same spacing)."""
    direction = np.asarray(geometry.direction, dtype=np.float64).reshape(3, 3)
    shift = direction @ (np.asarray(start_xyz, dtype=np.float64) * np.asarray(geometry.spacing))
    origin = np.asarray(geometry.origin) + shift
    return Geometry(
        size=(int(size_xyz[0]), int(size_xyz[1]), int(size_xyz[2])),
        spacing=geometry.spacing,
        origin=(float(origin[0]), float(origin[1]), float(origin[2])),
        direction=geometry.direction,
    )
