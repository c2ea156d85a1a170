"""A whole site: checked as a whole, prepared atomically, fingerprinted."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import SimpleITK as sitk
from data_support import tiny_ct, write_pattern_case

from common.config import Scalar, load_config
from common.data.problems import ProblemKind, SiteDataError
from common.data.site import check_site, prepare_site
from common.errors import DataError

PINNED_TINY_CT_CASE = "585e0c8a5b4932f69aa37246494ebe7d2e7f37369b491110a7e103403f8f1e2d"
"""``case_fingerprint`` of ``tiny_ct()``'s image, computed by hand (SHA-256 of the tag, the shape
and each slice as little-endian float64, length-prefixed); ledgers are keyed by such digests."""


def _settings(spacing: str, **extra: Scalar) -> dict[str, Scalar]:
    return {"data.target-shape": "12,12,12", "data.target-spacing": spacing, **extra}


def test_source_fingerprint_survives_new_settings(ct_site: Path, tmp_path: Path) -> None:
    fine = prepare_site(ct_site, tmp_path / "fine", load_config(_settings("1.5")).data)
    coarse = prepare_site(ct_site, tmp_path / "coarse", load_config(_settings("3.0")).data)
    assert fine.index.fingerprint != coarse.index.fingerprint
    assert fine.index.source_fingerprint == coarse.index.source_fingerprint
    assert len(fine.index.source_fingerprint) == 64
    stored = json.loads((tmp_path / "fine" / "index.json").read_text())
    assert stored["source_fingerprint"] == fine.index.source_fingerprint
    write_pattern_case(ct_site, "c", *tiny_ct())
    more = prepare_site(ct_site, tmp_path / "more", load_config(_settings("3.0")).data)
    assert more.index.source_fingerprint != coarse.index.source_fingerprint


def test_case_fingerprints_follow_the_image_not_its_name_format_label_or_settings(
    tmp_path: Path,
) -> None:
    site = tmp_path / "site"
    image, label = tiny_ct()
    write_pattern_case(site, "p1", image, label)
    tumour = sitk.GetArrayFromImage(label) == 1
    relabelled = sitk.GetImageFromArray(tumour.astype(np.uint8))  # bone from the HU threshold
    relabelled.CopyInformation(label)
    write_pattern_case(site, "renamed", sitk.Cast(image, sitk.sitkFloat32), relabelled)
    voxels = sitk.GetArrayFromImage(image)
    voxels[0, 0, 0] += 1  # another patient, one voxel apart
    other = sitk.GetImageFromArray(voxels)
    other.CopyInformation(image)
    write_pattern_case(site, "p3", other, label)
    fine = prepare_site(site, tmp_path / "fine", load_config(_settings("1.5")).data).index
    coarse = prepare_site(site, tmp_path / "coarse", load_config(_settings("3.0")).data).index
    assert coarse.case_fingerprints == fine.case_fingerprints
    by_case = dict(zip(fine.case_ids, fine.case_fingerprints, strict=True))
    assert by_case["p1"] == by_case["renamed"] != by_case["p3"]
    assert by_case["p1"] == PINNED_TINY_CT_CASE  # the hashing cannot change unnoticed
    stored = json.loads((tmp_path / "fine" / "index.json").read_text())
    assert stored["case_fingerprints"] == by_case


def test_site_report_counts(ct_site: Path) -> None:
    image, _ = tiny_ct()
    sitk.WriteImage(image, str(ct_site / "orphan_image.nii.gz"))
    report = check_site(ct_site, load_config({}).data)
    assert not report.ok
    assert len(report.good_cases) == 2
    assert report.bad_case_count == 1
    assert all(case.image is None for case in report.cases)  # not kept in memory


def test_bad_site_lists_every_problem_and_writes_nothing(ct_site: Path, tmp_path: Path) -> None:
    image, label = tiny_ct()
    sitk.WriteImage(image, str(ct_site / "orphan_image.nii.gz"))
    (ct_site / "broken_image.nii.gz").write_bytes(b"broken")
    sitk.WriteImage(label, str(ct_site / "broken_label.nii.gz"))
    out = tmp_path / "cache"
    with pytest.raises(SiteDataError, match="2 problems found") as info:
        prepare_site(ct_site, out, load_config(_settings("1.5")).data)
    assert {p.kind for p in info.value.problems} == {
        ProblemKind.MISSING_PARTNER,
        ProblemKind.UNREADABLE,
    }
    assert not out.exists()
    skipping = load_config(_settings("1.5", **{"data.skip-bad-cases": True})).data
    summary = prepare_site(ct_site, out, skipping)
    assert (summary.prepared, summary.skipped) == (2, 2)


def test_site_with_only_bad_cases_is_refused_even_when_skipping(tmp_path: Path) -> None:
    (tmp_path / "x_image.nii.gz").write_bytes(b"broken")
    skipping = load_config({"data.skip-bad-cases": True}).data
    with pytest.raises(SiteDataError, match="no usable case"):
        prepare_site(tmp_path, tmp_path / "cache", skipping)


def test_mri_without_contrast_names_its_file(tmp_path: Path) -> None:
    _, label = tiny_ct()
    flat = sitk.GetImageFromArray(np.full((12, 12, 12), 500.0, dtype=np.float32))
    flat.CopyInformation(label)
    tumour = sitk.BinaryThreshold(label, 1, 1, 1, 0)
    write_pattern_case(tmp_path / "site", "flat", flat, tumour)
    data = load_config({"data.modality": "mri", **_settings("1.5")}).data
    with pytest.raises(DataError) as info:
        prepare_site(tmp_path / "site", tmp_path / "cache", data)
    assert info.value.kind == "no-contrast"
    assert info.value.path == tmp_path / "site" / "flat_image.nii.gz"
    assert not (tmp_path / "cache").exists()
