"""Simulated hospitals: how each site's scanner, protocol and cohort differ.

Every site gets its own gain and offset, noise level, voxel spacing, field of view, stored
direction and typical tumour size, all drawn from the run's seed. Each property is drawn by
stratified sampling: the range is cut into one stratum per site and every site gets a different
stratum (in random order), so even two sites differ clearly in every property.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from common.config import FedsynthConfig, PhantomConfig
from common.data.imageio import Geometry
from common.errors import ConfigError
from common.seeding import numpy_rng

MODALITIES = ("ct", "mri")

REFERENCE_FOV_MM = 200.0
"""Side of the reference field of view; the reference grid has ``phantoms.size`` voxels across
it. 200 mm holds an adult neck or head with a margin, as a diagnostic scan does."""

INTENSITY_UNIT = {"ct": 1000.0, "mri": 1000.0}
"""What noise levels and offsets are fractions of: 1000 HU (air to water) for CT, the white-matter
intensity of the phantom for MRI."""

WORLD_CENTRE_MM = (0.0, 0.0, 0.0)
"""Every site's grid is centred here, the centre of the anatomy's frame."""

STRATUM_JITTER = 0.25
"""How far, as a fraction of its stratum, a site's draw may stray from the stratum's centre."""

MIN_SITE_VOXELS = 8
"""No site grid is thinner than this many voxels along any axis."""

STORED_DIRECTIONS: tuple[tuple[float, ...], ...] = (
    (1.0, 0.0, 0.0, 0.0, 1.0, 0.0, 0.0, 0.0, 1.0),
    (-1.0, 0.0, 0.0, 0.0, -1.0, 0.0, 0.0, 0.0, 1.0),
    (1.0, 0.0, 0.0, 0.0, -1.0, 0.0, 0.0, 0.0, -1.0),
)
"""Direction matrices sites store their arrays in: LPS as DICOM and ITK write it; RAS as many NIfTI
converters write it; and rows anterior-first with slices top-down. Sites take them in turn."""


@dataclass(frozen=True)
class SiteProfile:
    """One simulated hospital: its scanner, protocol and patients' typical tumour size."""

    index: int
    name: str
    modality: str
    shape: tuple[int, int, int]
    spacing: tuple[float, float, float]
    direction: tuple[float, ...]
    gain: float
    offset: float
    noise_level: float
    tumour_scale: float

    @property
    def noise_sd(self) -> float:
        """Standard deviation of the noise in image units (HU for CT)."""
        return self.noise_level * INTENSITY_UNIT[self.modality]

    @property
    def geometry(self) -> Geometry:
        """The site's voxel grid, centred on the anatomy whatever the stored direction."""
        direction = np.asarray(self.direction).reshape(3, 3)
        half_extent = np.asarray(self.spacing) * (np.asarray(self.shape) - 1) / 2.0
        origin = np.asarray(WORLD_CENTRE_MM) - direction @ half_extent
        return Geometry(
            size=self.shape,
            spacing=self.spacing,
            origin=(float(origin[0]), float(origin[1]), float(origin[2])),
            direction=self.direction,
        )

    def describe(self) -> str:
        """One line for logs: how this site differs."""
        flips = "".join("-" if self.direction[4 * i] < 0 else "+" for i in range(3))
        return (
            f"{self.name}: {'x'.join(map(str, self.shape))} voxels of "
            f"{'x'.join(f'{s:.2f}' for s in self.spacing)} mm, axes {flips}, "
            f"gain {self.gain:.3f}, offset {self.offset:+.1f}, noise sd {self.noise_sd:.1f}, "
            f"tumour scale {self.tumour_scale:.2f}"
        )


def check_modality(modality: str) -> None:
    """Raise :class:`ConfigError` unless ``modality`` is one the phantoms can draw."""
    if modality not in MODALITIES:
        raise ConfigError(f"modality {modality!r} is not one of {', '.join(MODALITIES)}")


def site_name(index: int, sites: int) -> str:
    """The folder name of site ``index`` (0-based) of ``sites``: site-01, site-02, ..."""
    return f"site-{index + 1:0{max(2, len(str(sites)))}d}"


def stratified(rng: np.random.Generator, count: int) -> np.ndarray:
    """``count`` values in [-1, 1], each in its own equal stratum, in random order."""
    strata = rng.permutation(count)
    jitter = rng.uniform(-STRATUM_JITTER, STRATUM_JITTER, size=count)
    return -1.0 + 2.0 * (strata + 0.5 + jitter) / count


def _between(low: float, high: float, u: np.ndarray) -> np.ndarray:
    return low + (high - low) * (u + 1.0) / 2.0


def _shape(fov_mm: float, spacing_mm: float) -> int:
    return max(MIN_SITE_VOXELS, round(fov_mm / spacing_mm))


def site_profiles(modality: str, config: FedsynthConfig) -> list[SiteProfile]:
    """Every site's profile for ``modality``, drawn from ``config.seed``.

    Raises:
        ConfigError: the modality is not 'ct' or 'mri'.
    """
    check_modality(modality)
    ph: PhantomConfig = config.phantoms
    rng = numpy_rng(config.seed, "phantoms", modality, "sites")
    n = ph.sites
    gain = 1.0 + ph.site_intensity_scale * stratified(rng, n)
    offset = ph.site_intensity_offset * INTENSITY_UNIT[modality] * stratified(rng, n)
    noise = _between(ph.noise_min, ph.noise_max, stratified(rng, n))
    in_plane = (1.0 + ph.site_spacing_jitter) ** stratified(rng, n)
    through_plane = (1.0 + ph.site_spacing_jitter) ** stratified(rng, n)
    fov_in_plane = (1.0 + ph.site_fov_jitter) ** stratified(rng, n)
    fov_through_plane = (1.0 + ph.site_fov_jitter) ** stratified(rng, n)
    tumour = 1.0 + ph.site_tumour_scale * stratified(rng, n)
    turns = rng.permutation(n)
    reference = REFERENCE_FOV_MM / ph.size
    profiles = []
    for i in range(n):
        spacing = (reference * in_plane[i], reference * in_plane[i], reference * through_plane[i])
        fov = (REFERENCE_FOV_MM * fov_in_plane[i],) * 2 + (REFERENCE_FOV_MM * fov_through_plane[i],)
        profiles.append(
            SiteProfile(
                index=i,
                name=site_name(i, n),
                modality=modality,
                shape=(
                    _shape(fov[0], spacing[0]),
                    _shape(fov[1], spacing[1]),
                    _shape(fov[2], spacing[2]),
                ),
                spacing=(float(spacing[0]), float(spacing[1]), float(spacing[2])),
                direction=STORED_DIRECTIONS[turns[i] % len(STORED_DIRECTIONS)],
                gain=float(gain[i]),
                offset=float(offset[i]),
                noise_level=float(noise[i]),
                tumour_scale=float(tumour[i]),
            )
        )
    return profiles
