"""The report's plain words: each verdict from hand-made numbers."""

from __future__ import annotations

from typing import Any

import pytest

from evaluator.report import column_title, msssim_settings_words, plain_summary

RELEASE = {
    "cases": 4,
    "family": "diffusion",
    "rounds": 3,
    "sites": [{"name": "site-1", "epsilon": 8.0}, {"name": "site-2", "epsilon": 6.5}],
}


def results(**parts: Any) -> dict[str, Any]:
    """A minimal evaluation.json with ``parts``."""
    return {"modality": "ct", "release": RELEASE, "real": {"cases": 5}, **parts}


def diversity(real: float, synthetic: float) -> dict[str, Any]:
    """A realism part with only the diversity figures."""
    return {
        "diversity": {
            "real": {"computed": True, "mean_pairwise_msssim": real},
            "synthetic": {"computed": True, "mean_pairwise_msssim": synthetic},
        },
        "paired_mae": {"computed": False, "reason": "no --run given"},
    }


def test_the_summary_names_cases_sites_and_the_largest_epsilon() -> None:
    lines = plain_summary(results())
    assert lines[0].startswith("4 synthetic CT cases made by a diffusion model trained over 3")
    assert "epsilon 8 " in lines[1]


def test_a_local_run_is_not_called_federated() -> None:
    local = {**RELEASE, "rounds": 1, "sites": [{"name": "site", "epsilon": 2.0, "delta": 1e-5}]}
    (first, *_) = plain_summary({**results(), "release": local})
    assert "diffusion model trained at one site, compared with 5 real cases" in first
    assert "federated" not in first
    (first, *_) = plain_summary(results())
    assert "trained over 3 federated rounds at 2 sites" in first


def test_a_ratio_is_undefined_when_real_training_did_not_learn() -> None:
    row = {
        "structure": "tumour",
        "synthetic_dice": 0.002,
        "real_dice": 0.007,
        "synthetic_over_real_dice": None,
        "study_synthetic_dice": None,
    }
    text = " ".join(plain_summary(results(utility={"computed": True, "study_table": [row]})))
    assert "with Dice 0.002; real-data training reached only Dice 0.007, so it did not" in text
    assert "the synthetic/real ratio is undefined" in text
    assert "% of real-data training" not in text


@pytest.mark.parametrize(
    ("real", "synthetic", "verdict"),
    [
        (0.82, 0.95, "repeats itself"),  # above the real figure by more than 0.05
        (0.82, 0.046, "lack common structure, as noise would"),  # the demo's noise-like release
        (0.82, 0.80, "about as varied as the real cases"),
        (0.82, 0.41, "about as varied as the real cases"),  # exactly half: not yet noise-like
    ],
)
def test_diversity_verdicts(real: float, synthetic: float, verdict: str) -> None:
    (line,) = [line for line in plain_summary(results(realism=diversity(real, synthetic)))[2:]]
    assert verdict in line
    assert f"MS-SSIM {synthetic:.3f} against {real:.3f}" in line


def test_paired_mae_radiomics_and_utility_are_put_in_words() -> None:
    realism = diversity(0.8, 0.8)
    realism["paired_mae"] = {"computed": True, "mean": 1006.4}
    realism["mae_units"] = "HU"
    radiomics = {
        "study_means_correlation": 0.5461,
        "structures": {
            "tumour": {"computed": True, "classifier_auc": 1.0, "means_correlation": 0.88},
            "bone": {"computed": False, "reason": "too few cases"},
        },
    }
    row = {"structure": "tumour", "synthetic_dice": 0.3, "synthetic_over_real_dice": 0.5}
    utility = {
        "computed": True,
        "study_table": [
            {**row, "study_synthetic_dice": 0.064},
            {"structure": "bone", "synthetic_dice": None, "synthetic_over_real_dice": None},
        ],
    }
    text = " ".join(plain_summary(results(realism=realism, radiomics=radiomics, utility=utility)))
    assert "differ from the real images by 1.01e+03 HU on average inside the body" in text
    assert "AUC tumour 1.00 (0.5: it cannot tell them apart" in text
    assert (
        "the study's figure (0.5461 for its tumours), is tumour 0.88 here. Read it with care"
        in (text)
    )
    assert "bone" not in text.split("Read it with care")[0].split("AUC")[1]  # not computed
    assert "finds tumour in held-out real cases with Dice 0.300, 50% of real-data training" in text
    assert "(the study: 0.064)" in text
    assert "finds bone" not in text  # its synthetic arm was not computed


def test_parts_not_computed_add_no_words() -> None:
    lines = plain_summary(
        results(
            realism={"computed": False, "reason": "x"},
            radiomics={"computed": False, "reason": "x"},
            utility={"computed": False, "reason": "x"},
        )
    )
    assert len(lines) == 2  # the release and its privacy only


def test_msssim_settings_are_a_sentence() -> None:
    settings = {
        "kernel": "gaussian",
        "kernel_size": 7,
        "kernel_sigma": 0.9545,
        "scales": 3,
        "weights": [0.0711, 0.453, 0.476],
        "window": [-1024.0, 2048.0],
        "data_range": 3072.0,
        "k1": 0.01,
        "k2": 0.03,
    }
    assert msssim_settings_words(settings) == (
        "MS-SSIM settings for this volume size: 3 scales weighted 0.071, 0.453, 0.476; gaussian "
        "kernel of 7 voxels (sigma 0.95); intensities clipped to -1024..2048 (data range 3072); "
        "K1 0.01, K2 0.03."
    )


@pytest.mark.parametrize(
    ("key", "title"),
    [
        ("study_synthetic_dice", "study synthetic Dice"),
        ("real+synthetic_dice_std", "real+synthetic Dice SD"),
        ("synthetic_hd95_mm", "synthetic HD95 (mm)"),
        ("synthetic_over_real_dice", "synthetic over real Dice"),
    ],
)
def test_study_table_columns_read_as_words(key: str, title: str) -> None:
    assert column_title(key) == title
