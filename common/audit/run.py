"""A site's whole audit: search, calibration, flags and figures, as one JSON-ready result.

Training cases appear only by site-local pseudonym (``train-001`` is the first training case in
the order given), never by identifier or path.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np

from common.audit.calibration import HOLDOUT, Calibration, calibrate
from common.audit.search import SPACES, CaseSet, Neighbours, Progress, search
from common.audit.summary import closer_to_training, identifiability, quantiles, ratios
from common.config import AuditConfig

SearchProgress = Callable[[str, int, int], None]
SYNTHETIC_SEARCH = "synthetic cases -> training cases"
TRAIN_SEARCH = "training cases -> other training cases"
HOLDOUT_SEARCH = "held-out cases -> training cases"
SYNTHETIC_HOLDOUT_SEARCH = "synthetic cases -> held-out cases"
"""The audit's searches, as progress reports name them."""


def pseudonym(index: int) -> str:
    """The site-local name of training case ``index`` (0-based)."""
    return f"train-{index + 1:03d}"


@dataclass(frozen=True)
class Audit:
    """Everything the audit computed: the JSON result and the searches behind it."""

    result: dict[str, Any]
    synthetic: Neighbours
    calibration: Calibration
    flagged: np.ndarray
    reference: Neighbours | None = None
    """The calibration's own search (held-out or leave-one-out training cases' neighbours)."""


def _reason(distances: dict[str, float], limits: dict[str, float], names: dict[str, str]) -> str:
    parts = [
        f"{space}: {distances[space]:.4g} < threshold {limits[space]:.4g} (nearest {names[space]})"
        for space in SPACES
        if distances[space] < limits[space]
    ]
    return "; ".join(parts) if parts else "farther than every threshold"


def _case(i: int, case_id: str, found: Neighbours, limits: dict[str, float]) -> dict[str, Any]:
    nearest = {space: float(found.nearest(space)[i]) for space in SPACES}
    neighbours = {
        space: [
            {"id": pseudonym(int(index)), "distance": float(distance)}
            for index, distance in zip(found.index[space][i], found.distance[space][i], strict=True)
            if index >= 0
        ]
        for space in SPACES
    }
    names = {space: str((neighbours[space] or [{"id": "-"}])[0]["id"]) for space in SPACES}
    flagged = any(nearest[space] < limits[space] for space in SPACES)
    return {
        "case": case_id,
        "nearest": nearest,
        "neighbours": neighbours,
        "flagged": flagged,
        "reason": _reason(nearest, limits, names),
    }


def _figures(
    found: Neighbours, loo: Neighbours, to_holdout: Neighbours | None, n_train: int
) -> dict[str, Any]:
    figures: dict[str, Any] = {}
    for space in SPACES:
        ratio = ratios(found, space)
        figures[space] = {
            "dcr": quantiles(found.nearest(space)),
            "nearest_second_ratio": quantiles(ratio),
            "identifiability": identifiability(found, loo, space, n_train),
            "closer_to_training": (
                None if to_holdout is None else closer_to_training(found, to_holdout, space)
            ),
        }
    return figures


def run_audit(
    synthetic: CaseSet,
    synthetic_ids: Sequence[str],
    train: CaseSet,
    holdout: CaseSet | None,
    values: tuple[int, ...],
    settings: AuditConfig,
    on_search: SearchProgress | None = None,
) -> Audit:
    """Audit ``synthetic`` against a site's ``train`` cases, calibrated on ``holdout``;
    ``on_search`` is called with (search, query cases done, total) after each chunk.

    Raises:
        ValueError: no synthetic case, fewer than two training cases, or sets on other grids.
    """
    if len(synthetic) == 0 or len(synthetic) != len(synthetic_ids):
        raise ValueError("the audit needs synthetic cases, one id each")
    if len(train) < 2:
        raise ValueError(f"the audit needs at least 2 training cases, got {len(train)}")

    def progress(name: str) -> Progress | None:
        if on_search is None:
            return None
        report = on_search
        return lambda done, total: report(name, done, total)

    found = search(synthetic, train, values, settings, on_chunk=progress(SYNTHETIC_SEARCH))
    loo = search(train, train, values, settings, exclude_self=True, on_chunk=progress(TRAIN_SEARCH))
    held = None
    if holdout is not None and len(holdout) > 0:
        held = search(holdout, train, values, settings, on_chunk=progress(HOLDOUT_SEARCH))
    calibration = calibrate(held, loo, settings)
    cases = [
        _case(i, case_id, found, calibration.thresholds) for i, case_id in enumerate(synthetic_ids)
    ]
    to_holdout = None
    if holdout is not None and len(holdout) > 0:
        to_holdout = search(
            synthetic, holdout, values, settings, on_chunk=progress(SYNTHETIC_HOLDOUT_SEARCH)
        )
    figures = _figures(found, loo, to_holdout, len(train))
    result = {
        "spaces": list(SPACES),
        "settings": asdict(settings),
        "calibration": calibration.to_json(),
        "counts": {
            "synthetic": len(synthetic),
            "train": len(train),
            "holdout": 0 if holdout is None else len(holdout),
            "flagged": sum(case["flagged"] for case in cases),
        },
        "figures": figures,
        "cases": cases,
    }
    flagged = np.array([case["flagged"] for case in cases], dtype=bool)
    reference = held if calibration.source == HOLDOUT else loo
    return Audit(result, found, calibration, flagged, reference)
