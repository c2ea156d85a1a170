"""Real against synthetic radiomics: can the synthetic cases' features stand in for the real ones'?

Both inputs are feature tables, one mapping per case from pyradiomics feature name to value (as
:func:`evaluator.radiomics.extract_many` gives them), with the same features in every case.

Screening, the same for every figure so that all four speak of one feature set: a feature is
left out, and listed, when any case of either table has a NaN or infinite value, or when it is
constant over the real cases (it cannot be standardised by them). Standardised means
``(x - mean_real) / std_real`` with the real set's mean and sample standard deviation (n - 1).

Figures:

- per-feature 1-D Wasserstein distance of the standardised values (in real standard
  deviations: 0 = same distribution; a pure shift by d real SDs gives d);
- the study's figure: Pearson correlation, across features, of the real and the synthetic
  feature means, each mean put on a signed log scale first (see :func:`means_correlation`);
- the Fréchet radiomics distance between Gaussians fitted to the standardised feature
  vectors (see :func:`frechet_radiomics_distance`);
- the cross-validated AUC of a logistic regression telling real from synthetic cases
  (0.5 = indistinguishable, 1.0 = always told apart; see :func:`classifier_auc`).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Literal

import numpy as np
from scipy.stats import wasserstein_distance
from sklearn.linear_model import LogisticRegression
from sklearn.metrics import roc_auc_score
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler

from common.errors import FedsynthError

FeatureTable = Sequence[Mapping[str, float]]
MeansScale = Literal["signed-log", "raw"]

STD_DDOF = 1  # sample standard deviation (n - 1) of the real set
CONSTANT_RTOL = 1e-12  # a real SD this small against |mean| is rounding, not variation
MIN_CASES = 2  # per table: a standard deviation and a two-fold split need two cases
FRD_RIDGE = 1e-6  # added to both covariance diagonals (real variances are 1 after standardising)
MAX_FOLDS = 5  # the classifier uses k = min(5, smaller table's size) folds
LOGISTIC_C = 1.0  # inverse L2 strength of the classifier: scikit-learn's default
LOGISTIC_MAX_ITER = 1000  # lbfgs iterations; standardised radiomics converge well before
LISTED = 10  # feature names listed at most in an error message


class RadiomicsStatsError(FedsynthError, ValueError):
    """Two feature tables cannot be compared as they are."""


class FeatureMismatchError(RadiomicsStatsError):
    """The tables (or cases within one) do not hold the same features."""

    def __init__(self, where: str, only_here: Sequence[str], only_there: Sequence[str]) -> None:
        self.only_here = tuple(only_here)
        self.only_there = tuple(only_there)
        super().__init__(
            f"{where}: different features (missing: {_names(only_there)}; "
            f"extra: {_names(only_here)}); extract every case with the same settings and "
            "pyradiomics version"
        )


def _names(names: Sequence[str]) -> str:
    if not names:
        return "none"
    listed = ", ".join(names[:LISTED])
    return f"{listed}, ... ({len(names)} in all)" if len(names) > LISTED else listed


@dataclass(frozen=True)
class FeatureScreen:
    """Which features the figures use, and which were left out and why."""

    used: tuple[str, ...]
    constant: tuple[str, ...]  # the same value in every real case
    non_finite: tuple[str, ...]  # NaN or infinite in some case of either table


def _matrix(table: FeatureTable, names: Sequence[str], which: str) -> np.ndarray:
    if len(table) < MIN_CASES:
        raise RadiomicsStatsError(
            f"the {which} table has {len(table)} cases; at least {MIN_CASES} are needed"
        )
    expected = set(names)
    for index, row in enumerate(table):
        if set(row) != expected:
            where = f"{which} case #{index} against the real table's first case"
            raise FeatureMismatchError(
                where, sorted(set(row) - expected), sorted(expected - set(row))
            )
    return np.array([[float(row[n]) for n in names] for row in table], dtype=np.float64)


@dataclass(frozen=True)
class _Tables:
    """The screened features of both tables: raw, and standardised by the real set."""

    raw_real: np.ndarray
    raw_synthetic: np.ndarray
    real: np.ndarray
    synthetic: np.ndarray
    screen: FeatureScreen


def _prepare(real: FeatureTable, synthetic: FeatureTable) -> _Tables:
    names = list(real[0]) if real else []
    r, s = _matrix(real, names, "real"), _matrix(synthetic, names, "synthetic")
    finite = np.isfinite(r).all(axis=0) & np.isfinite(s).all(axis=0)
    mean = np.where(finite, r, 0.0).mean(axis=0)
    std = np.where(finite, r, 0.0).std(axis=0, ddof=STD_DDOF)
    constant = finite & (std <= CONSTANT_RTOL * np.abs(mean))
    used = finite & ~constant
    screen = FeatureScreen(
        used=tuple(n for n, u in zip(names, used, strict=True) if u),
        constant=tuple(n for n, c in zip(names, constant, strict=True) if c),
        non_finite=tuple(n for n, f in zip(names, finite, strict=True) if not f),
    )
    if not screen.used:
        raise RadiomicsStatsError(
            f"no feature left to compare: {len(screen.constant)} constant over the real cases, "
            f"{len(screen.non_finite)} with NaN or infinite values"
        )
    raw_r, raw_s = r[:, used], s[:, used]
    centre, spread = mean[used], std[used]
    return _Tables(raw_r, raw_s, (raw_r - centre) / spread, (raw_s - centre) / spread, screen)


def _wasserstein(r: np.ndarray, s: np.ndarray) -> np.ndarray:
    return np.array([wasserstein_distance(r[:, j], s[:, j]) for j in range(r.shape[1])])


def wasserstein_per_feature(real: FeatureTable, synthetic: FeatureTable) -> dict[str, float]:
    """1-D Wasserstein (earth mover's) distance per screened feature, in real SDs."""
    tables = _prepare(real, synthetic)
    distances = _wasserstein(tables.real, tables.synthetic)
    return dict(zip(tables.screen.used, (float(v) for v in distances), strict=True))


def _signed_log(values: np.ndarray) -> np.ndarray:
    return np.sign(values) * np.log10(1.0 + np.abs(values))


def _pearson(x: np.ndarray, y: np.ndarray) -> float:
    dx, dy = x - x.mean(), y - y.mean()
    denominator = float(np.sqrt((dx * dx).sum() * (dy * dy).sum()))
    if x.size < 2 or denominator == 0.0:
        raise RadiomicsStatsError(
            f"the means correlation needs at least 2 features whose means differ ({x.size} given)"
        )
    return float((dx * dy).sum() / denominator)


def _means_correlation(r: np.ndarray, s: np.ndarray, scale: MeansScale) -> float:
    if scale not in ("signed-log", "raw"):
        raise RadiomicsStatsError(f"scale must be 'signed-log' or 'raw', not {scale!r}")
    real_means, synthetic_means = r.mean(axis=0), s.mean(axis=0)
    if scale == "signed-log":
        real_means, synthetic_means = _signed_log(real_means), _signed_log(synthetic_means)
    return _pearson(real_means, synthetic_means)


def means_correlation(
    real: FeatureTable, synthetic: FeatureTable, scale: MeansScale = "signed-log"
) -> float:
    """Pearson correlation, across the screened features, of real and synthetic feature means.

    The study's figure (0.8784 for MRI tumours, 0.5461 for CT). Means are of the raw values;
    with ``scale="signed-log"`` each mean m becomes sign(m) log10(1 + |m|) before correlating,
    because raw means span 12 to 14 orders of magnitude (TotalEnergy ~1e11, Coarseness ~2e-3
    on pyradiomics' brain1 case) and a raw correlation is then decided by the one or two
    largest features (``scale="raw"`` gives it anyway). Standardising by the real set is no
    option here: it makes every real mean 0.
    """
    tables = _prepare(real, synthetic)
    return _means_correlation(tables.raw_real, tables.raw_synthetic, scale)


def _psd_sqrt(matrix: np.ndarray) -> np.ndarray:
    values, vectors = np.linalg.eigh(matrix)
    return (vectors * np.sqrt(np.clip(values, 0.0, None))) @ vectors.T


def _frechet(r: np.ndarray, s: np.ndarray, ridge: float) -> float:
    if not ridge >= 0:
        raise RadiomicsStatsError(f"ridge must be a number >= 0, not {ridge}")
    ridge_matrix = ridge * np.eye(r.shape[1])
    cov_r = np.atleast_2d(np.cov(r, rowvar=False, ddof=STD_DDOF)) + ridge_matrix
    cov_s = np.atleast_2d(np.cov(s, rowvar=False, ddof=STD_DDOF)) + ridge_matrix
    # Tr (C_r^1/2 C_s C_r^1/2)^1/2 is the sum of the singular values of C_r^1/2 C_s^1/2: no
    # square root of eigenvalues near 0 (where rounding would be amplified) is taken
    cross = np.linalg.svd(_psd_sqrt(cov_r) @ _psd_sqrt(cov_s), compute_uv=False).sum()
    trace = np.trace(cov_r) + np.trace(cov_s) - 2.0 * cross
    shift = r.mean(axis=0) - s.mean(axis=0)
    return float(max(shift @ shift + trace, 0.0))


def frechet_radiomics_distance(
    real: FeatureTable, synthetic: FeatureTable, ridge: float = FRD_RIDGE
) -> float:
    """Fréchet distance between Gaussians fitted to the real-standardised feature vectors.

    ``|mu_r - mu_s|^2 + Tr(C_r + C_s - 2 (C_r^1/2 C_s C_r^1/2)^1/2)``, covariances with n - 1.
    With fewer cases than features both covariances are singular: ``ridge`` (default 1e-6,
    in real variances) is added to their diagonals so that each Gaussian is proper. In squared
    real SDs summed over features: 0 for identical tables, d^2 per feature for a pure shift by
    d SDs, (1 - k)^2 for a feature whose spread is k times the real one. It grows with the
    number of features: compare figures computed on the same feature set only.
    """
    tables = _prepare(real, synthetic)
    return _frechet(tables.real, tables.synthetic, ridge)


def _copies(r: np.ndarray, s: np.ndarray) -> list[tuple[int, int]]:
    """(real, synthetic) index pairs of cases with identical features, each case used once."""
    originals: dict[bytes, list[int]] = {}
    for index, row in enumerate(r):
        originals.setdefault(row.tobytes(), []).append(index)
    pairs = []
    for index, row in enumerate(s):
        match = originals.get(row.tobytes())
        if match:
            pairs.append((match.pop(), index))
    return pairs


def _folds(
    r: np.ndarray, s: np.ndarray, seed: int, folds: int = MAX_FOLDS
) -> tuple[np.ndarray, np.ndarray, int]:
    """Seeded folds, each table spread evenly over them; a synthetic case that is an exact
    copy of a real one shares its original's fold."""
    if isinstance(folds, bool) or not isinstance(folds, int) or folds < MIN_CASES:
        raise RadiomicsStatsError(f"folds must be a whole number >= {MIN_CASES}, not {folds!r}")
    k = min(folds, len(r), len(s))
    rng = np.random.default_rng(seed)
    pairs = _copies(r, s)
    fold_r, fold_s = np.empty(len(r), dtype=int), np.empty(len(s), dtype=int)
    for position, pair in enumerate(rng.permutation(len(pairs))):
        real, synthetic = pairs[pair]
        fold_r[real] = fold_s[synthetic] = position % k
    # the rest of each table continues the same cycle of folds: every fold gets n/k +- 1 cases
    for assigned, paired in ((fold_r, [p[0] for p in pairs]), (fold_s, [p[1] for p in pairs])):
        rest = rng.permutation(np.setdiff1d(np.arange(len(assigned)), paired))
        assigned[rest] = (len(pairs) + np.arange(len(rest))) % k
    return fold_r, fold_s, k


def _auc(r: np.ndarray, s: np.ndarray, seed: int, folds: int) -> float:
    fold_r, fold_s, k = _folds(r, s, seed, folds)
    x = np.vstack([r, s])
    y = np.concatenate([np.zeros(len(r)), np.ones(len(s))])
    assigned = np.concatenate([fold_r, fold_s])
    scores = np.zeros(len(y))
    for fold in range(k):
        test = assigned == fold
        model = make_pipeline(
            StandardScaler(), LogisticRegression(C=LOGISTIC_C, max_iter=LOGISTIC_MAX_ITER)
        )
        model.fit(x[~test], y[~test])
        scores[test] = model.decision_function(x[test])
    return float(roc_auc_score(y, scores))


def classifier_auc(
    real: FeatureTable, synthetic: FeatureTable, seed: int = 0, folds: int = MAX_FOLDS
) -> float:
    """Cross-validated AUC of a logistic regression telling synthetic (1) from real (0) cases.

    Standardised features (scaled inside each training fold), L2 logistic regression, k =
    min(``folds``, smaller table's size) folds drawn from ``seed`` with each table spread
    evenly; the AUC is of the pooled out-of-fold scores.

    A synthetic case that exactly copies a real one shares its original's fold: trained on a
    copy labelled the other way, the classifier would score the original backwards, and
    identical tables would give an AUC near 0 instead of exactly 0.5. Near-copies are not
    paired, so an AUC well below 0.5 is itself a sign of synthetic cases nearly copying real
    ones (the memorization audit is the place to look).
    """
    tables = _prepare(real, synthetic)
    return _auc(tables.real, tables.synthetic, seed, folds)


@dataclass(frozen=True)
class RadiomicsComparison:
    """Every figure of one real-against-synthetic comparison, on one screened feature set."""

    screen: FeatureScreen
    wasserstein: dict[str, float]
    means_correlation: float
    means_scale: str
    frechet_distance: float
    classifier_auc: float
    real_cases: int
    synthetic_cases: int

    @property
    def mean_wasserstein(self) -> float:
        """The per-feature Wasserstein distances averaged over the features used."""
        return float(np.mean(list(self.wasserstein.values())))

    def to_json(self) -> dict[str, Any]:
        """A JSON-ready dict (for evaluation.json)."""
        return {
            "cases": {"real": self.real_cases, "synthetic": self.synthetic_cases},
            "features_used": len(self.screen.used),
            "constant_features": list(self.screen.constant),
            "non_finite_features": list(self.screen.non_finite),
            "wasserstein": self.wasserstein,
            "mean_wasserstein": self.mean_wasserstein,
            "means_correlation": self.means_correlation,
            "means_scale": self.means_scale,
            "frechet_radiomics_distance": self.frechet_distance,
            "classifier_auc": self.classifier_auc,
        }


def compare_tables(
    real: FeatureTable,
    synthetic: FeatureTable,
    *,
    seed: int = 0,
    folds: int = MAX_FOLDS,
    scale: MeansScale = "signed-log",
    ridge: float = FRD_RIDGE,
) -> RadiomicsComparison:
    """All four figures (see the module's docstring) on one screened feature set.

    Raises:
        FeatureMismatchError: the tables do not hold the same features.
        RadiomicsStatsError: fewer than 2 cases in a table, fewer than 2 usable features (the
            means correlation needs 2), fewer than 2 ``folds``, or a negative ``ridge``.
    """
    tables = _prepare(real, synthetic)
    r, s = tables.real, tables.synthetic
    return RadiomicsComparison(
        screen=tables.screen,
        wasserstein=dict(
            zip(tables.screen.used, (float(v) for v in _wasserstein(r, s)), strict=True)
        ),
        means_correlation=_means_correlation(tables.raw_real, tables.raw_synthetic, scale),
        means_scale=scale,
        frechet_distance=_frechet(r, s, ridge),
        classifier_auc=_auc(r, s, seed, folds),
        real_cases=len(real),
        synthetic_cases=len(synthetic),
    )
