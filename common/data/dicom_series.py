"""A folder of DICOM slices read as one volume, after checking that the slices make one.

A folder must hold exactly one series (files that are not DICOM are ignored, as GDCM does);
its slices must share size and in-plane spacing, lie at distinct positions along the slice
normal and be evenly spaced (a missing slice leaves a gap), and make no more voxels than
``data.max-voxels``. Each problem is a :class:`~common.errors.DataError` naming the file.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import SimpleITK as sitk

from common.data.headers import header_error

SLICE_GAP_TOLERANCE = 0.1
"""Slices whose distance differs from the series' median by more than this fraction of it
mean a missing (or an extra) slice."""


@dataclass(frozen=True)
class SliceInfo:
    """One slice file's geometry, read without its pixels."""

    path: Path
    size: tuple[int, int]
    spacing: tuple[float, float]
    position: float


def _series_files(folder: Path) -> list[str]:
    try:
        series_ids = sitk.ImageSeriesReader.GetGDCMSeriesIDs(str(folder)) or ()
    except RuntimeError as err:
        raise header_error(folder, f"cannot list its DICOM files ({err})") from None
    if not series_ids:
        raise header_error(
            folder,
            "folder holds no DICOM series",
            "point at an image file or at a folder with one DICOM series",
        )
    if len(series_ids) > 1:
        raise header_error(
            folder,
            f"folder holds {len(series_ids)} DICOM series",
            "put each series in a folder of its own",
        )
    return list(sitk.ImageSeriesReader.GetGDCMSeriesFileNames(str(folder), series_ids[0]))


def _slice_info(name: str) -> SliceInfo:
    reader = sitk.ImageFileReader()
    reader.SetFileName(name)
    try:
        reader.ReadImageInformation()
    except RuntimeError as err:
        raise header_error(Path(name), f"cannot be read as a DICOM slice ({err})") from None
    direction = np.asarray(reader.GetDirection(), dtype=float).reshape(3, 3)
    normal = direction[:, 2]
    size, spacing = reader.GetSize(), reader.GetSpacing()
    return SliceInfo(
        Path(name),
        (int(size[0]), int(size[1])),
        (round(float(spacing[0]), 4), round(float(spacing[1]), 4)),
        float(np.dot(normal, reader.GetOrigin())),
    )


def _check_slices(folder: Path, slices: list[SliceInfo]) -> None:
    first = slices[0]
    for info in slices[1:]:
        if info.size != first.size:
            raise header_error(
                info.path,
                f"slice size {info.size} differs from {first.path.name}'s {first.size}",
                "the series mixes images of different sizes: keep one",
            )
        if info.spacing != first.spacing:
            raise header_error(
                info.path,
                f"pixel spacing {info.spacing} differs from {first.path.name}'s {first.spacing}",
                "the series mixes images of different spacing: keep one",
            )
    ordered = sorted(slices, key=lambda s: s.position)
    steps = np.diff([s.position for s in ordered])
    if len(steps) == 0:
        return
    median = float(np.median(steps))
    for index, step in enumerate(steps):
        if step <= SLICE_GAP_TOLERANCE * max(median, 1e-6):
            raise header_error(
                ordered[index + 1].path,
                f"lies at the same position as {ordered[index].path.name} (a duplicated slice)",
                "remove the duplicate",
            )
        if abs(step - median) > SLICE_GAP_TOLERANCE * median:
            raise header_error(
                folder,
                f"slices {ordered[index].path.name} and {ordered[index + 1].path.name} are "
                f"{step:.3g} mm apart, the series' others {median:.3g} mm (a missing slice?)",
                "export the complete series",
            )


def read_dicom_series(folder: Path, max_voxels: int) -> sitk.Image:
    """Read the one DICOM series of ``folder`` as a 3D volume, checked first.

    Raises:
        DataError: no series, several, unreadable slices, mixed sizes or spacing, duplicated
            or missing slices, or more voxels than ``max_voxels``.
    """
    names = _series_files(folder)
    slices = [_slice_info(name) for name in names]
    voxels = slices[0].size[0] * slices[0].size[1] * len(slices)
    if voxels > max_voxels:
        raise header_error(
            folder,
            f"the series makes {voxels:,} voxels, more than data.max-voxels = {max_voxels:,}",
            "crop or downsample the series, or raise data.max-voxels if memory allows",
        )
    _check_slices(folder, slices)
    reader = sitk.ImageSeriesReader()
    reader.SetFileNames(names)
    return reader.Execute()
