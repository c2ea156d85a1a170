"""Tri-planar galleries: axial, coronal and sagittal slices of volumes with label contours."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from io import BytesIO
from pathlib import Path

import numpy as np
from matplotlib.figure import Figure  # the object API: no pyplot state, no screen needed

from common.atomic import atomic_write_bytes

CT_SOFT_TISSUE_WINDOW = (-160.0, 240.0)
"""Level 40 HU, width 400 HU: the radiologists' soft-tissue window."""
CT_BONE_WINDOW = (-200.0, 1800.0)
"""Level 800 HU, width 2000 HU: a bone window."""
LABEL_COLOURS = ("#e41a1c", "#377eb8", "#4daf4a", "#ff7f00", "#984ea3")
"""Contour colour of label value 1, 2, 3, ... in turn."""
FIGURE_DPI = 110


@dataclass(frozen=True)
class GalleryRow:
    """One volume to show: (z, y, x) arrays and the voxel spacing (x, y, z) in mm; ``centre``
    (z, y, x) is where the three planes cross (default: the tumour centroid)."""

    title: str
    image: np.ndarray
    label: np.ndarray
    spacing: tuple[float, float, float]
    centre: tuple[int, int, int] | None = None


def _centre(label: np.ndarray) -> tuple[int, int, int]:
    """The centroid of the labelled voxels (the tumour first), or the volume's middle."""
    for value in sorted(v for v in np.unique(label) if v > 0):
        where = np.argwhere(label == value)
        if where.size:
            z, y, x = where.mean(axis=0).round().astype(int)
            return int(z), int(y), int(x)
    return tuple(s // 2 for s in label.shape)  # type: ignore[return-value]


def label_colour(value: int) -> str:
    """The contour colour of label ``value`` (1, 2, ...): the same in every slice and case,
    whichever other labels the slice holds."""
    return LABEL_COLOURS[(value - 1) % len(LABEL_COLOURS)]


def triplanar_slices(row: GalleryRow) -> list[tuple[str, np.ndarray, np.ndarray, float]]:
    """(plane, image slice, label slice, display aspect) through ``row.centre`` (default: the
    tumour centroid)."""
    z, y, x = row.centre if row.centre is not None else _centre(row.label)
    sx, sy, sz = row.spacing
    return [
        ("axial", row.image[z], row.label[z], sy / sx),
        ("coronal", row.image[:, y, :], row.label[:, y, :], sz / sx),
        ("sagittal", row.image[:, :, x], row.label[:, :, x], sz / sy),
    ]


def triplanar_png(rows: Sequence[GalleryRow], window: tuple[float, float]) -> bytes:
    """A PNG of one row of three planes per volume, label values outlined in colour."""
    figure = Figure(figsize=(9, 3 * len(rows)), dpi=FIGURE_DPI)
    axes = figure.subplots(len(rows), 3, squeeze=False)
    for row_axes, row in zip(axes, rows, strict=True):
        for axis, (plane, image, label, aspect) in zip(
            row_axes, triplanar_slices(row), strict=True
        ):
            flip = plane != "axial"  # superior at the top of coronal and sagittal views
            image = image[::-1] if flip else image
            label = label[::-1] if flip else label
            axis.imshow(image, cmap="gray", vmin=window[0], vmax=window[1], aspect=aspect)
            for value in (int(v) for v in np.unique(label) if v > 0):
                axis.contour(
                    label == value, levels=[0.5], colors=label_colour(value), linewidths=0.8
                )
            axis.set_title(f"{row.title} · {plane}", fontsize=8)
            axis.axis("off")
    figure.tight_layout()
    buffer = BytesIO()
    figure.savefig(buffer, format="png")
    return buffer.getvalue()


def write_triplanar(rows: Sequence[GalleryRow], window: tuple[float, float], path: Path) -> None:
    """Write :func:`triplanar_png` to ``path`` atomically."""
    atomic_write_bytes(path, triplanar_png(rows, window))
