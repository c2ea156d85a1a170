"""The report's figures per space, from the search results.

- DCR: each synthetic case's distance to its closest training case (quantiles are reported).
- Nearest/second-nearest ratio: near 0 when one training case stands out as a synthetic case's
  source, near 1 when it lies between patients.
- Identifiability score: the share of training cases whose nearest synthetic case is closer than
  their nearest other training case (from the synthetic cases' top-k lists: a training case in
  no list counts as not identified).
- Closer to training than to held-out (SDMetrics' DCR overfitting protection): the share of
  synthetic cases whose DCR to the training cases is below their DCR to the held-out cases;
  about one half for a generator that does not overfit (with as many held-out as training cases).
"""

from __future__ import annotations

import numpy as np

from common.audit.search import Neighbours

QUANTILES = (0.0, 0.05, 0.25, 0.5, 0.75, 0.95, 1.0)


def ratios(neighbours: Neighbours, space: str) -> np.ndarray:
    """(Q,) nearest over second-nearest distance; 0 for an exact copy, NaN without a second."""
    first, second = neighbours.nearest(space), neighbours.second(space)
    with np.errstate(divide="ignore", invalid="ignore"):
        out = np.where(second > 0, first / second, 0.0)
    return np.where(np.isfinite(second), out, np.nan)


def identifiability(
    synthetic: Neighbours, train_loo: Neighbours, space: str, n_train: int
) -> float:
    """Share of training cases closer to some synthetic case than to any other training case."""
    nearest_synthetic = np.full(n_train, np.inf)
    index, distance = synthetic.index[space], synthetic.distance[space]
    valid = index >= 0
    np.minimum.at(nearest_synthetic, index[valid], distance[valid])
    return float(np.mean(nearest_synthetic < train_loo.nearest(space)))


def closer_to_training(synthetic: Neighbours, holdout: Neighbours, space: str) -> float:
    """Share of synthetic cases nearer the training set than the held-out set."""
    return float(np.mean(synthetic.nearest(space) < holdout.nearest(space)))


def quantiles(values: np.ndarray) -> dict[str, float]:
    """The report's quantiles of the finite values."""
    finite = values[np.isfinite(values)]
    if not finite.size:
        return {}
    return {f"q{int(q * 100):02d}": float(np.quantile(finite, q)) for q in QUANTILES}
