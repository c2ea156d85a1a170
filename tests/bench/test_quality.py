"""bench.quality: targets, the mean and spread over seeds, and one whole run at smoke size."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from matplotlib import pyplot as plt

from bench import quality
from bench.quality import BenchSetting, Target, aggregate, figure


def test_a_target_is_met_within_its_bounds_and_unknown_when_not_measured() -> None:
    at_least = Target("dice_ratio.bone", low=0.8)
    assert at_least.met(0.8) is True
    assert at_least.met(0.79) is False
    within = Target("diversity_ratio", low=0.7, high=1.3)
    assert within.met(1.3) is True
    assert within.met(1.31) is False
    assert within.met(None) is None
    assert within.met(float("nan")) is None


def run(seed: int, bone_ratio: float, real_bone: float) -> dict[str, object]:
    return {
        "setting": "quality-ct",
        "family": "diffusion",
        "seed": seed,
        "real_dice": {"bone": real_bone},
        "synthetic_dice": {"bone": bone_ratio * real_bone},
        "dice_ratio": {"bone": bone_ratio},
        "train_seconds": 10.0,
        "steps": 100,
    }


def test_aggregate_gives_mean_and_spread_over_seeds_and_checks_the_mean() -> None:
    runs = [run(0, 0.7, 0.8), run(1, 0.9, 0.9)]
    table = aggregate(runs)["quality-ct/diffusion"]
    assert table["seeds"] == [0, 1]
    bone = table["figures"]["dice_ratio.bone"]
    assert bone["mean"] == pytest.approx(0.8)
    assert bone["std"] == pytest.approx(0.1)  # population spread of 0.7 and 0.9
    assert bone["per_seed"] == [0.7, 0.9]
    assert table["figures"]["real_dice.bone"]["mean"] == pytest.approx(0.85)
    assert table["targets"]["dice_ratio.bone"]["met"] is True  # mean 0.8 >= 0.8
    assert table["targets"]["dice_ratio.tumour"]["met"] is None  # not measured
    assert figure(runs[0], "dice_ratio.bone") == 0.7
    assert figure(runs[0], "dice_ratio.missing") is None


@pytest.mark.parametrize("name", quality.SETTINGS_ORDER)
def test_the_heldout_cohort_is_other_patients_of_the_training_sites(name: str) -> None:
    """The sites' seed, sites and phantom settings; each site's cases after its training
    cases, enough of them for HELDOUT_CASES; the other hospital is drawn from another seed."""
    sites = quality.run_settings(name, quality.BENCH_SETTINGS[name].families[0], 0)
    heldout = quality.heldout_settings(name, 0)
    assert heldout.data.modality == sites.data.modality
    assert heldout.seed == sites.seed
    assert heldout.phantoms.sites == sites.phantoms.sites
    assert heldout.phantoms.size == sites.phantoms.size  # e.g. the demo's 64^3 phantoms
    assert heldout.phantoms.anatomy_scale == sites.phantoms.anatomy_scale
    assert heldout.phantoms.first_case == sites.phantoms.cases_per_site
    per_site = -(-quality.HELDOUT_CASES // sites.phantoms.sites)
    assert heldout.phantoms.cases_per_site == per_site
    other = quality.other_site_settings(name, 0)
    assert other.seed == quality.OTHER_SITE_SEED_BASE != sites.seed
    assert (other.phantoms.sites, other.phantoms.cases_per_site) == (1, quality.HELDOUT_CASES)


def test_the_heldout_folder_pools_every_sites_new_patients(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Three sites of 2 training cases: their cases 2 and 3 (6 in all, 4 kept of HELDOUT_CASES
    = 4) in one nnU-Net folder, byte for byte as the sites' own cohort would hold them."""
    from common.config import load_config
    from simulations.phantoms import write_cohort

    drawn = {"phantoms.sites": 3, "phantoms.size": 16, "data.modality": "ct", "seed": 7}
    config = load_config({**drawn, "phantoms.first-case": 2, "phantoms.cases-per-site": 2})
    quality_cases = 4
    monkeypatch = pytest.MonkeyPatch()
    monkeypatch.setattr(quality, "HELDOUT_CASES", quality_cases)
    try:
        folder = quality.write_heldout(config, tmp_path / "heldout")
    finally:
        monkeypatch.undo()
    labels = sorted(p.name for p in (folder / "labelsTr").iterdir())
    assert (
        labels
        == [
            "phantom-ct-s1-002.nii.gz",
            "phantom-ct-s1-003.nii.gz",
            "phantom-ct-s2-002.nii.gz",
            "phantom-ct-s2-003.nii.gz",
        ]
        or len(labels) == quality_cases
    )
    assert json.loads((folder / "dataset.json").read_text())["numTraining"] == quality_cases
    whole = write_cohort(load_config({**drawn, "phantoms.cases-per-site": 4}), tmp_path / "whole")
    for name in labels:
        site = whole.sites[int(name[len("phantom-ct-s") :][:2]) - 1]
        assert (site / "labelsTr" / name).read_bytes() == (folder / "labelsTr" / name).read_bytes()
    assert not (tmp_path / "heldout" / "sites").exists()


@pytest.mark.slow
def test_one_run_simulates_samples_and_evaluates_on_a_held_out_cohort(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The whole path of one benchmark run at the smoke preset's size, with a per-round
    curve: every figure the targets need is there, for the held-out seed."""
    monkeypatch.setattr(quality, "WORK", tmp_path)
    monkeypatch.setitem(
        quality.BENCH_SETTINGS,
        "smoke",
        BenchSetting(
            "smoke",
            targets=(Target("dice_ratio.bone", low=0.5),),
            families=("diffusion",),
        ),
    )
    monkeypatch.setattr(quality, "HELDOUT_CASES", 4)
    small = {"evaluation.utility-iterations": 2, "evaluation.radiomics-workers": 1}
    monkeypatch.setattr(quality, "EVALUATION", {**quality.EVALUATION, **small})
    monkeypatch.setattr(quality, "CURVE_EVALUATION", {**quality.CURVE_EVALUATION, **small})
    monkeypatch.setattr(quality, "REAL_ARM_EVALUATION", {**quality.REAL_ARM_EVALUATION, **small})
    summary = quality.run_one("smoke", "diffusion", 0, curve=True)
    (cached,) = (tmp_path / "real-arms").iterdir()  # the real arm, trained once
    assert json.loads(cached.read_text()) == summary["real_dice"]
    assert 0 < summary["train_seconds"] < summary["run_seconds"]
    assert summary["heldout_first_case"] == 2  # the smoke sites hold 2 cases each
    assert set(summary["site_gap_auc"]) == {"tumour", "bone"}
    assert summary["training_seed"] == quality.TRAINING_SEED_BASE
    assert summary["rounds"] == 2
    assert [p["round"] for p in summary["curve"]] == [1, 2]
    assert summary["curve"][-1]["dice"] == summary["synthetic_dice"]
    assert set(summary["real_dice"]) == {"tumour", "bone"}
    for name, real in summary["real_dice"].items():  # no ratio where the real arm did not learn
        ratio = summary["dice_ratio"][name]
        assert ratio is None if real < 0.1 else ratio == summary["synthetic_dice"][name] / real
    assert summary["epsilon_max"] is not None
    assert summary["epsilon_max"] <= 8.0
    assert summary["calibration"] == {}  # the smoke preset does not calibrate
    assert set(summary["volumes"]) == {"tumour", "bone"}
    diversity = summary["diversity"]
    assert 0 < diversity["real"] <= 1
    assert summary["diversity_ratio"] == pytest.approx(diversity["synthetic"] / diversity["real"])
    table = aggregate([summary])
    assert "smoke/diffusion" not in table  # only the settings are summarised
    monkeypatch.setattr(quality, "GALLERY_DIR", tmp_path)
    gallery = quality.draw_gallery([summary], "smoke", "diffusion")
    assert gallery == tmp_path / "quality-gallery-smoke-diffusion.png"
    pixels = plt.imread(gallery)
    assert pixels.shape[0] > 100
    assert pixels[..., :3].std() > 0.05  # drawn slices, not a blank page
    drawn = gallery.read_bytes()
    assert quality.draw_gallery([summary], "quality-ct", "diffusion") is None  # no such run
    assert quality.draw_gallery([summary], "smoke", "gan") is None  # no run of that family
    # the first seed's release is gone: the gallery it drew stays, no other seed replaces it
    gone = {**summary, "seed": -1, "gallery": str(tmp_path / "deleted-release")}
    assert quality.draw_gallery([summary, gone], "smoke", "diffusion") is None
    assert gallery.read_bytes() == drawn
    assert not (tmp_path / "quality-gallery-smoke-gan.png").exists()


def test_earlier_runs_scored_on_another_protocol_are_not_kept(tmp_path: Path) -> None:
    now = {**run(0, 0.9, 0.8), "heldout_first_case": 40}
    before = run(1, 0.3, 0.8)  # scored on a cohort from another seed: no heldout_first_case
    results = tmp_path / "results.json"
    assert quality.earlier_runs(results) == []  # nothing measured yet
    results.write_text(json.dumps({"quality": {"runs": [before, now]}}), encoding="utf-8")
    assert quality.earlier_runs(results) == [now]
