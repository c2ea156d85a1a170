"""A phantom cohort on disk: nnU-Net raw or BraTS layout, byte-identical per seed, atomic."""

from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path

import pytest
import SimpleITK as sitk

from common.config import DataConfig, FedsynthConfig, PhantomConfig
from common.errors import ConfigError, OutputExistsError
from simulations.phantoms import PhantomCase, SiteProfile, cohort, write_cohort


def _config(modality: str = "ct", layout: str = "nnunet", seed: int = 42) -> FedsynthConfig:
    return FedsynthConfig(
        seed=seed,
        data=DataConfig(modality=modality),
        phantoms=PhantomConfig(size=16, sites=2, cases_per_site=2, layout=layout),
    )


def _files(root: Path) -> dict[str, bytes]:
    return {
        str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()
    }


def test_nnunet_layout_holds_every_case_and_a_dataset_json(tmp_path: Path) -> None:
    seen: list[str] = []
    summary = write_cohort(_config("ct"), tmp_path / "out", on_case=seen.append)
    ids = [f"phantom-ct-s0{s}-00{c}" for s in (1, 2) for c in (0, 1)]
    assert seen == ids
    expected = {f"site-0{s}/dataset.json" for s in (1, 2)}
    for case_id in ids:
        site = f"site-{case_id[-6:-4]}"
        expected |= {f"{site}/imagesTr/{case_id}_0000.nii.gz", f"{site}/labelsTr/{case_id}.nii.gz"}
    assert set(_files(summary.out)) == expected
    assert summary.out == (tmp_path / "out").resolve()
    assert (summary.modality, summary.layout) == ("ct", "nnunet")
    assert summary.sites == (summary.out / "site-01", summary.out / "site-02")
    assert summary.cases == (2, 2)
    assert summary.total_cases == 4
    meta = json.loads((summary.out / "site-01" / "dataset.json").read_text())
    assert meta["channel_names"] == {"0": "CT"}
    assert meta["labels"] == {"background": 0, "tumour": 1, "bone": 2}
    assert meta["numTraining"] == 2
    assert meta["file_ending"] == ".nii.gz"
    assert {"name", "description"} <= set(meta)
    image = sitk.ReadImage(str(summary.out / "site-01" / "imagesTr" / f"{ids[0]}_0000.nii.gz"))
    assert image.GetPixelID() == sitk.sitkInt16


def test_mri_dataset_json_names_the_brats_labels(tmp_path: Path) -> None:
    summary = write_cohort(_config("mri"), tmp_path / "out")
    meta = json.loads((summary.sites[1] / "dataset.json").read_text())
    assert meta["channel_names"] == {"0": "T1c"}
    assert meta["labels"] == {
        "background": 0,
        "necrotic_core": 1,
        "oedema": 2,
        "enhancing_tumour": 3,
    }


def test_brats_layout_puts_each_case_in_its_folder(tmp_path: Path) -> None:
    summary = write_cohort(_config("mri", "brats"), tmp_path / "out")
    expected = set()
    for s in (1, 2):
        for c in (0, 1):
            case_id = f"phantom-mri-s0{s}-00{c}"
            folder = f"site-0{s}/{case_id}"
            expected |= {f"{folder}/{case_id}-t1c.nii.gz", f"{folder}/{case_id}-seg.nii.gz"}
    assert set(_files(summary.out)) == expected
    label = sitk.ReadImage(
        str(summary.sites[0] / "phantom-mri-s01-000/phantom-mri-s01-000-seg.nii.gz")
    )
    assert label.GetPixelID() == sitk.sitkUInt8


def test_ct_in_the_brats_layout_is_a_config_error(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="nnunet"):
        write_cohort(_config("ct", "brats"), tmp_path / "out")
    assert not (tmp_path / "out").exists()


def test_same_seed_writes_the_same_bytes_another_seed_other_images(tmp_path: Path) -> None:
    first = _files(write_cohort(_config("mri"), tmp_path / "a").out)
    assert first == _files(write_cohort(_config("mri"), tmp_path / "b").out)
    other = _files(write_cohort(_config("mri", seed=7), tmp_path / "c").out)
    images = [name for name in first if "imagesTr" in name]
    assert all(first[name] != other[name] for name in images)


def test_a_non_empty_folder_is_kept_unless_overwrite(tmp_path: Path) -> None:
    out = tmp_path / "out"
    out.mkdir()
    (out / "keep.txt").write_text("precious")
    with pytest.raises(OutputExistsError):
        write_cohort(_config(), out)
    assert _files(out) == {"keep.txt": b"precious"}
    write_cohort(_config(), out, overwrite=True)
    assert "keep.txt" not in _files(out)
    assert (out / "site-02" / "dataset.json").exists()


@pytest.mark.parametrize("existing", [False, True])
def test_a_failure_mid_write_leaves_no_partial_output(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, existing: bool
) -> None:
    out = tmp_path / "out"
    if existing:
        out.mkdir()
        (out / "keep.txt").write_text("precious")
    calls: list[int] = []
    real_make_case = cohort.make_case

    def failing(
        modality: str, profile: SiteProfile, index: int, config: FedsynthConfig
    ) -> PhantomCase:
        calls.append(index)
        if len(calls) == 3:
            raise RuntimeError("disk full")
        return real_make_case(modality, profile, index, config)

    monkeypatch.setattr(cohort, "make_case", failing)
    with pytest.raises(RuntimeError, match="disk full"):
        write_cohort(_config(), out, overwrite=True)
    assert len(calls) == 3
    assert [p.name for p in tmp_path.iterdir()] == (["out"] if existing else [])
    if existing:
        assert _files(out) == {"keep.txt": b"precious"}


def test_first_case_draws_other_patients_of_the_same_hospitals(tmp_path: Path) -> None:
    """Cases 2 and 3 of each site, drawn alone with first-case 2, are byte for byte cases 2
    and 3 of a 4-case cohort of the same seed, and none is one of cases 0 and 1."""
    base = _config("ct")
    whole = FedsynthConfig(
        seed=base.seed, data=base.data, phantoms=replace(base.phantoms, cases_per_site=4)
    )
    later = FedsynthConfig(
        seed=base.seed, data=base.data, phantoms=replace(base.phantoms, first_case=2)
    )
    seen: list[str] = []
    held_out = write_cohort(later, tmp_path / "later", on_case=seen.append)
    assert seen == [f"phantom-ct-s0{s}-00{c}" for s in (1, 2) for c in (2, 3)]
    everyone = _files(write_cohort(whole, tmp_path / "whole").out)
    drawn = _files(held_out.out)
    images = {name: data for name, data in drawn.items() if "imagesTr" in name}
    assert len(images) == 4
    for name, data in images.items():
        assert everyone[name] == data
    first_patients = {data for name, data in everyone.items() if "-000_" in name or "-001_" in name}
    assert not first_patients & set(images.values())
    meta = json.loads((held_out.out / "site-01" / "dataset.json").read_text())
    assert meta["numTraining"] == 2
