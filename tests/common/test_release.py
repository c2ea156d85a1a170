"""A release holds synthetic pairs, dataset.json and manifest.json only, on a canonical grid."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import SimpleITK as sitk
import torch

from common.config import load_config
from common.data.site import check_site
from common.errors import OutputExistsError
from common.models.interface import SyntheticPairs
from common.release import Manifest, SiteRecord, new_manifest, read_manifest, write_release

CONFIG = load_config(
    {
        "data.target-shape": "10,9,8",
        "data.target-spacing": "2.0,2.0,3.0",
        "data.ct-window-min": -1000.0,
        "data.ct-window-max": 1000.0,
    }
)


def _pairs(n: int = 2) -> SyntheticPairs:
    image = torch.zeros(n, 1, 8, 9, 10)  # (z, y, x) for target shape (x, y, z) = (10, 9, 8)
    image[:, :, 0] = -1.0  # air
    image[:, :, 1] = 0.04  # 40 HU
    image[:, :, 2] = 1.0
    label = torch.zeros(n, 8, 9, 10, dtype=torch.long)
    label[:, 1, 2, 3] = 1
    label[:, 2] = 2
    return SyntheticPairs(image, label)


def _manifest(n: int = 2) -> Manifest:
    sites = [SiteRecord("hospital-a", 3.5, 1e-5), SiteRecord("hospital-b", None, None)]
    return new_manifest(
        CONFIG, family="gan", model_hash="ab" * 32, rounds=3, sites=sites, cases=n, seed=7
    )


def test_release_files_geometry_and_units(tmp_path: Path) -> None:
    out = tmp_path / "release"
    ids = write_release(_pairs(), out, CONFIG, _manifest())
    assert ids == ["synth_0000", "synth_0001"]
    files = sorted(str(p.relative_to(out)) for p in out.rglob("*") if p.is_file())
    assert files == [
        "dataset.json",
        "imagesTr/synth_0000_0000.nii.gz",
        "imagesTr/synth_0001_0000.nii.gz",
        "labelsTr/synth_0000.nii.gz",
        "labelsTr/synth_0001.nii.gz",
        "manifest.json",
    ]
    image = sitk.ReadImage(str(out / "imagesTr" / "synth_0000_0000.nii.gz"))
    assert image.GetPixelID() == sitk.sitkInt16
    assert image.GetSize() == (10, 9, 8)
    assert image.GetSpacing() == pytest.approx((2.0, 2.0, 3.0))
    assert image.GetOrigin() == pytest.approx((-9.0, -8.0, -10.5))  # centre of the grid at 0
    assert image.GetDirection() == pytest.approx((1, 0, 0, 0, 1, 0, 0, 0, 1))
    hu = sitk.GetArrayFromImage(image)
    assert (hu[0].min(), hu[1].min(), hu[2].min()) == (-1000, 40, 1000)
    label = sitk.GetArrayFromImage(sitk.ReadImage(str(out / "labelsTr" / "synth_0000.nii.gz")))
    assert label.dtype == np.uint8
    assert (int((label == 1).sum()), int((label == 2).sum())) == (1, 90)
    dataset = json.loads((out / "dataset.json").read_text(encoding="utf-8"))
    assert dataset["labels"] == {"background": 0, "tumour": 1, "bone": 2}
    assert dataset["numTraining"] == 2


def test_manifest_records_provenance_and_privacy(tmp_path: Path) -> None:
    write_release(_pairs(), tmp_path / "r", CONFIG, _manifest())
    manifest = read_manifest(tmp_path / "r")
    assert manifest["family"] == "gan"
    assert manifest["model_hash"] == "ab" * 32
    assert manifest["seed"] == 7
    assert manifest["rounds"] == 3
    assert manifest["sites"][0] == {"name": "hospital-a", "epsilon": 3.5, "delta": 1e-5}
    assert manifest["run_config"]["data.target-shape"] == "10,9,8"
    assert manifest["sampler"] == "generator"


def test_release_reads_back_through_the_data_layer(tmp_path: Path) -> None:
    write_release(_pairs(), tmp_path / "r", CONFIG, _manifest())
    report = check_site(tmp_path / "r", CONFIG.data)
    assert report.ok, report.problems
    assert [case.label_counts["tumour"] for case in report.cases] == [1, 1]


def test_two_dimensional_release_is_one_slice_volumes(tmp_path: Path) -> None:
    pairs = _pairs()
    flat = SyntheticPairs(pairs.image[:, :, 1], pairs.label[:, 1])
    write_release(flat, tmp_path / "r", CONFIG, _manifest())
    image = sitk.ReadImage(str(tmp_path / "r" / "imagesTr" / "synth_0001_0000.nii.gz"))
    assert image.GetSize() == (10, 9, 1)


def test_release_is_atomic_and_never_overwrites_silently(tmp_path: Path) -> None:
    out = tmp_path / "r"
    write_release(_pairs(), out, CONFIG, _manifest())
    with pytest.raises(OutputExistsError):
        write_release(_pairs(1), out, CONFIG, _manifest(1))
    assert len(list((out / "imagesTr").iterdir())) == 2
    bad = SyntheticPairs(torch.zeros(1, 1, 3, 3, 3), torch.zeros(1, 3, 3, 3, dtype=torch.long))
    with pytest.raises(ValueError, match="not the geometry's"):
        write_release(bad, tmp_path / "bad", CONFIG, _manifest(1))
    assert not (tmp_path / "bad").exists()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["r"]
