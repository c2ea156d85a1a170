"""Bone from Hounsfield units, for datasets that have no bone mask.

Three steps: voxels at or above ``data.bone-threshold-hu``; a binary closing with a ball of
``data.bone-closing-radius`` voxels, which bridges one-voxel gaps in thin cortical bone; then
connected pieces smaller than ``data.bone-min-volume-mm3`` (using the image's spacing) removed as
noise (calcifications, contrast or metal specks, isolated bright voxels).
"""

from __future__ import annotations

import numpy as np
import SimpleITK as sitk

from common.config import DataConfig

BONE = 1
BONE_FULLY_CONNECTED = True
"""Pieces of bone touching at an edge or a corner count as one piece (26-connectivity)."""


def bone_from_hu(image: sitk.Image, data: DataConfig) -> sitk.Image:
    """A uint8 0/1 bone mask of a CT in HU, on the CT's grid."""
    above = sitk.GetArrayViewFromImage(image) >= data.bone_threshold_hu
    bone = sitk.GetImageFromArray(above.astype(np.uint8))
    bone.CopyInformation(image)
    if data.bone_closing_radius > 0:
        bone = sitk.BinaryMorphologicalClosing(
            bone, [data.bone_closing_radius] * 3, sitk.sitkBall, BONE
        )
    return remove_small_pieces(bone, data.bone_min_volume_mm3)


def remove_small_pieces(mask: sitk.Image, min_volume_mm3: float) -> sitk.Image:
    """``mask`` (0/1) without its connected pieces smaller than ``min_volume_mm3``, as uint8."""
    pieces = sitk.GetArrayFromImage(sitk.ConnectedComponent(mask, BONE_FULLY_CONNECTED))
    voxel_mm3 = float(np.prod(mask.GetSpacing()))
    volumes = np.bincount(pieces.ravel()) * voxel_mm3
    keep = volumes >= min_volume_mm3
    keep[0] = False
    result = sitk.GetImageFromArray(keep[pieces].astype(np.uint8))
    result.CopyInformation(mask)
    return result
