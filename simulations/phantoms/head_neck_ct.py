"""Head-and-neck CT in Hounsfield units, with a low-contrast tumour at the airway wall.

The anatomy frame is LPS in mm, centred in the neck: +x patient left, +y posterior, +z superior.
From outside in: air, subcutaneous fat, soft tissue (muscle, glands), the airway (anterior), the
cervical spine (posterior: vertebral bodies with their arches, cortical shell around trabecular
bone), the mandible (a U-shaped arc, anterior, upper slices) and the skull base (a plate in the
top slices). Labels: 1 = tumour, 2 = bone (cortical and trabecular).
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import IntEnum

import numpy as np

from common.config import PhantomConfig
from common.data.schema import HEAD_NECK_CT
from simulations.phantoms import scanner
from simulations.phantoms.fields import SmoothField, smooth_field
from simulations.phantoms.profiles import SiteProfile
from simulations.phantoms.render import RenderedCase, label_table, labels_of, mix, render
from simulations.phantoms.shapes import (
    ellipse_distance,
    ellipse_radius,
    inside,
    periodic,
    shell,
    slab_distance,
)
from simulations.phantoms.tumour import (
    LOBULATION,
    TumourShape,
    draw_radius,
    draw_shape,
    resolvable_mm,
)
from simulations.phantoms.warp import random_warp


class Tissue(IntEnum):
    """Tissue classes of the neck, in the order they are painted."""

    AIR = 0
    FAT = 1
    SOFT_TISSUE = 2
    AIRWAY = 3
    TUMOUR = 4
    TRABECULAR = 5
    CORTICAL = 6


# Hounsfield units (typical values at 120 kVp).
AIR_HU = -1000.0
FAT_HU = -100.0
SOFT_TISSUE_HU = 40.0
TUMOUR_CONTRAST_HU = 40.0
"""Mean enhancement of a squamous-cell carcinoma over muscle: low contrast."""
TUMOUR_TEXTURE_HU = 12.0
"""Standard deviation of the tumour's heterogeneous texture."""
TUMOUR_TEXTURE_WAVELENGTH_MM = 8.0
TRABECULAR_HU = 350.0
TRABECULAR_TEXTURE_HU = 50.0
TRABECULAR_TEXTURE_WAVELENGTH_MM = 6.0
CORTICAL_HU = 1200.0

# Anatomy, in mm, in the anatomy frame.
BODY_SEMI_AXES_MM = (62.0, 58.0)
"""Skin outline of the neck: left-right and antero-posterior semi-axes."""
FAT_MM = 6.0
"""Subcutaneous fat thickness."""
AIRWAY_CENTRE_Y_MM = -22.0
AIRWAY_SEMI_AXES_MM = (9.0, 6.0)
AIRWAY_TOP_MM = 62.0
"""The nasopharynx ends under the skull base."""
VERTEBRA_CENTRE_Y_MM = 0.0
VERTEBRA_SEMI_AXES_MM = (9.0, 8.0)
VERTEBRA_HALF_HEIGHT_MM = 7.0
VERTEBRA_PITCH_MM = 18.0
"""One vertebral body and one disc."""
CANAL_CENTRE_Y_MM = 16.0
CANAL_RADIUS_MM = 7.0
ARCH_THICKNESS_MM = 5.0
"""Pedicles and laminae: a ring of bone around the spinal canal."""
SPINOUS_HALF_WIDTH_MM = 3.0
SPINOUS_END_Y_MM = 42.0
COLUMN_TOP_MM = 68.0
MANDIBLE_CENTRE_Y_MM = -8.0
MANDIBLE_SEMI_AXES_MM = (40.0, 40.0)
"""The arc's centre line: the front half of this ellipse (the chin is anterior, -y)."""
MANDIBLE_HALF_THICKNESS_MM = 5.0
MANDIBLE_CENTRE_Z_MM = 35.0
MANDIBLE_HALF_HEIGHT_MM = 14.0
SKULL_BASE_Z_MM = 80.0
SKULL_BASE_HALF_THICKNESS_MM = 4.0
SKULL_BASE_CENTRE_Y_MM = 5.0
SKULL_BASE_SEMI_AXES_MM = (52.0, 50.0)
FORAMEN_MAGNUM_RADIUS_MM = 14.0
CORTEX_MM = 2.5
"""Cortical shell thickness of every bone."""
ANATOMY_JITTER = 0.1
"""Largest relative size change of the airway between cases."""
TUMOUR_LEVEL_MM = (-10.0, 15.0)
"""Heights of the oropharynx and hypopharynx, where the tumour sits."""
TUMOUR_ANGLE_DEG = 45.0
"""The tumour grows from the airway's wall within this angle of the left or right direction."""
TUMOUR_WALL_DEPTH = 1.1
"""The tumour's centre lies this multiple of its radius outside the airway wall: it abuts the
mucosa, with little of it mixed into the lumen's voxels."""

LABEL_OF_TISSUE = label_table(
    Tissue,
    {
        Tissue.TUMOUR: HEAD_NECK_CT.labels["tumour"],
        Tissue.TRABECULAR: HEAD_NECK_CT.labels["bone"],
        Tissue.CORTICAL: HEAD_NECK_CT.labels["bone"],
    },
)
"""The label of each tissue class: tumour 1, cortical and trabecular bone 2, the rest 0."""


@dataclass(frozen=True)
class Neck:
    """One patient's neck: what differs from the average besides the case's warp."""

    airway_semi_axes: tuple[float, float]
    vertebra_phase_mm: float
    tumour: TumourShape
    tumour_texture: SmoothField
    trabecular_texture: SmoothField


def draw_neck(rng: np.random.Generator, profile: SiteProfile, config: PhantomConfig) -> Neck:
    """Draw one patient's neck and tumour."""
    jitter = rng.uniform(1.0 - ANATOMY_JITTER, 1.0 + ANATOMY_JITTER)
    airway = (AIRWAY_SEMI_AXES_MM[0] * jitter, AIRWAY_SEMI_AXES_MM[1] * jitter)
    radius = draw_radius(rng, profile, config)
    side = rng.choice((-1.0, 1.0))
    angle = np.deg2rad(rng.uniform(-TUMOUR_ANGLE_DEG, TUMOUR_ANGLE_DEG))
    reach = float(np.mean(airway)) + TUMOUR_WALL_DEPTH * radius
    centre = (
        float(side * np.cos(angle) * reach),
        float(AIRWAY_CENTRE_Y_MM + np.sin(angle) * reach),
        float(rng.uniform(*TUMOUR_LEVEL_MM)),
    )
    return Neck(
        airway_semi_axes=airway,
        vertebra_phase_mm=float(rng.uniform(0.0, VERTEBRA_PITCH_MM)),
        tumour=draw_shape(rng, centre, radius, resolvable_mm(profile)),
        tumour_texture=smooth_field(rng, TUMOUR_TEXTURE_WAVELENGTH_MM),
        trabecular_texture=smooth_field(rng, TRABECULAR_TEXTURE_WAVELENGTH_MM),
    )


def spine_distance(neck: Neck, x: np.ndarray, y: np.ndarray, z: np.ndarray) -> np.ndarray:
    """Signed distance to the cervical spine: bodies, arches and spinous processes."""
    level = slab_distance(
        periodic(z, neck.vertebra_phase_mm, VERTEBRA_PITCH_MM), 0.0, VERTEBRA_HALF_HEIGHT_MM
    )
    body = ellipse_distance(x, y - VERTEBRA_CENTRE_Y_MM, *VERTEBRA_SEMI_AXES_MM)
    ring = np.hypot(x, y - CANAL_CENTRE_Y_MM) - CANAL_RADIUS_MM - ARCH_THICKNESS_MM / 2.0
    arch = np.abs(ring) - ARCH_THICKNESS_MM / 2.0
    spinous = np.maximum(
        np.abs(x) - SPINOUS_HALF_WIDTH_MM,
        slab_distance(
            y,
            (CANAL_CENTRE_Y_MM + SPINOUS_END_Y_MM) / 2.0,
            (SPINOUS_END_Y_MM - CANAL_CENTRE_Y_MM) / 2.0,
        ),
    )
    vertebrae = np.maximum(np.minimum(np.minimum(body, arch), spinous), level)
    return np.maximum(vertebrae, z - COLUMN_TOP_MM)


def mandible_distance(x: np.ndarray, y: np.ndarray, z: np.ndarray) -> np.ndarray:
    """Signed distance to the mandible: a U-shaped bar, open posteriorly."""
    arc = ellipse_distance(x, y - MANDIBLE_CENTRE_Y_MM, *MANDIBLE_SEMI_AXES_MM)
    bar = np.abs(arc) - MANDIBLE_HALF_THICKNESS_MM
    height = slab_distance(z, MANDIBLE_CENTRE_Z_MM, MANDIBLE_HALF_HEIGHT_MM)
    return np.maximum(np.maximum(bar, height), y - MANDIBLE_CENTRE_Y_MM)


def skull_base_distance(x: np.ndarray, y: np.ndarray, z: np.ndarray) -> np.ndarray:
    """Signed distance to the skull base: a plate with the foramen magnum over the canal."""
    plate = np.maximum(
        slab_distance(z, SKULL_BASE_Z_MM, SKULL_BASE_HALF_THICKNESS_MM),
        ellipse_distance(x, y - SKULL_BASE_CENTRE_Y_MM, *SKULL_BASE_SEMI_AXES_MM),
    )
    foramen = FORAMEN_MAGNUM_RADIUS_MM - np.hypot(x, y - CANAL_CENTRE_Y_MM)
    return np.maximum(plate, foramen)


def classify(neck: Neck, x: np.ndarray, y: np.ndarray, z: np.ndarray) -> np.ndarray:
    """The tissue class at each point of the anatomy frame."""
    tissue = np.full(np.shape(x), Tissue.AIR, dtype=np.uint8)
    skin = ellipse_distance(x, y, *BODY_SEMI_AXES_MM)
    flesh = skin + FAT_MM
    tissue[inside(skin)] = Tissue.FAT
    tissue[inside(flesh)] = Tissue.SOFT_TISSUE
    airway = (ellipse_radius(x, y - AIRWAY_CENTRE_Y_MM, *neck.airway_semi_axes) <= 1.0) & (
        z <= AIRWAY_TOP_MM
    )
    tissue[airway & inside(flesh)] = Tissue.AIRWAY
    tumour = neck.tumour.normalised_radii(x, y, z, (LOBULATION,), within=1.0)[0] <= 1.0
    tissue[tumour & inside(flesh)] = Tissue.TUMOUR
    bones = np.minimum(
        np.minimum(spine_distance(neck, x, y, z), mandible_distance(x, y, z)),
        skull_base_distance(x, y, z),
    )
    bones = np.maximum(bones, flesh)
    tissue[inside(bones)] = Tissue.TRABECULAR
    tissue[shell(bones, CORTEX_MM)] = Tissue.CORTICAL
    return tissue


def render_ct(
    profile: SiteProfile,
    config: PhantomConfig,
    rng: np.random.Generator,
    noise_rng: np.random.Generator,
) -> RenderedCase:
    """One head-and-neck CT case on the site's grid: int16 HU image, uint8 labels."""
    neck = draw_neck(rng, profile, config)
    warp = random_warp(rng)
    scale = config.anatomy_scale
    drawn = render(
        profile.geometry,
        config.supersample,
        warp,
        lambda x, y, z: classify(neck, x / scale, y / scale, z / scale),
        len(Tissue),
    )
    centres = drawn.centres
    tumour = SOFT_TISSUE_HU + TUMOUR_CONTRAST_HU
    trabecular = TRABECULAR_HU + TRABECULAR_TEXTURE_HU * neck.trabecular_texture(*centres)
    hu: dict[Tissue, float | np.ndarray] = {
        Tissue.AIR: AIR_HU,
        Tissue.FAT: FAT_HU,
        Tissue.SOFT_TISSUE: SOFT_TISSUE_HU,
        Tissue.AIRWAY: AIR_HU,
        Tissue.TUMOUR: tumour + TUMOUR_TEXTURE_HU * neck.tumour_texture(*centres),
        Tissue.TRABECULAR: trabecular,
        Tissue.CORTICAL: CORTICAL_HU,
    }
    contrast = config.contrast_scale
    values = [
        hu[t]
        if t in (Tissue.AIR, Tissue.AIRWAY)
        else SOFT_TISSUE_HU + contrast * (hu[t] - SOFT_TISSUE_HU)
        for t in Tissue
    ]
    image = scanner.blur(mix(drawn.fractions, values))
    image = scanner.gaussian_noise(scanner.calibrate(image, profile), profile, noise_rng)
    limits = np.iinfo(np.int16)
    return RenderedCase(
        image=np.clip(np.rint(image), limits.min, limits.max).astype(np.int16),
        label=labels_of(drawn.tissue, LABEL_OF_TISSUE),
        tissue=drawn.tissue,
    )
