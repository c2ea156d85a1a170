"""Tri-planar galleries: slices through the tumour, drawn as a PNG."""

from __future__ import annotations

from io import BytesIO
from pathlib import Path

import numpy as np
from matplotlib.image import imread

from common.reports.figures import (
    LABEL_COLOURS,
    GalleryRow,
    triplanar_png,
    triplanar_slices,
    write_triplanar,
)


def test_gallery_cuts_through_the_tumour_centroid() -> None:
    image = np.zeros((10, 12, 14), dtype=np.float32)
    label = np.zeros_like(image, dtype=np.uint8)
    label[6:9, 2:5, 9:12] = 1  # centroid (7, 3, 10)
    image[7, 3, 10] = 5.0
    row = GalleryRow("case", image, label, (1.0, 1.0, 2.0))
    axial, coronal, sagittal = triplanar_slices(row)
    assert axial[1].max() == 5.0  # the axial slice holds the marked centre voxel
    assert coronal[1].max() == 5.0
    assert sagittal[1].max() == 5.0
    assert (axial[3], coronal[3], sagittal[3]) == (1.0, 2.0, 2.0)  # aspect from spacing


def test_a_given_centre_overrides_the_tumour_centroid() -> None:
    image = np.zeros((10, 12, 14), dtype=np.float32)
    label = np.zeros_like(image, dtype=np.uint8)
    label[6:9, 2:5, 9:12] = 1  # centroid (7, 3, 10), not where the planes are asked to cross
    image[5, 6, 7] = 5.0
    row = GalleryRow("case", image, label, (1.0, 1.0, 2.0), centre=(5, 6, 7))
    axial, coronal, sagittal = triplanar_slices(row)
    assert (axial[1].max(), coronal[1].max(), sagittal[1].max()) == (5.0, 5.0, 5.0)
    assert axial[2].max() == 0  # slice 5 misses the tumour (slices 6-8)


def test_png_is_written(tmp_path: Path) -> None:
    rows = [
        GalleryRow(
            "a", np.random.default_rng(0).random((8, 8, 8)), np.zeros((8, 8, 8)), (1.0, 1.0, 1.0)
        )
    ]
    assert triplanar_png(rows, (0.0, 1.0))[:4] == b"\x89PNG"
    write_triplanar(rows, (0.0, 1.0), tmp_path / "g.png")
    assert (tmp_path / "g.png").stat().st_size > 1000


def _pixels_of(png: bytes, colour: str) -> int:
    """Pixels of a PNG within a few levels of ``colour`` ('#rrggbb')."""
    rgb = (imread(BytesIO(png), format="png")[..., :3] * 255).round()
    wanted = np.array([int(colour[i : i + 2], 16) for i in (1, 3, 5)], dtype=float)
    return int((np.abs(rgb - wanted).max(axis=-1) <= 8).sum())


def test_each_label_value_keeps_its_colour_whatever_else_the_slice_holds() -> None:
    """A case with bone (2) but no tumour (1) is outlined in bone's colour, not tumour's: the
    demo's picture once drew a tumour-free synthetic case's bone as tumour."""
    image = np.zeros((12, 12, 12), dtype=np.float32)
    bone_only = np.zeros((12, 12, 12), dtype=np.uint8)
    bone_only[3:9, 3:9, 1:5] = 2
    both = bone_only.copy()
    both[3:9, 3:9, 7:11] = 1  # beside the bone: the axial plane through it cuts both
    tumour, bone = LABEL_COLOURS[0], LABEL_COLOURS[1]
    alone = triplanar_png([GalleryRow("bone", image, bone_only, (1.0, 1.0, 1.0))], (0.0, 1.0))
    assert _pixels_of(alone, bone) > 50
    assert _pixels_of(alone, tumour) == 0
    mixed = triplanar_png([GalleryRow("both", image, both, (1.0, 1.0, 1.0))], (0.0, 1.0))
    assert _pixels_of(mixed, bone) > 50
    assert _pixels_of(mixed, tumour) > 10
