"""Checking one case: each kind of bad input is found, named with its file, and explained."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
import SimpleITK as sitk
from data_support import tiny_ct, write_pattern_case

from common.config import load_config
from common.data.layouts import CaseFiles
from common.data.loading import check_case, load_case
from common.data.problems import ProblemKind
from common.data.site import check_site
from common.errors import DataError
from simulations.phantoms.dicom import write_dicom_series

CT = load_config({}).data
MRI = load_config({"data.modality": "mri"}).data


def _case(folder: Path, image: sitk.Image, label: sitk.Image) -> CaseFiles:
    write_pattern_case(folder, "x", image, label)
    return CaseFiles("x", folder / "x_image.nii.gz", folder / "x_label.nii.gz")


def test_valid_ct_case_reports_its_numbers(tmp_path: Path) -> None:
    report = load_case(_case(tmp_path, *tiny_ct()), CT, {})
    assert report.ok
    assert report.shape == (12, 12, 12)
    assert report.spacing == (1.5, 1.5, 2.0)
    assert report.intensity_range == (-1000.0, 700.0)
    assert report.label_counts == {"tumour": 8, "bone": 6 * 2 * 6}
    assert report.bone_source == "mask"
    assert report.label is not None
    assert report.label.GetPixelID() == sitk.sitkUInt8


def test_ct_without_bone_mask_gets_bone_from_hu(tmp_path: Path) -> None:
    image, label = tiny_ct()
    only_tumour = sitk.BinaryThreshold(label, 1, 1, 1, 0)
    report = load_case(_case(tmp_path, image, only_tumour), CT, {})
    assert report.bone_source == "threshold"
    assert report.label_counts["tumour"] == 8
    assert report.label_counts["bone"] == 6 * 2 * 6  # the 700 HU bar, nothing else >= 226 HU


def _float_label(label: sitk.Image, value: float) -> sitk.Image:
    values = sitk.GetArrayFromImage(label).astype(np.float32)
    values[values == 1] = value
    out = sitk.GetImageFromArray(values)
    out.CopyInformation(label)
    return out


def _with_array(image: sitk.Image, change: Callable[[np.ndarray], np.ndarray]) -> sitk.Image:
    out = sitk.GetImageFromArray(change(sitk.GetArrayFromImage(image)))
    out.CopyInformation(image)
    return out


def test_float_label_with_whole_numbers_is_accepted(tmp_path: Path) -> None:
    image, label = tiny_ct()
    assert load_case(_case(tmp_path, image, _float_label(label, 1.0)), CT, {}).ok


def _bad_cases() -> dict[str, tuple[Callable[[], tuple[sitk.Image, sitk.Image]], ProblemKind, str]]:
    def shifted(attribute: str) -> Callable[[], tuple[sitk.Image, sitk.Image]]:
        def make() -> tuple[sitk.Image, sitk.Image]:
            image, label = tiny_ct()
            if attribute == "spacing":
                label.SetSpacing((1.5, 1.5, 2.5))
            elif attribute == "origin":
                label.SetOrigin((-10.0, 20.0, 6.0))
            else:
                label.SetDirection((-1.0, 0, 0, 0, 1.0, 0, 0, 0, 1.0))
            return image, label

        return make

    def with_nan() -> tuple[sitk.Image, sitk.Image]:
        image, label = tiny_ct()
        image = sitk.Cast(image, sitk.sitkFloat32)
        return _with_array(image, lambda a: np.where(a > 600, np.nan, a)), label

    def raw_values() -> tuple[sitk.Image, sitk.Image]:
        image, label = tiny_ct()
        return _with_array(image, lambda a: (a + 1024).astype(np.int16)), label

    def huge_values() -> tuple[sitk.Image, sitk.Image]:
        image, label = tiny_ct()
        return _with_array(image, lambda a: np.where(a > 600, 31000, a).astype(np.int16)), label

    def other_size() -> tuple[sitk.Image, sitk.Image]:
        return tiny_ct()[0], tiny_ct(14)[1]

    def outside_schema() -> tuple[sitk.Image, sitk.Image]:
        image, label = tiny_ct()
        return image, _with_array(label, lambda a: np.where(a == 2, 5, a).astype(np.uint8))

    def no_tumour() -> tuple[sitk.Image, sitk.Image]:
        image, label = tiny_ct()
        return image, _with_array(label, lambda a: np.where(a == 1, 0, a).astype(np.uint8))

    return {
        "size": (other_size, ProblemKind.GRID_MISMATCH, "size"),
        "spacing": (shifted("spacing"), ProblemKind.GRID_MISMATCH, "spacing"),
        "origin": (shifted("origin"), ProblemKind.GRID_MISMATCH, "origin"),
        "direction": (shifted("direction"), ProblemKind.GRID_MISMATCH, "direction"),
        "nan": (with_nan, ProblemKind.NON_FINITE, "NaN or infinite"),
        "raw": (raw_values, ProblemKind.NOT_HU, "has no air"),
        "huge": (huge_values, ProblemKind.NOT_HU, "outside the HU range"),
        "schema": (outside_schema, ProblemKind.LABEL_OUTSIDE_SCHEMA, r"\[5\]"),
        "empty": (no_tumour, ProblemKind.LABEL_EMPTY, "no tumour"),
        "fraction": (
            lambda: (tiny_ct()[0], _float_label(tiny_ct()[1], 0.5)),
            ProblemKind.LABEL_NOT_INTEGER,
            "non-integer",
        ),
    }


@pytest.mark.parametrize("name", list(_bad_cases()))
def test_bad_input_is_named_with_its_file(tmp_path: Path, name: str) -> None:
    make, kind, message = _bad_cases()[name]
    files = _case(tmp_path, *make())
    report = check_case(files, CT, {})
    assert not report.ok
    assert [p.kind for p in report.problems] == [kind]
    assert report.image is None
    with pytest.raises(DataError, match=message) as info:
        load_case(files, CT, {})
    assert info.value.kind == kind.value
    assert info.value.path in (files.image, files.label)
    assert info.value.hint


def test_remap_and_require_tumour_settings_fix_the_matching_problems(tmp_path: Path) -> None:
    image, label = tiny_ct()
    five = _with_array(label, lambda a: np.where(a == 2, 5, a).astype(np.uint8))
    assert load_case(_case(tmp_path / "a", image, five), CT, {5: 2}).label_counts["bone"] == 72
    empty = _with_array(label, lambda a: np.where(a == 1, 0, a).astype(np.uint8))
    relaxed = load_config({"data.require-tumour": False}).data
    assert load_case(_case(tmp_path / "b", image, empty), relaxed, {}).ok


def test_not_3d_volumes(tmp_path: Path) -> None:
    image, label = tiny_ct()
    four_d = sitk.JoinSeries([image, image])
    report = check_case(_case(tmp_path / "a", four_d, label), CT, {})
    assert [p.kind for p in report.problems] == [ProblemKind.NOT_3D]
    assert "4D" in report.problems[0].message
    flat = image[:, :, 0:1]
    report = check_case(_case(tmp_path / "b", flat, label[:, :, 0:1]), CT, {})
    assert {p.kind for p in report.problems} == {ProblemKind.NOT_3D}
    assert "single slice" in report.problems[0].message
    rgb = sitk.Compose([image, image, image])
    report = check_case(_case(tmp_path / "c", rgb, label), CT, {})
    assert "values per voxel" in report.problems[0].message


def test_unreadable_and_missing_files_are_both_listed(tmp_path: Path) -> None:
    files = CaseFiles("x", tmp_path / "x_image.nii.gz", tmp_path / "x_label.nii.gz")
    files.image.write_bytes(b"garbage")
    report = check_case(files, CT, {})
    assert [(p.kind, p.path) for p in report.problems] == [
        (ProblemKind.UNREADABLE, files.image),
        (ProblemKind.UNREADABLE, files.label),
    ]


def test_mri_case_with_brats_labels(tmp_path: Path) -> None:
    image, label = tiny_ct()
    mri = sitk.Cast(_with_array(image, lambda a: (a + 1000).astype(np.int16)), sitk.sitkFloat32)
    brats = _with_array(label, lambda a: np.where(a == 2, 3, a).astype(np.uint8))
    report = load_case(_case(tmp_path, mri, brats), MRI, {})
    assert report.label_counts == {"necrotic_core": 8, "oedema": 0, "enhancing_tumour": 72}
    assert report.bone_source is None


def test_nan_in_nrrd_is_found_too(tmp_path: Path) -> None:
    image, label = tiny_ct()
    values = sitk.GetArrayFromImage(image).astype(np.float32)
    values[0, 0, :3] = [np.nan, np.inf, -np.inf]
    with_nan = sitk.GetImageFromArray(values)
    with_nan.CopyInformation(image)
    sitk.WriteImage(with_nan, str(tmp_path / "x_image.nrrd"))
    sitk.WriteImage(label, str(tmp_path / "x_label.nrrd"))
    files = CaseFiles("x", tmp_path / "x_image.nrrd", tmp_path / "x_label.nrrd")
    report = check_case(files, CT, {})
    assert [p.kind for p in report.problems] == [ProblemKind.NON_FINITE]
    assert "3 NaN or infinite" in report.problems[0].message


def test_dicom_series_image_in_a_pattern_site(tmp_path: Path) -> None:
    image, label = tiny_ct()
    write_dicom_series(image, tmp_path / "p1_ct", "1.2.826.0.1.3680043.2.1125.7")
    sitk.WriteImage(label, str(tmp_path / "p1_label.nii.gz"))
    data = load_config({"data.image-pattern": "{case}_ct"}).data
    report = check_site(tmp_path, data)
    assert report.ok, report.problems
    assert report.cases[0].label_counts == {"tumour": 8, "bone": 72}
