"""The evaluator on real anatomy: the shared chest CT (tumour, bone by threshold) and head CT
(bone mask) as a real evaluation set, the shared brain MRI as a one-case set.

The CT set is two real cases in the pattern layout, built in a temporary folder (links to the
shared files; the head CT's bone mask written as the schema's bone label 2). Nothing of the
shared folder is copied into the project.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import SimpleITK as sitk
import torch
from data_support import shared_case

from common.config import FedsynthConfig, load_config
from common.data.cache import read_cache
from common.data.site import prepare_site
from common.models.interface import SyntheticPairs
from common.release import new_manifest, write_release
from evaluator.evaluate import EVALUATION_FILE, REPORT_FILE, evaluate
from simulations.phantoms import write_cohort

GRID = {"data.target-shape": "32,32,32", "data.target-spacing": "6,6,6"}
CT = load_config({**GRID, "data.require-tumour": False})
MRI = load_config({**GRID, "data.modality": "mri", "phantoms.cases-per-site": 3})
QUICK = {
    "evaluation.utility-iterations": 4,
    "evaluation.utility-seeds": 1,
    "evaluation.radiomics-workers": 1,
}
IDENTIFYING = (
    "lung1",
    "head_ct",
    "head_image",
    "brain1",
    "invesalius",
    "pyradiomics",
    "/work",
    "/tmp",
)


def release_of(cases_folder: Path, config: FedsynthConfig, out: Path) -> Path:
    """A release holding the prepared cases of ``cases_folder`` (a site in any layout)."""
    prepare_site(cases_folder, out.parent / f"{out.name}-cache", config.data)
    _, cases = read_cache(out.parent / f"{out.name}-cache")
    images = torch.from_numpy(np.stack([c.image for c in cases]))[:, None]
    labels = torch.from_numpy(np.stack([c.label for c in cases])).long()
    manifest = new_manifest(
        config, family="gan", model_hash="ab" * 32, rounds=1, sites=[], cases=len(cases), seed=1
    )
    write_release(SyntheticPairs(images, labels), out, config, manifest)
    return out


@pytest.fixture(scope="module")
def real_ct(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The chest CT and the head CT as one real set: ``head`` and ``lung1``."""
    lung, head = shared_case("real", "pyradiomics-lung1"), shared_case("real", "invesalius-head-ct")
    folder = tmp_path_factory.mktemp("real-ct")
    (folder / "lung1_image.nrrd").symlink_to(lung / "lung1_image.nrrd")
    (folder / "lung1_label.nrrd").symlink_to(lung / "lung1_label.nrrd")
    (folder / "head_image.nii.gz").symlink_to(head / "head_ct.nii.gz")
    bone = sitk.ReadImage(str(head / "head_ct_bone.nii.gz"), sitk.sitkUInt8)
    sitk.WriteImage(bone * 2, str(folder / "head_label.nii.gz"))
    return folder


def leaks(outcome_dir: Path) -> list[str]:
    """Identifying strings found in the evaluation's outputs."""
    text = (outcome_dir / EVALUATION_FILE).read_text() + (outcome_dir / REPORT_FILE).read_text()
    return [word for word in IDENTIFYING if word in text]


def test_real_ct_against_its_own_copy_gives_equal_diversity_and_radiomics(
    real_ct: Path, tmp_path: Path
) -> None:
    release = release_of(real_ct, CT, tmp_path / "release")
    out = tmp_path / "eval"
    results = evaluate(release, real_ct, out, overrides=QUICK).results
    assert results["real"]["cases"] == 2
    diversity = results["realism"]["diversity"]
    real, synthetic = diversity["real"], diversity["synthetic"]
    # equal up to the release's storage in whole HU
    assert synthetic["mean_pairwise_msssim"] == pytest.approx(real["mean_pairwise_msssim"], 1e-3)
    assert real["mean_pairwise_msssim"] < 0.2  # a head and a chest share little structure
    bone = results["radiomics"]["structures"]["bone"]
    assert bone["computed"] is True
    assert bone["means_correlation"] == pytest.approx(1.0)
    assert bone["mean_wasserstein"] < 0.05  # real SD units; whole-HU storage moves a few bins
    tumour = results["radiomics"]["structures"]["tumour"]
    assert tumour["computed"] is False  # the head CT has no tumour: one real tumour remains
    assert "at least 2 are needed" in tumour["reason"]
    empty = [(f["case"], f["kind"]) for f in tumour["failures"]["real"]]
    assert empty == [("real-001", "label-empty")]  # reported, not dropped; by position only
    utility = results["utility"]
    assert (utility["real_training_cases"], utility["real_test_cases"]) == (1, 1)
    assert leaks(out) == []


def test_real_ct_against_phantoms_reports_every_part(real_ct: Path, tmp_path: Path) -> None:
    config = load_config({**GRID, "phantoms.sites": 1, "phantoms.cases-per-site": 3})
    cohort = write_cohort(config, tmp_path / "phantoms")
    release = release_of(cohort.sites[0], config, tmp_path / "release")
    out = tmp_path / "eval"
    overrides = {**QUICK, "data.require-tumour": False}  # the head CT has none
    results = evaluate(release, real_ct, out, overrides=overrides).results
    bone = results["radiomics"]["structures"]["bone"]
    assert bone["computed"] is True
    assert bone["classifier_auc"] >= 0.5  # phantom bone is told from real bone, never inverted
    assert results["utility"]["computed"] is True
    page = (out / REPORT_FILE).read_text()
    assert "Read it with care" in page
    assert json.loads((out / EVALUATION_FILE).read_text())["modality"] == "ct"
    assert leaks(out) == []


def test_one_real_mri_case_reports_what_needs_more_cases(tmp_path: Path) -> None:
    brain = shared_case("real", "pyradiomics-brain1")
    cohort = write_cohort(MRI, tmp_path / "phantoms")
    release = release_of(cohort.sites[0], MRI, tmp_path / "release")
    out = tmp_path / "eval"
    results = evaluate(release, brain, out, overrides=QUICK).results
    assert results["modality"] == "mri"
    assert results["realism"]["diversity"]["real"]["computed"] is False
    assert results["realism"]["diversity"]["synthetic"]["computed"] is True
    for entry in results["radiomics"]["structures"].values():
        assert entry["computed"] is False
        assert "the real table has" in entry["reason"]
    assert results["utility"] == {
        "computed": False,
        "reason": "1 real case(s): the utility study needs two or more",
    }
    assert leaks(out) == []
