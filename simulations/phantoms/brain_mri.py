"""Brain glioma T1c MRI, with BraTS labels, in arbitrary positive units (white matter = 1000).

The anatomy frame is LPS in mm, centred in the head. From outside in: scalp (fat, bright on T1),
skull (dark), cerebrospinal fluid (dark), grey matter (cortex and deep nuclei), white matter
(brighter than grey on T1) with folded borders, the lateral ventricles and the interhemispheric
fissure (CSF). The glioma has a necrotic core (dark), an enhancing rim (bright after contrast)
and a halo of oedema (slightly darker than white matter) that spreads through the parenchyma.
A smooth bias field shades the image as a receive coil does. Labels follow BraTS 2023:
1 = necrotic core, 2 = oedema, 3 = enhancing tumour.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import IntEnum

import numpy as np

from common.config import PhantomConfig
from common.data.schema import BRAIN_GLIOMA_MRI
from simulations.phantoms import scanner
from simulations.phantoms.fields import SmoothField, smooth_field
from simulations.phantoms.profiles import INTENSITY_UNIT, SiteProfile
from simulations.phantoms.render import (
    RenderedCase,
    label_table,
    labels_of,
    mix,
    render,
    world_coordinates,
)
from simulations.phantoms.shapes import ellipsoid_radius
from simulations.phantoms.tumour import (
    LOBULATION,
    TumourShape,
    draw_radius,
    draw_shape,
    resolvable_mm,
)
from simulations.phantoms.warp import random_warp


class Tissue(IntEnum):
    """Tissue classes of the head, in the order they are painted."""

    BACKGROUND = 0
    SCALP = 1
    SKULL = 2
    CSF = 3
    GREY_MATTER = 4
    WHITE_MATTER = 5
    OEDEMA = 6
    ENHANCING = 7
    NECROTIC = 8


WHITE_MATTER = INTENSITY_UNIT["mri"]
"""T1c intensity of white matter; every other intensity is a multiple of it."""
INTENSITY = {
    Tissue.BACKGROUND: 0.0,
    Tissue.SCALP: 1.3 * WHITE_MATTER,
    Tissue.SKULL: 0.15 * WHITE_MATTER,
    Tissue.CSF: 0.25 * WHITE_MATTER,
    Tissue.GREY_MATTER: 0.68 * WHITE_MATTER,
    Tissue.WHITE_MATTER: WHITE_MATTER,
    Tissue.OEDEMA: 0.8 * WHITE_MATTER,
    Tissue.ENHANCING: 1.7 * WHITE_MATTER,
    Tissue.NECROTIC: 0.32 * WHITE_MATTER,
}
"""Typical T1 contrast after gadolinium: fat > enhancing tumour > WM > oedema > GM > necrosis,
CSF > bone."""
TISSUE_TEXTURE = 0.02
"""Standard deviation of normal tissue's texture, relative to its intensity."""
TUMOUR_TEXTURE = 0.08
"""Standard deviation of the tumour's heterogeneous texture, relative to its intensity."""
TEXTURE_WAVELENGTH_MM = 10.0
BIAS_SD = 0.06
"""Standard deviation of the multiplicative bias field (1 + BIAS_SD * smooth field)."""
BIAS_WAVELENGTH_MM = 300.0

# Anatomy, in mm, in the anatomy frame.
HEAD_SEMI_AXES_MM = (72.0, 90.0, 80.0)
"""Skin outline: left-right, antero-posterior and cranio-caudal semi-axes."""
SCALP_MM = 6.0
SKULL_MM = 7.0
CSF_MM = 3.0
CORTEX_MM = 4.0
"""Grey matter thickness, on average."""
GYRUS_DEPTH_MM = 3.0
"""How far, on average, the grey-white border folds in and out."""
GYRUS_WAVELENGTH_MM = 20.0
VENTRICLE_CENTRE_MM = (9.0, -5.0, 15.0)
"""Left lateral ventricle's centre; the right one mirrors it."""
VENTRICLE_SEMI_AXES_MM = (5.0, 25.0, 8.0)
DEEP_GREY_CENTRE_MM = (20.0, 0.0, 0.0)
"""Left basal ganglia and thalamus, as one block; the right one mirrors it."""
DEEP_GREY_SEMI_AXES_MM = (9.0, 16.0, 10.0)
FISSURE_HALF_WIDTH_MM = 1.5
FISSURE_BOTTOM_MM = 25.0
"""The interhemispheric fissure reaches down to the corpus callosum."""
ANATOMY_JITTER = 0.15
"""Largest relative size change of the ventricles between cases."""
TUMOUR_CENTRE_RANGE_MM = ((18.0, 32.0), (-30.0, 30.0), (0.0, 30.0))
"""Where a glioma's centre lies: distance from the midline (either side), y and z."""
NECROTIC_FRACTION = (0.4, 0.65)
"""The necrotic core's radius as a fraction of the enhancing tumour's."""
OEDEMA_REACH = (1.3, 1.8)
"""The oedema's outer radius as a multiple of the enhancing tumour's."""
OEDEMA_LOBULATION = 0.2
"""Oedema follows white-matter tracts: far more irregular than the tumour itself."""

LABEL_OF_TISSUE = label_table(
    Tissue,
    {
        Tissue.NECROTIC: BRAIN_GLIOMA_MRI.labels["necrotic_core"],
        Tissue.OEDEMA: BRAIN_GLIOMA_MRI.labels["oedema"],
        Tissue.ENHANCING: BRAIN_GLIOMA_MRI.labels["enhancing_tumour"],
    },
)
"""The BraTS label of each tissue class; healthy tissue is 0."""


@dataclass(frozen=True)
class Head:
    """One patient's head and glioma: what differs from the average besides the case's warp."""

    ventricle_scale: float
    gyri: SmoothField
    tumour: TumourShape
    necrotic_fraction: float
    oedema_reach: float
    texture: SmoothField
    bias: SmoothField


def _layer(depth_mm: float) -> tuple[float, float, float]:
    a, b, c = HEAD_SEMI_AXES_MM
    return a - depth_mm, b - depth_mm, c - depth_mm


def draw_head(rng: np.random.Generator, profile: SiteProfile, config: PhantomConfig) -> Head:
    """Draw one patient's head and glioma, each compartment thick enough for the site's grid."""
    side = rng.choice((-1.0, 1.0))
    (x_lo, x_hi), (y_lo, y_hi), (z_lo, z_hi) = TUMOUR_CENTRE_RANGE_MM
    centre = (
        float(side * rng.uniform(x_lo, x_hi)),
        float(rng.uniform(y_lo, y_hi)),
        float(rng.uniform(z_lo, z_hi)),
    )
    thinnest = resolvable_mm(profile)
    tumour = draw_shape(rng, centre, draw_radius(rng, profile, config), 2.0 * thinnest)
    margin = thinnest / tumour.smallest_semi_axis
    necrotic = float(np.clip(rng.uniform(*NECROTIC_FRACTION), margin, 1.0 - margin))
    return Head(
        ventricle_scale=float(rng.uniform(1.0 - ANATOMY_JITTER, 1.0 + ANATOMY_JITTER)),
        gyri=smooth_field(rng, GYRUS_WAVELENGTH_MM),
        tumour=tumour,
        necrotic_fraction=necrotic,
        oedema_reach=max(float(rng.uniform(*OEDEMA_REACH)), 1.0 + margin),
        texture=smooth_field(rng, TEXTURE_WAVELENGTH_MM),
        bias=smooth_field(rng, BIAS_WAVELENGTH_MM),
    )


def _paired(
    x: np.ndarray,
    y: np.ndarray,
    z: np.ndarray,
    centre: tuple[float, float, float],
    semi_axes: tuple[float, float, float],
) -> np.ndarray:
    """Inside a left structure or its right mirror image."""
    cx, cy, cz = centre
    return ellipsoid_radius(np.abs(x) - cx, y - cy, z - cz, semi_axes) <= 1.0


def classify(head: Head, x: np.ndarray, y: np.ndarray, z: np.ndarray) -> np.ndarray:
    """The tissue class at each point of the anatomy frame."""
    tissue = np.full(np.shape(x), Tissue.BACKGROUND, dtype=np.uint8)
    tissue[ellipsoid_radius(x, y, z, HEAD_SEMI_AXES_MM) <= 1.0] = Tissue.SCALP
    tissue[ellipsoid_radius(x, y, z, _layer(SCALP_MM)) <= 1.0] = Tissue.SKULL
    tissue[ellipsoid_radius(x, y, z, _layer(SCALP_MM + SKULL_MM)) <= 1.0] = Tissue.CSF
    pial = _layer(SCALP_MM + SKULL_MM + CSF_MM)
    brain = ellipsoid_radius(x, y, z, pial) <= 1.0
    tissue[brain] = Tissue.GREY_MATTER
    white = _layer(SCALP_MM + SKULL_MM + CSF_MM + CORTEX_MM)
    folds = 1.0 + GYRUS_DEPTH_MM / min(white) * head.gyri(x, y, z)
    tissue[ellipsoid_radius(x, y, z, white) <= folds] = Tissue.WHITE_MATTER
    tissue[_paired(x, y, z, DEEP_GREY_CENTRE_MM, DEEP_GREY_SEMI_AXES_MM)] = Tissue.GREY_MATTER
    a, b, c = (s * head.ventricle_scale for s in VENTRICLE_SEMI_AXES_MM)
    tissue[_paired(x, y, z, VENTRICLE_CENTRE_MM, (a, b, c))] = Tissue.CSF
    tissue[brain & (np.abs(x) <= FISSURE_HALF_WIDTH_MM) & (z >= FISSURE_BOTTOM_MM)] = Tissue.CSF
    parenchyma = (tissue == Tissue.GREY_MATTER) | (tissue == Tissue.WHITE_MATTER)
    core, halo = head.tumour.normalised_radii(
        x, y, z, (LOBULATION, OEDEMA_LOBULATION), within=head.oedema_reach
    )
    tissue[(halo <= head.oedema_reach) & parenchyma] = Tissue.OEDEMA
    tissue[(core <= 1.0) & brain] = Tissue.ENHANCING
    tissue[(core <= head.necrotic_fraction) & brain] = Tissue.NECROTIC
    return tissue


def contrasted(tissue: Tissue, contrast_scale: float) -> float:
    """The tissue's intensity with its difference from white matter scaled (background stays
    0, and nothing goes below it)."""
    if tissue == Tissue.BACKGROUND:
        return 0.0
    return max(0.0, WHITE_MATTER + contrast_scale * (INTENSITY[tissue] - WHITE_MATTER))


def render_mri(
    profile: SiteProfile,
    config: PhantomConfig,
    rng: np.random.Generator,
    noise_rng: np.random.Generator,
) -> RenderedCase:
    """One brain glioma T1c case on the site's grid: float32 image, uint8 BraTS labels."""
    head = draw_head(rng, profile, config)
    warp = random_warp(rng)
    geometry = profile.geometry
    scale = config.anatomy_scale
    drawn = render(
        geometry,
        config.supersample,
        warp,
        lambda x, y, z: classify(head, x / scale, y / scale, z / scale),
        len(Tissue),
    )
    texture = head.texture(*drawn.centres)
    tumour = (Tissue.OEDEMA, Tissue.ENHANCING, Tissue.NECROTIC)
    values = [
        contrasted(t, config.contrast_scale)
        * (1.0 + (TUMOUR_TEXTURE if t in tumour else TISSUE_TEXTURE) * texture)
        for t in Tissue
    ]
    image = scanner.blur(mix(drawn.fractions, values))
    image = image * (1.0 + BIAS_SD * head.bias(*world_coordinates(geometry)))
    image = np.maximum(scanner.calibrate(image, profile), 0.0)
    image = scanner.rician_noise(image, profile, noise_rng)
    return RenderedCase(
        image=image.astype(np.float32),
        label=labels_of(drawn.tissue, LABEL_OF_TISSUE),
        tissue=drawn.tissue,
    )
