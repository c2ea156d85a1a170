"""Finding cases on disk: nnU-Net raw, BraTS 2023 and file-name patterns; unpaired files named."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import SimpleITK as sitk
from data_support import tiny_ct

from common.config import load_config
from common.data.layouts import detect_layout, list_cases, pattern_regex
from common.data.problems import ProblemKind

CT = load_config({})
MRI = load_config({"data.modality": "mri"})


def _nnunet_site(root: Path, labels: dict[str, int], cases: tuple[str, ...] = ("c1", "c2")) -> Path:
    (root / "imagesTr").mkdir(parents=True)
    (root / "labelsTr").mkdir()
    meta = {"channel_names": {"0": "CT"}, "labels": labels, "file_ending": ".nii.gz"}
    (root / "dataset.json").write_text(json.dumps(meta))
    image, label = tiny_ct()
    for case_id in cases:
        sitk.WriteImage(image, str(root / "imagesTr" / f"{case_id}_0000.nii.gz"))
        sitk.WriteImage(label, str(root / "labelsTr" / f"{case_id}.nii.gz"))
    return root


def test_nnunet_cases_and_label_names_mapped_to_schema(tmp_path: Path) -> None:
    site = _nnunet_site(tmp_path / "s", {"background": 0, "GTVp": 2, "Bones": 1, "whole": [1, 2]})
    listing = list_cases(site, CT.data)
    assert listing.layout == "nnunet"
    assert [c.case_id for c in listing.cases] == ["c1", "c2"]
    assert listing.cases[0].image.name == "c1_0000.nii.gz"
    assert listing.label_remap == {2: 1, 1: 2}
    assert listing.problems == ()


def test_user_remap_overrides_dataset_names(tmp_path: Path) -> None:
    site = _nnunet_site(tmp_path / "s", {"background": 0, "tumour": 1, "bone": 2})
    data = load_config({"data.label-remap": "2:0"}).data
    assert list_cases(site, data).label_remap == {1: 1, 2: 0}


def test_nnunet_unpaired_files_and_bad_dataset_json(tmp_path: Path) -> None:
    site = _nnunet_site(tmp_path / "s", {"background": 0, "tumour": 1})
    (site / "labelsTr" / "c1.nii.gz").unlink()
    (site / "imagesTr" / "c2_0000.nii.gz").unlink()
    (site / "dataset.json").write_text("{not json")
    listing = list_cases(site, CT.data)
    kinds = sorted(p.kind.value for p in listing.problems)
    assert kinds == ["bad-layout", "missing-partner", "missing-partner"]
    messages = " ".join(str(p) for p in listing.problems)
    assert "c1.nii.gz" in messages
    assert "c2_0000.nii.gz" in messages
    assert "dataset.json" in messages


def test_brats_site_and_single_case_folder(tmp_path: Path) -> None:
    image, label = tiny_ct()
    for case_id in ("BraTS-GLI-00001-000", "BraTS-GLI-00002-000"):
        folder = tmp_path / "site" / case_id
        folder.mkdir(parents=True)
        sitk.WriteImage(image, str(folder / f"{case_id}-t1c.nii.gz"))
        sitk.WriteImage(image, str(folder / f"{case_id}-t2w.nii.gz"))
        sitk.WriteImage(label, str(folder / f"{case_id}-seg.nii.gz"))
    (tmp_path / "site" / "BraTS-GLI-00002-000" / "BraTS-GLI-00002-000-seg.nii.gz").unlink()
    assert detect_layout(tmp_path / "site") == "brats"
    listing = list_cases(tmp_path / "site", MRI.data)
    assert [c.case_id for c in listing.cases] == ["BraTS-GLI-00001-000"]
    assert listing.cases[0].image.name == "BraTS-GLI-00001-000-t1c.nii.gz"
    assert [p.kind for p in listing.problems] == [ProblemKind.MISSING_PARTNER]
    single = list_cases(tmp_path / "site" / "BraTS-GLI-00001-000", MRI.data)
    assert [c.case_id for c in single.cases] == ["BraTS-GLI-00001-000"]


def test_pattern_layout_excludes_label_files_from_images(tmp_path: Path) -> None:
    image, label = tiny_ct()
    sitk.WriteImage(image, str(tmp_path / "head_ct.nii.gz"))
    sitk.WriteImage(label, str(tmp_path / "head_ct_bone.nii.gz"))
    sitk.WriteImage(image, str(tmp_path / "lonely.nii.gz"))
    (tmp_path / "notes.txt").write_text("not an image")
    data = load_config(
        {"data.image-pattern": "{case}.nii.gz", "data.label-pattern": "{case}_bone.nii.gz"}
    ).data
    listing = list_cases(tmp_path, data)
    assert [c.case_id for c in listing.cases] == ["head_ct"]
    assert [(p.case_id, p.kind) for p in listing.problems] == [
        ("lonely", ProblemKind.MISSING_PARTNER)
    ]


def test_default_pattern_and_auto_detection(ct_site: Path) -> None:
    assert detect_layout(ct_site) == "pattern"
    listing = list_cases(ct_site, CT.data)
    assert [c.case_id for c in listing.cases] == ["a", "b"]


def test_folder_without_cases_or_missing(tmp_path: Path) -> None:
    empty = list_cases(tmp_path, CT.data)
    assert [p.kind for p in empty.problems] == [ProblemKind.NO_CASES]
    assert "{case}_image.*" in empty.problems[0].hint
    missing = list_cases(tmp_path / "nope", CT.data)
    assert [p.kind for p in missing.problems] == [ProblemKind.BAD_LAYOUT]
    forced = list_cases(tmp_path, load_config({"data.layout": "nnunet"}).data)
    assert forced.problems[0].kind == ProblemKind.BAD_LAYOUT  # no dataset.json


def test_pattern_regex() -> None:
    regex = pattern_regex("{case}_image.*")
    match = regex.match("lung1_image.nrrd")
    assert match is not None
    assert match["case"] == "lung1"
    assert regex.match("lung1_label.nrrd") is None


@pytest.mark.parametrize("layout", ["nnunet", "brats", "pattern"])
def test_explicit_layout_is_reported(tmp_path: Path, layout: str) -> None:
    data = load_config({"data.layout": layout}).data
    assert list_cases(tmp_path, data).layout == layout
