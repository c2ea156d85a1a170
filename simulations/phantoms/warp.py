"""How one case's body differs from the average: a random affine plus a smooth deformation.

A :class:`CaseWarp` maps world points (LPS, mm) to the anatomy's own frame, where the organs are
drawn at their average positions. Rotating, stretching, shifting and bending this map makes
every case a different shape while the anatomy stays anatomical.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy.spatial.transform import Rotation

from simulations.phantoms.fields import SmoothField, smooth_field

Coords = tuple[np.ndarray, np.ndarray, np.ndarray]
"""Three arrays of the same shape: x, y and z in millimetres."""

ROTATION_DEG = 6.0
"""Largest rotation of a case about each axis (patients lie a little tilted)."""

SCALE = 0.08
"""Largest relative stretch of a case along each axis (body habitus)."""

SHIFT_MM = 6.0
"""Largest shift of a case along each axis (positioning on the table)."""

BEND_MM = 3.0
"""Typical size of the smooth deformation, in millimetres (the fields have unit variance)."""

BEND_WAVELENGTH_MM = 90.0
"""Length scale of the smooth deformation: bends whole regions, not single voxels."""


@dataclass(frozen=True)
class CaseWarp:
    """World (LPS, mm) to anatomy frame: ``matrix @ (p - shift) + bend(p)``."""

    matrix: np.ndarray
    shift: np.ndarray
    bend: tuple[SmoothField, SmoothField, SmoothField]

    def __call__(self, x: np.ndarray, y: np.ndarray, z: np.ndarray) -> Coords:
        """The anatomy-frame coordinates of the world points (x, y, z)."""
        return self.affine(x, y, z, self.displacement(x, y, z))

    def displacement(self, x: np.ndarray, y: np.ndarray, z: np.ndarray) -> Coords:
        """The smooth bend (mm) at the world points (x, y, z)."""
        return (
            BEND_MM * self.bend[0](x, y, z),
            BEND_MM * self.bend[1](x, y, z),
            BEND_MM * self.bend[2](x, y, z),
        )

    def affine(self, x: np.ndarray, y: np.ndarray, z: np.ndarray, displacement: Coords) -> Coords:
        """The anatomy-frame coordinates of (x, y, z), given the bend there."""
        sx, sy, sz = self.shift.tolist()
        centred = (x - sx, y - sy, z - sz)
        out = []
        for row in range(3):
            m = self.matrix[row].tolist()
            linear = m[0] * centred[0] + m[1] * centred[1] + m[2] * centred[2]
            out.append(linear + displacement[row])
        return out[0], out[1], out[2]


def random_warp(rng: np.random.Generator) -> CaseWarp:
    """Draw one case's rotation, stretch, shift and bend."""
    angles = rng.uniform(-ROTATION_DEG, ROTATION_DEG, size=3)
    rotation = Rotation.from_euler("xyz", angles, degrees=True).as_matrix()
    stretch = rng.uniform(1.0 - SCALE, 1.0 + SCALE, size=3)
    forward = rotation @ np.diag(stretch)
    shift = rng.uniform(-SHIFT_MM, SHIFT_MM, size=3)
    bend = (
        smooth_field(rng, BEND_WAVELENGTH_MM),
        smooth_field(rng, BEND_WAVELENGTH_MM),
        smooth_field(rng, BEND_WAVELENGTH_MM),
    )
    return CaseWarp(matrix=np.linalg.inv(forward), shift=shift, bend=bend)
