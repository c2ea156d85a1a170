"""Simulated hospitals differ in every property the config says they may, within its bounds."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest
import SimpleITK as sitk

from common.config import FedsynthConfig, PhantomConfig
from common.errors import ConfigError
from simulations.phantoms import site_profiles
from simulations.phantoms.profiles import (
    REFERENCE_FOV_MM,
    STORED_DIRECTIONS,
    site_name,
    stratified,
)

IDENTITY = (1.0, 0.0, 0.0, 0.0, 1.0, 0.0, 0.0, 0.0, 1.0)


def _config(seed: int = 42, **phantoms: float) -> FedsynthConfig:
    return FedsynthConfig(seed=seed, phantoms=PhantomConfig(**phantoms))  # type: ignore[arg-type]


def test_profiles_are_deterministic_and_follow_the_seed() -> None:
    assert site_profiles("ct", _config(42)) == site_profiles("ct", _config(42))
    assert site_profiles("ct", _config(42)) != site_profiles("ct", _config(43))
    assert site_profiles("ct", _config(42)) != site_profiles("mri", _config(42))


def test_without_jitter_every_site_has_the_reference_grid() -> None:
    config = _config(size=20, site_spacing_jitter=0.0, site_fov_jitter=0.0)
    for profile in site_profiles("ct", config):
        assert profile.shape == (20, 20, 20)
        assert profile.spacing == pytest.approx((REFERENCE_FOV_MM / 20,) * 3)


def test_spacing_and_shape_differ_between_sites_within_the_jitter() -> None:
    jitter, fov_jitter, size, sites = 0.2, 0.1, 32, 3
    config = _config(sites=sites, size=size, site_spacing_jitter=jitter, site_fov_jitter=fov_jitter)
    profiles = site_profiles("ct", config)
    reference = REFERENCE_FOV_MM / size
    for axis in (0, 2):
        values = sorted(p.spacing[axis] for p in profiles)
        assert reference / (1 + jitter) <= values[0]
        assert values[-1] <= reference * (1 + jitter)
        # One stratum per site: neighbours are at least half a stratum apart in log-spacing.
        gaps = np.diff(np.log(values)) / np.log(1 + jitter)
        assert gaps.min() >= 1.0 / sites - 1e-9
    low = size / ((1 + jitter) * (1 + fov_jitter))
    high = size * (1 + jitter) * (1 + fov_jitter)
    assert all(low - 1 <= n <= high + 1 for p in profiles for n in p.shape)
    assert len({p.shape for p in profiles}) == sites


def test_intensity_noise_and_tumour_scale_stay_in_their_ranges_and_differ() -> None:
    config = _config(
        sites=4,
        site_intensity_scale=0.1,
        site_intensity_offset=0.05,
        noise_min=0.01,
        noise_max=0.05,
        site_tumour_scale=0.4,
    )
    profiles = site_profiles("ct", config)
    gains = [p.gain for p in profiles]
    offsets = [p.offset for p in profiles]
    noises = [p.noise_level for p in profiles]
    tumours = [p.tumour_scale for p in profiles]
    assert all(0.9 <= g <= 1.1 for g in gains)
    assert all(-50.0 <= o <= 50.0 for o in offsets)  # 5 % of 1000 HU
    assert all(0.01 <= n <= 0.05 for n in noises)
    assert all(0.6 <= t <= 1.4 for t in tumours)
    for values, width in ((gains, 0.2), (offsets, 100.0), (noises, 0.04), (tumours, 0.8)):
        # Stratified: any two sites at least half a stratum (of 4) apart.
        assert np.diff(sorted(values)).min() >= width / 4 / 2 - 1e-9
    assert profiles[0].noise_sd == pytest.approx(1000.0 * profiles[0].noise_level)


def test_sites_store_their_axes_in_different_directions() -> None:
    two = site_profiles("ct", _config(sites=2))
    assert {p.direction for p in two} == {STORED_DIRECTIONS[0], STORED_DIRECTIONS[1]}
    assert IDENTITY in {p.direction for p in two}
    three = site_profiles("mri", _config(sites=3))
    assert {p.direction for p in three} == set(STORED_DIRECTIONS)


@pytest.mark.parametrize("direction", STORED_DIRECTIONS)
def test_every_grid_is_centred_on_the_anatomy_whatever_its_direction(
    direction: tuple[float, ...],
) -> None:
    profile = site_profiles("ct", _config(sites=1))[0]
    geometry = dataclasses.replace(profile, direction=direction).geometry
    image = geometry.apply_to(sitk.Image(list(geometry.size), sitk.sitkUInt8))
    centre = [(n - 1) / 2.0 for n in geometry.size]
    assert image.TransformContinuousIndexToPhysicalPoint(centre) == pytest.approx(
        (0.0, 0.0, 0.0), abs=1e-9
    )


def test_stratified_puts_each_site_in_its_own_stratum() -> None:
    values = stratified(np.random.default_rng(0), 5)
    strata = np.floor((values + 1.0) / 2.0 * 5).astype(int)
    assert sorted(strata) == [0, 1, 2, 3, 4]


def test_site_names_sort_in_site_order() -> None:
    assert site_name(0, 3) == "site-01"
    assert site_name(9, 12) == "site-10"
    assert site_name(0, 100) == "site-001"


def test_an_unknown_modality_is_a_config_error() -> None:
    with pytest.raises(ConfigError, match="pet"):
        site_profiles("pet", _config())
