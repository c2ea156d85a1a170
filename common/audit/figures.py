"""The audit report's figures: distance histograms with the threshold marked, and each shown
synthetic case beside its nearest training cases (tri-planar views).

Histograms hold distances only (they may travel with a release); the galleries hold real
voxels and belong to the on-site report alone.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
from matplotlib.figure import Figure

from common.audit.calibration import HOLDOUT, LEAVE_ONE_OUT
from common.audit.run import Audit, pseudonym
from common.audit.search import SPACES, CaseSet
from common.reports.figures import GalleryRow, triplanar_png

HISTOGRAM_BINS = 20
THRESHOLD_COLOUR = "#d62728"
PREPROCESSED_WINDOW = (-1.0, 1.0)
"""The galleries show the site's preprocessed intensities, which span [-1, 1]."""
REFERENCE_LABELS = {
    HOLDOUT: "held-out -> nearest training case",
    LEAVE_ONE_OUT: "training -> nearest other training case",
}


def _finite(values: np.ndarray) -> np.ndarray:
    return values[np.isfinite(values)]


def distance_histogram(
    space: str, synthetic: np.ndarray, reference: np.ndarray, threshold: float, source: str
) -> Figure:
    """The synthetic cases' nearest distances in ``space`` over the calibration's own (how far
    apart two patients of the site are), with the threshold as a dashed vertical line."""
    synthetic, reference = _finite(synthetic), _finite(reference)
    values = np.concatenate([synthetic, reference, [threshold]])
    edges = [float(edge) for edge in np.histogram_bin_edges(values, HISTOGRAM_BINS)]
    figure = Figure(figsize=(4.6, 3.0))
    axis = figure.subplots()
    axis.hist(synthetic, bins=edges, alpha=0.6, label="synthetic -> nearest training case")
    axis.hist(reference, bins=edges, histtype="step", linewidth=1.5, label=REFERENCE_LABELS[source])
    axis.axvline(
        threshold, color=THRESHOLD_COLOUR, linestyle="--", label=f"threshold {threshold:.3g}"
    )
    axis.set_xlabel(f"{space} distance")
    axis.set_ylabel("cases")
    axis.legend(fontsize=7)
    return figure


def histograms(audit: Audit) -> list[tuple[str, Figure]]:
    """One histogram per space, in report order, with its alt text."""
    limits, source = audit.calibration.thresholds, audit.calibration.source
    out = []
    for space in SPACES:
        reference = audit.reference.nearest(space) if audit.reference is not None else np.array([])
        alt = f"{space} distance histogram, threshold {limits[space]:.4g} marked"
        figure = distance_histogram(
            space, audit.synthetic.nearest(space), reference, limits[space], source
        )
        out.append((alt, figure))
    return out


def shown_cases(audit: Audit, closest: int) -> list[int]:
    """Every flagged case, then the ``closest`` unflagged ones nearest a threshold (smallest
    distance over threshold in any space), nearest first."""
    limits = audit.calibration.thresholds
    closeness = np.full(len(audit.flagged), np.inf)
    for space in SPACES:
        limit = limits[space]
        if limit > 0:
            closeness = np.minimum(closeness, audit.synthetic.nearest(space) / limit)
    flagged = [int(i) for i in np.argsort(closeness, kind="stable") if audit.flagged[i]]
    others = [int(i) for i in np.argsort(closeness, kind="stable") if not audit.flagged[i]]
    return flagged + others[:closest]


def _middle(shape: Sequence[int]) -> tuple[int, int, int]:
    z, y, x = (int(s) // 2 for s in shape)
    return (z, y, x)


def _row(title: str, cases: CaseSet, index: int, spacing: tuple[float, float, float]) -> GalleryRow:
    centre = _middle(cases.images.shape[1:])
    return GalleryRow(
        title, cases.images[index].numpy(), cases.labels[index].numpy(), spacing, centre
    )


def gallery_rows(
    audit: Audit,
    index: int,
    synthetic: CaseSet,
    train: CaseSet,
    spacing: tuple[float, float, float],
) -> list[GalleryRow]:
    """Synthetic case ``index`` above its nearest training case in each space (each training
    case once, in space order), all cut through the grid's middle so that a copy lines up."""
    case = audit.result["cases"][index]
    verdict = "flagged" if case["flagged"] else "not flagged"
    rows = [_row(f"{case['case']} ({verdict})", synthetic, index, spacing)]
    nearest: dict[int, list[str]] = {}
    for space in SPACES:
        neighbour = int(audit.synthetic.index[space][index, 0])
        if neighbour >= 0:
            distance = float(audit.synthetic.nearest(space)[index])
            nearest.setdefault(neighbour, []).append(f"{space} {distance:.3g}")
    for neighbour, spaces in nearest.items():
        title = f"{pseudonym(neighbour)}, nearest in\n{', '.join(spaces)}"
        rows.append(_row(title, train, neighbour, spacing))
    return rows


def neighbour_gallery(
    audit: Audit,
    index: int,
    synthetic: CaseSet,
    train: CaseSet,
    spacing: tuple[float, float, float],
) -> bytes:
    """A PNG of :func:`gallery_rows` (tri-planar views, label maps outlined)."""
    return triplanar_png(gallery_rows(audit, index, synthetic, train, spacing), PREPROCESSED_WINDOW)
