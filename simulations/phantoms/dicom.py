"""A volume written as a DICOM series, one file per slice, with the tags ITK reads back.

Test and benchmark cohorts use it to give the readers DICOM folders made from known voxels.
"""

from __future__ import annotations

from pathlib import Path

import SimpleITK as sitk


def slice_tags(image: sitk.Image, z: int, series_uid: str) -> dict[str, str]:
    """The DICOM tags of slice ``z`` of ``image``: series, position, orientation, spacing."""
    origin = image.TransformIndexToPhysicalPoint((0, 0, z))
    return {
        "0020|000e": series_uid,
        "0020|0032": "\\".join(f"{v:f}" for v in origin),
        "0020|0037": "1\\0\\0\\0\\1\\0",
        "0020|0013": str(z + 1),
        "0028|0030": f"{image.GetSpacing()[1]:f}\\{image.GetSpacing()[0]:f}",
        "0008|0060": "CT",
        "0028|1052": "0",
        "0028|1053": "1",
    }


def write_dicom_series(
    image: sitk.Image,
    folder: Path,
    series_uid: str,
    overrides: dict[int, dict[str, str]] | None = None,
) -> list[Path]:
    """Write ``image`` as ``folder/slice000.dcm``, ... and return the slice files.

    ``overrides`` replaces tags of some slices (slice index -> {tag: value}).
    """
    folder.mkdir(parents=True, exist_ok=True)
    writer = sitk.ImageFileWriter()
    writer.KeepOriginalImageUIDOn()
    written = []
    for z in range(image.GetDepth()):
        slice_image = image[:, :, z]
        tags = {**slice_tags(image, z, series_uid), **(overrides or {}).get(z, {})}
        for tag, value in tags.items():
            slice_image.SetMetaData(tag, value)
        path = folder / f"slice{z:03d}.dcm"
        writer.SetFileName(str(path))
        writer.Execute(slice_image)
        written.append(path)
    return written
