"""Drawing anatomy defined in millimetres on a site's voxel grid, with the partial-volume effect.

Each voxel is sampled at ``supersample`` points per axis; the share of each tissue among them is
the voxel's tissue fractions, and the image mixes the tissues' intensities by those fractions.
Labels are the tissue at the voxel centre (nearest-neighbour), as a rater would draw them.
"""

from __future__ import annotations

import itertools
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass

import numpy as np

from common.data.imageio import Geometry
from simulations.phantoms.warp import CaseWarp, Coords

Classifier = Callable[[np.ndarray, np.ndarray, np.ndarray], np.ndarray]
"""Maps anatomy-frame coordinates (mm) to tissue classes (small integers)."""


@dataclass(frozen=True)
class Rendering:
    """One case drawn on one grid; arrays in numpy (z, y, x) order."""

    fractions: np.ndarray
    tissue: np.ndarray
    centres: Coords


@dataclass(frozen=True)
class RenderedCase:
    """A finished case as arrays in (z, y, x) order, before it becomes SimpleITK images.

    ``tissue`` is the tissue class at each voxel centre: ground truth for tests and inspection.
    """

    image: np.ndarray
    label: np.ndarray
    tissue: np.ndarray


def world_coordinates(geometry: Geometry, offset: Sequence[float] = (0.0, 0.0, 0.0)) -> Coords:
    """World (LPS, mm) coordinates of every voxel, shifted by ``offset`` voxels (x, y, z).

    float32 (steps of about 0.01 µm at 100 mm): precise enough, and fast to evaluate fields at.
    """
    direction = np.asarray(geometry.direction).reshape(3, 3)
    steps = []
    for axis, (count, spacing, shift) in enumerate(
        zip(geometry.size, geometry.spacing, offset, strict=True)
    ):
        shape = [1, 1, 1]
        shape[2 - axis] = count
        steps.append(((np.arange(count) + shift) * spacing).reshape(shape))
    full = (geometry.size[2], geometry.size[1], geometry.size[0])
    coords = []
    for row in range(3):
        value = geometry.origin[row] + sum(direction[row, col] * steps[col] for col in range(3))
        coords.append(np.broadcast_to(value, full).astype(np.float32))
    return coords[0], coords[1], coords[2]


def sub_voxel_offsets(supersample: int) -> Iterator[tuple[float, float, float]]:
    """Offsets (in voxels) of the ``supersample**3`` sample points of a voxel."""
    steps = [(k + 0.5) / supersample - 0.5 for k in range(supersample)]
    for dz, dy, dx in itertools.product(steps, repeat=3):
        yield dx, dy, dz


def render(
    geometry: Geometry,
    supersample: int,
    warp: CaseWarp,
    classify: Classifier,
    classes: int,
) -> Rendering:
    """Tissue fractions of every voxel, and the tissue at every voxel centre.

    The case's bend is smooth over many voxels, so it is evaluated once at each voxel centre
    and shared by the voxel's sub-samples (the rotation, stretch and shift apply exactly).
    """
    full = (geometry.size[2], geometry.size[1], geometry.size[0])
    world = world_coordinates(geometry)
    bend = warp.displacement(*world)
    fractions = np.zeros((classes, *full), dtype=np.float32)
    for offset in sub_voxel_offsets(supersample):
        tissue = classify(*warp.affine(*world_coordinates(geometry, offset), bend))
        for value in range(classes):
            fractions[value] += tissue == value
    fractions /= supersample**3
    centres = warp.affine(*world, bend)
    return Rendering(fractions=fractions, tissue=classify(*centres), centres=centres)


def mix(fractions: np.ndarray, values: Sequence[float | np.ndarray]) -> np.ndarray:
    """The image: each voxel's tissue intensities weighted by its tissue fractions."""
    image = np.zeros(fractions.shape[1:], dtype=np.float64)
    for share, value in zip(fractions, values, strict=True):
        image += share * value
    return image


def label_table(tissues: Iterable[int], labels: Mapping[int, int]) -> tuple[int, ...]:
    """A tissue-to-label table: ``labels[tissue]`` where given, 0 (background) elsewhere."""
    return tuple(labels.get(tissue, 0) for tissue in tissues)


def labels_of(tissue: np.ndarray, label_of_tissue: Sequence[int]) -> np.ndarray:
    """The label map (uint8) of a tissue map, through a tissue-to-label table."""
    return np.asarray(label_of_tissue, dtype=np.uint8)[tissue]
