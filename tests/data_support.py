"""Helpers for data tests: tiny hand-made volumes whose every voxel the tests know,
pattern-layout cases, calibrated phantoms, and the shared real cases (DICOM series:
``simulations.phantoms.dicom``)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import SimpleITK as sitk

from common.config import PhantomConfig

HEAD_CT_SETTINGS = {
    "data.image-pattern": "{case}.nii.gz",
    "data.label-pattern": "{case}_bone.nii.gz",
    "data.label-remap": "1:2",
    "data.require-tumour": False,
}
"""How fedsynth reads the shared head CT (a pattern layout, its bone mask as label 2)."""
SHARED_DATA = Path(__file__).resolve().parents[1].parent / "shared" / "data"


def shared_case(*parts: str) -> Path:
    """A file under ../shared/data, or skip the test with the reason."""
    path = SHARED_DATA.joinpath(*parts)
    if not path.exists():
        pytest.skip(f"shared real data not found at {path} (only CI and dev machines have it)")
    return path


def tiny_ct(size: int = 12) -> tuple[sitk.Image, sitk.Image]:
    """A 12^3 CT in HU: air, a soft-tissue box (40 HU), a bone bar (700 HU), a 2^3 tumour."""
    hu = np.full((size, size, size), -1000, dtype=np.int16)
    hu[2:-2, 2:-2, 2:-2] = 40
    hu[3:-3, 8:10, 3:-3] = 700
    label = np.zeros_like(hu, dtype=np.uint8)
    label[4:6, 4:6, 4:6] = 1
    hu[4:6, 4:6, 4:6] = 70
    label[3:-3, 8:10, 3:-3] = 2
    image, mask = sitk.GetImageFromArray(hu), sitk.GetImageFromArray(label)
    for volume in (image, mask):
        volume.SetSpacing((1.5, 1.5, 2.0))
        volume.SetOrigin((-10.0, 20.0, 5.0))
    return image, mask


def write_pattern_case(folder: Path, case_id: str, image: sitk.Image, label: sitk.Image) -> None:
    """Write a case as ``<case>_image.nii.gz`` and ``<case>_label.nii.gz``."""
    folder.mkdir(parents=True, exist_ok=True)
    sitk.WriteImage(image, str(folder / f"{case_id}_image.nii.gz"))
    sitk.WriteImage(label, str(folder / f"{case_id}_label.nii.gz"))


def calibrated_phantoms() -> PhantomConfig:
    """A calibrated scanner with very little noise and large tumours: values checked tightly."""
    return PhantomConfig(
        size=32,
        sites=2,
        site_intensity_scale=0.0,
        site_intensity_offset=0.0,
        noise_min=0.002,
        noise_max=0.002,
        tumour_radius_min_mm=18.0,
        tumour_radius_max_mm=20.0,
        site_tumour_scale=0.0,
    )
