"""Tumours: lobulated ellipsoids whose size follows the config and the site's typical size.

A tumour is described by its normalised radius, 1 on its surface: compartments (a necrotic core,
an oedema halo) are the levels below or above 1. Sizes are drawn uniformly between
``phantoms.tumour-radius-min-mm`` and ``-max-mm``, times the site's tumour scale, and never below
what the site's grid can show, so that every case has every label (on grids of 16 voxels a side
or more; coarser grids cannot hold the anatomy).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from common.config import PhantomConfig
from simulations.phantoms.fields import FIELD_BOUND, SmoothField, smooth_field
from simulations.phantoms.profiles import SiteProfile
from simulations.phantoms.shapes import ellipsoid_radius

ELONGATION = 0.2
"""Largest relative difference of a tumour's three semi-axes from its radius."""

LOBULATION = 0.12
"""Relative depth of a tumour's lobes (the surface moves by this fraction of the radius)."""

LOBE_WAVELENGTH_MM = 18.0
"""Size of a tumour's lobes."""

RESOLVABLE_VOXELS = 1.25
"""A tumour compartment is at least this many of the site's largest voxel side thick, so that
some voxel centre falls inside it whatever the grid's phase, rotation and stretch."""


@dataclass(frozen=True)
class TumourShape:
    """Where a tumour is, how big and how lobulated."""

    centre: tuple[float, float, float]
    radius_mm: float
    semi_axes: tuple[float, float, float]
    lobes: SmoothField

    @property
    def smallest_semi_axis(self) -> float:
        """The tumour's smallest semi-axis, in mm."""
        return min(self.semi_axes)

    def normalised_radii(
        self,
        x: np.ndarray,
        y: np.ndarray,
        z: np.ndarray,
        lobulations: Sequence[float],
        within: float,
    ) -> list[np.ndarray]:
        """1 on the tumour's surface and below 1 inside, for each lobulation (how wavy it is).

        The lobes scale the radius by ``exp(lobulation * field)``: never zero or negative.
        Only points that may lie ``within`` this normalised radius are worked out; the others
        are ``inf``.
        """
        cx, cy, cz = self.centre
        rho = ellipsoid_radius(x - cx, y - cy, z - cz, self.semi_axes)
        near = rho <= within * np.exp(max(lobulations) * FIELD_BOUND)
        lobes = self.lobes(x[near], y[near], z[near])
        radii = []
        for lobulation in lobulations:
            radius = np.full(rho.shape, np.inf, dtype=rho.dtype)
            radius[near] = rho[near] * np.exp(-lobulation * lobes)
            radii.append(radius)
        return radii


def resolvable_mm(profile: SiteProfile) -> float:
    """The thinnest tumour compartment the site's grid can show, in mm."""
    return RESOLVABLE_VOXELS * max(profile.spacing)


def draw_radius(rng: np.random.Generator, profile: SiteProfile, config: PhantomConfig) -> float:
    """A tumour radius in mm: uniform in the configured range, times the site's tumour scale."""
    radius = rng.uniform(config.tumour_radius_min_mm, config.tumour_radius_max_mm)
    return float(radius * profile.tumour_scale)


def draw_shape(
    rng: np.random.Generator,
    centre: tuple[float, float, float],
    radius_mm: float,
    smallest_mm: float,
) -> TumourShape:
    """A lobulated ellipsoid at ``centre``; its smallest semi-axis is at least ``smallest_mm``."""
    ratios = rng.uniform(1.0 - ELONGATION, 1.0 + ELONGATION, size=3)
    ratios /= np.cbrt(np.prod(ratios))
    radius = max(radius_mm, smallest_mm / float(ratios.min()))
    semi = radius * ratios
    return TumourShape(
        centre=centre,
        radius_mm=radius,
        semi_axes=(float(semi[0]), float(semi[1]), float(semi[2])),
        lobes=smooth_field(rng, LOBE_WAVELENGTH_MM),
    )
