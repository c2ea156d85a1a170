"""Thresholds from the site's own patients: how close two different patients normally are.

Each held-out case's nearest training case gives one distance per space; a space's threshold is
``audit.threshold-factor`` x the ``audit.percentile``-th percentile of those distances, and a
synthetic case closer than the threshold in any space is flagged. The factor (default 0.5) keeps
the share of new patients flagged low even when few held-out cases set the percentile.

Fallback, always stated in the result: with fewer than ``audit.min-holdout`` held-out cases (or
none), each training case's nearest *other* training case (leave-one-out) sets the thresholds
instead. With fewer than two training cases nothing can be calibrated and the audit is refused.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from common.audit.search import SPACES, Neighbours
from common.config import AuditConfig

HOLDOUT, LEAVE_ONE_OUT = "holdout", "train-leave-one-out"


@dataclass(frozen=True)
class Calibration:
    """The thresholds per space, and where they came from (``source`` and a sentence)."""

    thresholds: dict[str, float]
    source: str
    cases: int
    note: str

    def to_json(self) -> dict[str, object]:
        """A JSON-ready dict."""
        return {
            "thresholds": self.thresholds,
            "source": self.source,
            "cases": self.cases,
            "note": self.note,
        }


def thresholds(reference: Neighbours, settings: AuditConfig) -> dict[str, float]:
    """Per space: the factor times the percentile of the finite nearest distances."""
    out = {}
    for space in SPACES:
        nearest = reference.nearest(space)
        nearest = nearest[np.isfinite(nearest)]
        value = np.percentile(nearest, settings.percentile) if nearest.size else 0.0
        out[space] = float(settings.threshold_factor * value)
    return out


def calibrate(
    holdout: Neighbours | None, leave_one_out: Neighbours | None, settings: AuditConfig
) -> Calibration:
    """Thresholds from held-out cases if there are at least ``audit.min-holdout`` of them,
    else from the training cases' leave-one-out nearest distances (the stated fallback).

    Raises:
        ValueError: neither is available (fewer than two training cases and too few held out).
    """
    held = 0 if holdout is None else len(holdout.nearest(SPACES[0]))
    if holdout is not None and held >= settings.min_holdout:
        note = (
            f"{held} held-out cases: threshold = {settings.threshold_factor} x percentile "
            f"{settings.percentile} of their nearest distances to the training cases"
        )
        return Calibration(thresholds(holdout, settings), HOLDOUT, held, note)
    if leave_one_out is None or len(leave_one_out.nearest(SPACES[0])) < 2:
        raise ValueError(
            f"cannot calibrate: {held} held-out cases (audit.min-holdout = "
            f"{settings.min_holdout}) and fewer than 2 training cases"
        )
    cases = len(leave_one_out.nearest(SPACES[0]))
    note = (
        f"fallback: {held} held-out cases, fewer than audit.min-holdout = "
        f"{settings.min_holdout}; threshold = {settings.threshold_factor} x percentile "
        f"{settings.percentile} of each of the {cases} training cases' nearest other training "
        "case (leave-one-out)"
    )
    return Calibration(thresholds(leave_one_out, settings), LEAVE_ONE_OUT, cases, note)
