"""Real-against-synthetic radiomics figures, checked against values computed by hand."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest

from evaluator.radiomics_stats import (
    FeatureMismatchError,
    FeatureTable,
    RadiomicsStatsError,
    _folds,
    classifier_auc,
    compare_tables,
    frechet_radiomics_distance,
    means_correlation,
    wasserstein_per_feature,
)

SHIFT_DISTANCE = math.sqrt(0.6)  # a shift of 1 over sd sqrt(5/3), and of 10 over sqrt(500/3)
IDENTICAL_FRD = 1e-9  # rounding: sums over 100 unit-variance features at float64 precision
NULL_DRAWS = 20  # independent same-distribution pairs averaged in the AUC null test
# Over 200 simulated same-distribution pairs of 30 cases x 3 features, one CV AUC has an SD of
# about 0.1 and a mean within 0.01 of 0.5; the mean of 20 draws has an SD of 0.1 / sqrt(20) =
# 0.022, so 3 SDs:
NULL_AUC_TOLERANCE = 0.07


def _table(columns: dict[str, list[float]]) -> list[dict[str, float]]:
    names = list(columns)
    rows = len(columns[names[0]])
    return [{name: float(columns[name][i]) for name in names} for i in range(rows)]


def _random_table(seed: int, cases: int, features: int, shift: float = 0.0) -> FeatureTable:
    values = np.random.default_rng(seed).normal(size=(cases, features)) + shift
    return [{f"f{j}": float(v) for j, v in enumerate(row)} for row in values]


def _columns(table: FeatureTable) -> dict[str, list[float]]:
    return {name: [row[name] for row in table] for name in table[0]}


REAL = _table({"a": [1, 2, 3, 4], "b": [10, 30, 20, 40]})
SHIFTED = _table({"a": [2, 3, 4, 5], "b": [20, 40, 30, 50]})  # a + 1, b + 10


def test_identical_tables() -> None:
    real = _random_table(0, 20, 100)  # fewer cases than features: singular covariances
    comparison = compare_tables(real, real)
    assert set(comparison.wasserstein.values()) == {0.0}
    assert comparison.means_correlation == pytest.approx(1.0, abs=1e-12)
    assert 0.0 <= comparison.frechet_distance < IDENTICAL_FRD
    # copies share their original's fold, so every training set holds whole (case, copy) pairs
    # with opposite labels: the penalised fit is exactly zero, scores tie, the AUC is 0.5
    assert comparison.classifier_auc == pytest.approx(0.5, abs=1e-12)


def test_a_shift_gives_the_hand_computed_distances() -> None:
    distances = wasserstein_per_feature(REAL, SHIFTED)
    assert distances == pytest.approx({"a": SHIFT_DISTANCE, "b": SHIFT_DISTANCE}, rel=1e-12)
    # equal covariances: only the mean term is left, 0.6 + 0.6
    assert frechet_radiomics_distance(REAL, SHIFTED) == pytest.approx(1.2, rel=1e-9)


def test_a_wider_spread_gives_the_hand_computed_distances() -> None:
    real = _table({"a": [1, 2, 3, 4]})
    wider = _table({"a": [-0.5, 1.5, 3.5, 5.5]})  # twice the spread about the same mean
    # sorted pairs differ by 1.5, 0.5, 0.5, 1.5: mean 1, over sd sqrt(5/3)
    assert wasserstein_per_feature(real, wider)["a"] == pytest.approx(SHIFT_DISTANCE)
    # 1-D Gaussians: (mu1 - mu2)^2 + (sd1 - sd2)^2 = 0 + (1 - 2)^2; the ridge moves it by 5e-7
    assert frechet_radiomics_distance(real, wider) == pytest.approx(1.0, abs=1e-6)
    assert frechet_radiomics_distance(real, wider, ridge=0.0) == pytest.approx(1.0, rel=1e-12)


def test_means_correlation_on_a_signed_log_and_a_raw_scale() -> None:
    real = _table({"a": [8, 10], "b": [98, 100], "c": [998, 1000]})  # means 9, 99, 999
    synthetic = _table({"a": [9, 9], "b": [999, 999], "c": [99, 99]})  # means 9, 999, 99
    # log10(1 + mean): (1, 2, 3) against (1, 3, 2): deviations (-1, 0, 1), (-1, 1, 0): r = 1/2
    assert means_correlation(real, synthetic) == pytest.approx(0.5, rel=1e-12)
    # raw: deviations from 369 are (-360, -270, 630) and (-360, 630, -270): r = -210600/599400
    assert means_correlation(real, synthetic, scale="raw") == pytest.approx(-13 / 37, rel=1e-12)


def test_means_correlation_keeps_the_sign_of_negative_means() -> None:
    real = _table({"a": [-8, -10], "b": [-1, 1], "c": [8, 10]})  # means -9, 0, 9
    synthetic = _table({"a": [-99, -99], "b": [0, 0], "c": [99, 99]})  # means -99, 0, 99
    assert means_correlation(real, synthetic) == pytest.approx(1.0, rel=1e-12)


def test_perfectly_separable_sets_have_auc_one() -> None:
    real = _random_table(1, 10, 3)
    synthetic = _random_table(2, 10, 3, shift=10.0)
    assert classifier_auc(real, synthetic) == 1.0
    assert classifier_auc(synthetic, real) == 1.0
    assert classifier_auc(real, synthetic, folds=2) == 1.0


def test_same_distribution_auc_is_half_on_average() -> None:
    aucs = [
        classifier_auc(_random_table(i, 30, 3), _random_table(100 + i, 30, 3), seed=i)
        for i in range(NULL_DRAWS)
    ]
    assert abs(float(np.mean(aucs)) - 0.5) < NULL_AUC_TOLERANCE
    assert len(set(aucs)) > 1  # the draws differ: the average is not of one repeated number


def test_the_classifier_is_seeded() -> None:
    real, synthetic = _random_table(3, 12, 4), _random_table(4, 12, 4, shift=0.5)
    assert classifier_auc(real, synthetic, seed=7) == classifier_auc(real, synthetic, seed=7)


@pytest.mark.parametrize(
    ("n_real", "n_synthetic", "copies", "asked", "k"),
    [(12, 12, 0, 5, 5), (3, 9, 2, 5, 3), (7, 2, 1, 5, 2), (30, 30, 30, 10, 10), (30, 40, 7, 2, 2)],
)
def test_folds_are_balanced_and_keep_copies_with_their_originals(
    n_real: int, n_synthetic: int, copies: int, asked: int, k: int
) -> None:
    rng = np.random.default_rng(0)
    real = rng.normal(size=(n_real, 3))
    synthetic = rng.normal(size=(n_synthetic, 3))
    originals = rng.permutation(n_real)[:copies]
    where = rng.permutation(n_synthetic)[:copies]
    synthetic[where] = real[originals]
    fold_real, fold_synthetic, folds = _folds(real, synthetic, seed=0, folds=asked)
    assert folds == k
    for assigned, n in ((fold_real, n_real), (fold_synthetic, n_synthetic)):
        counts = np.bincount(assigned, minlength=k)
        assert counts.max() - counts.min() <= 1  # each table spread evenly
        assert counts.sum() == n
    assert np.array_equal(fold_synthetic[where], fold_real[originals])


def test_shuffled_copies_are_indistinguishable() -> None:
    real = _random_table(5, 20, 10)
    copies = [real[i] for i in np.random.default_rng(6).permutation(20)]
    # trained against copies with the other label, the classifier would score every case
    # backwards (AUC near 0); copies share their original's fold, so the fit is exactly zero
    assert classifier_auc(real, copies) == pytest.approx(0.5, abs=1e-12)


def test_constant_and_non_finite_features_are_left_out_and_listed() -> None:
    real = _table({**_columns(REAL), "flat": [5, 5, 5, 5], "bad": [1, math.nan, 2, 3]})
    synthetic = _table({**_columns(SHIFTED), "flat": [5, 6, 7, 8], "bad": [1, 2, 3, math.inf]})
    comparison = compare_tables(real, synthetic)
    assert comparison.screen.used == ("a", "b")
    assert comparison.screen.constant == ("flat",)
    assert comparison.screen.non_finite == ("bad",)
    assert comparison.wasserstein == pytest.approx({"a": SHIFT_DISTANCE, "b": SHIFT_DISTANCE})
    assert comparison.frechet_distance == pytest.approx(1.2, rel=1e-9)
    assert comparison.to_json()["constant_features"] == ["flat"]
    assert comparison.to_json()["non_finite_features"] == ["bad"]


def test_compare_tables_agrees_with_each_figure_and_serialises() -> None:
    comparison = compare_tables(REAL, SHIFTED, seed=3)
    assert comparison.wasserstein == wasserstein_per_feature(REAL, SHIFTED)
    assert comparison.means_correlation == means_correlation(REAL, SHIFTED)
    assert comparison.frechet_distance == frechet_radiomics_distance(REAL, SHIFTED)
    assert comparison.classifier_auc == classifier_auc(REAL, SHIFTED, seed=3)
    assert comparison.mean_wasserstein == pytest.approx(SHIFT_DISTANCE)
    report = json.loads(json.dumps(comparison.to_json()))
    assert report["cases"] == {"real": 4, "synthetic": 4}
    assert report["features_used"] == 2
    assert report["frechet_radiomics_distance"] == pytest.approx(1.2, rel=1e-9)
    assert report["means_scale"] == "signed-log"


def test_mismatched_feature_names_are_named() -> None:
    synthetic = _table({"a": [1, 2], "c": [3, 4]})
    with pytest.raises(FeatureMismatchError, match=r"synthetic case #0 .*missing: b; extra: c"):
        compare_tables(REAL, synthetic)
    uneven = [*REAL[:3], {"a": 1.0}]
    with pytest.raises(FeatureMismatchError, match=r"real case #3 .*missing: b; extra: none"):
        wasserstein_per_feature(uneven, REAL)


def test_a_long_mismatch_lists_the_first_names_and_the_count() -> None:
    real = [{f"f{i:02d}": float(i + j) for i in range(30)} for j in range(2)]
    synthetic = [{"g": 1.0}, {"g": 2.0}]
    with pytest.raises(
        FeatureMismatchError, match=r"f09, \.\.\. \(30 in all\); extra: g"
    ) as caught:
        compare_tables(real, synthetic)
    assert caught.value.only_here == ("g",)
    assert len(caught.value.only_there) == 30


def test_too_few_cases_or_features_are_refused() -> None:
    with pytest.raises(RadiomicsStatsError, match="the synthetic table has 1 cases; at least 2"):
        compare_tables(REAL, SHIFTED[:1])
    with pytest.raises(RadiomicsStatsError, match="the real table has 0 cases"):
        classifier_auc([], SHIFTED)
    flat = _table({"a": [1, 1], "b": [math.nan, 2]})
    with pytest.raises(
        RadiomicsStatsError, match=r"no feature left to compare: 1 constant .*1 with"
    ):
        frechet_radiomics_distance(flat, flat)
    one = _table({"a": [1, 2]})
    with pytest.raises(RadiomicsStatsError, match="at least 2 features whose means differ"):
        means_correlation(one, one)


def test_bad_options_are_refused() -> None:
    with pytest.raises(RadiomicsStatsError, match="scale must be 'signed-log' or 'raw', not 'log'"):
        means_correlation(REAL, SHIFTED, scale="log")  # type: ignore[arg-type]
    with pytest.raises(RadiomicsStatsError, match="ridge must be a number >= 0, not -1"):
        frechet_radiomics_distance(REAL, SHIFTED, ridge=-1.0)
    for folds in (1, 2.5, True):
        with pytest.raises(RadiomicsStatsError, match="folds must be a whole number >= 2"):
            classifier_auc(REAL, SHIFTED, folds=folds)  # type: ignore[arg-type]
    with pytest.raises(RadiomicsStatsError, match="ridge must be a number >= 0, not nan"):
        compare_tables(REAL, SHIFTED, ridge=math.nan)
