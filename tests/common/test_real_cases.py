"""The three real cases in ../shared/data go through the same data layer as a hospital's data."""

from __future__ import annotations

import numpy as np
import pytest
import SimpleITK as sitk
from data_support import HEAD_CT_SETTINGS, shared_case

from common.config import load_config
from common.data.site import check_site


def test_brain_mri_with_tumour_label() -> None:
    folder = shared_case("real", "pyradiomics-brain1")
    report = check_site(folder, load_config({"data.modality": "mri"}).data)
    assert report.ok, report.problems
    (case,) = report.cases
    assert case.case_id == "brain1"
    assert case.shape == (256, 256, 25)
    assert case.spacing == pytest.approx((0.7813, 0.7813, 6.5), abs=1e-3)
    assert case.label_counts["necrotic_core"] == 4137  # pyradiomics' label 1, as published


def test_chest_ct_with_tumour_label_and_bone_by_threshold() -> None:
    folder = shared_case("real", "pyradiomics-lung1")
    report = check_site(folder, load_config({}).data)
    assert report.ok, report.problems
    (case,) = report.cases
    assert case.shape == (512, 512, 48)
    assert case.spacing[2] == pytest.approx(5.0)
    assert case.intensity_range is not None
    assert case.intensity_range[0] <= -1000
    assert case.label_counts["tumour"] == 837
    assert case.bone_source == "threshold"
    assert case.label_counts["bone"] > 10_000  # ribs, spine and sternum at >= 226 HU


def test_head_ct_with_bone_mask() -> None:
    folder = shared_case("real", "invesalius-head-ct")
    report = check_site(folder, load_config(HEAD_CT_SETTINGS).data)
    assert report.ok, report.problems
    (case,) = report.cases
    assert case.shape == (256, 256, 108)
    assert case.spacing == pytest.approx((0.957, 0.957, 1.5), abs=1e-3)
    assert case.intensity_range == (-1024.0, 2986.0)
    assert case.bone_source == "mask"
    hu = sitk.GetArrayFromImage(sitk.ReadImage(str(folder / "head_ct.nii.gz")))
    assert case.label_counts["bone"] == int(np.count_nonzero(hu >= 226))  # how it was made
    assert case.label_counts["tumour"] == 0


def test_head_ct_without_settings_is_refused_with_reasons() -> None:
    folder = shared_case("real", "invesalius-head-ct")
    report = check_site(folder, load_config({}).data)
    assert not report.ok
    assert [p.kind.value for p in report.problems] == ["no-cases"]
