"""Shapes in millimetres, as approximate signed distances: negative inside, zero on the surface.

Signed distances combine simply (``np.minimum`` is a union, ``np.maximum`` an intersection) and
give shells of a given thickness, such as the cortex around trabecular bone, for free.
"""

from __future__ import annotations

import numpy as np


def ellipse_radius(u: np.ndarray, v: np.ndarray, semi_u: float, semi_v: float) -> np.ndarray:
    """Normalised radius of the points (u, v) in an axis-aligned ellipse: 1 on its edge."""
    return np.sqrt((u / semi_u) ** 2 + (v / semi_v) ** 2)


def ellipsoid_radius(
    x: np.ndarray, y: np.ndarray, z: np.ndarray, semi_axes: tuple[float, float, float]
) -> np.ndarray:
    """Normalised radius of the points in an axis-aligned ellipsoid centred at 0: 1 on its skin."""
    return np.sqrt((x / semi_axes[0]) ** 2 + (y / semi_axes[1]) ** 2 + (z / semi_axes[2]) ** 2)


def ellipse_distance(u: np.ndarray, v: np.ndarray, semi_u: float, semi_v: float) -> np.ndarray:
    """Approximate signed distance (mm) to an axis-aligned ellipse centred at 0."""
    return (ellipse_radius(u, v, semi_u, semi_v) - 1.0) * min(semi_u, semi_v)


def slab_distance(z: np.ndarray, centre: float, half_thickness: float) -> np.ndarray:
    """Signed distance (mm) to the slab ``|z - centre| <= half_thickness``."""
    return np.abs(z - centre) - half_thickness


def periodic(z: np.ndarray, phase: float, period: float) -> np.ndarray:
    """``z`` folded into one period, centred on 0: repeats a shape every ``period`` mm."""
    return np.mod(z - phase, period) - period / 2.0


def inside(distance: np.ndarray) -> np.ndarray:
    """Where a signed distance says the point is inside the shape."""
    return distance <= 0.0


def shell(distance: np.ndarray, thickness: float) -> np.ndarray:
    """The inner skin of a shape, ``thickness`` mm deep."""
    return (distance <= 0.0) & (distance > -thickness)
