"""Smooth random fields defined in millimetres, for textures, deformations and bias fields.

A field is a sum of plane waves with random directions and phases. It can be evaluated at any
point in space, so it does not depend on the voxel grid it is sampled on: the same case drawn on
two sites' grids has the same texture at the same place.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

WAVE_COUNT = 8
"""Plane waves summed per field: enough to look irregular, few enough to stay fast."""

FIELD_BOUND = float(np.sqrt(2.0 * WAVE_COUNT))
"""No field's value is larger than this in magnitude (every wave in phase)."""

WAVELENGTH_SPREAD = 0.3
"""Each wave's length is the field's wavelength times a factor within 1 ± this."""


@dataclass(frozen=True)
class SmoothField:
    """A random scalar field with zero mean and unit variance, smooth at ``wavelength`` mm."""

    wave_vectors: np.ndarray
    phases: np.ndarray

    def __call__(self, x: np.ndarray, y: np.ndarray, z: np.ndarray) -> np.ndarray:
        """The field's values at the points (x, y, z), in millimetres.

        Computed in the points' precision: float32 points (as the renderer uses) are fast.
        """
        total = np.zeros(np.broadcast_shapes(x.shape, y.shape, z.shape), dtype=x.dtype)
        for (kx, ky, kz), phase in zip(
            self.wave_vectors.tolist(), self.phases.tolist(), strict=True
        ):
            total += np.cos(kx * x + ky * y + kz * z + phase)
        return total * float(np.sqrt(2.0 / len(self.phases)))


def smooth_field(rng: np.random.Generator, wavelength_mm: float) -> SmoothField:
    """Draw a field whose waves are about ``wavelength_mm`` long, in random directions."""
    directions = rng.normal(size=(WAVE_COUNT, 3))
    directions /= np.linalg.norm(directions, axis=1, keepdims=True)
    lengths = wavelength_mm * rng.uniform(
        1.0 - WAVELENGTH_SPREAD, 1.0 + WAVELENGTH_SPREAD, size=(WAVE_COUNT, 1)
    )
    phases = rng.uniform(0.0, 2.0 * np.pi, size=WAVE_COUNT)
    return SmoothField(wave_vectors=2.0 * np.pi * directions / lengths, phases=phases)
