"""One phantom case: deterministic, on its site's grid, and different from site to site."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest
import SimpleITK as sitk
from scipy import ndimage

from common.config import FedsynthConfig, PhantomConfig
from common.data.imageio import Geometry
from common.errors import ConfigError
from simulations.phantoms import PhantomCase, make_case, site_profiles
from simulations.phantoms.case import render_case
from simulations.phantoms.head_neck_ct import Tissue
from simulations.phantoms.profiles import STORED_DIRECTIONS

MODALITIES = ("ct", "mri")


def _config(seed: int = 42, **phantoms: float) -> FedsynthConfig:
    values = {"size": 16, "sites": 2, **phantoms}
    return FedsynthConfig(seed=seed, phantoms=PhantomConfig(**values))  # type: ignore[arg-type]


def _arrays(case: PhantomCase) -> tuple[np.ndarray, np.ndarray]:
    return sitk.GetArrayFromImage(case.image), sitk.GetArrayFromImage(case.label)


@pytest.mark.parametrize("modality", MODALITIES)
def test_same_seed_same_voxels_other_seed_or_case_other_voxels(modality: str) -> None:
    profile = site_profiles(modality, _config())[1]
    image, label = _arrays(make_case(modality, profile, 0, _config()))
    again_image, again_label = _arrays(make_case(modality, profile, 0, _config()))
    np.testing.assert_array_equal(image, again_image)
    np.testing.assert_array_equal(label, again_label)
    for other in (
        make_case(modality, profile, 1, _config()),
        make_case(modality, profile, 0, _config(seed=43)),
    ):
        other_image, other_label = _arrays(other)
        assert np.abs(other_image.astype(float) - image).mean() > 1.0
        assert (other_label != label).sum() > 10


@pytest.mark.parametrize("modality", MODALITIES)
def test_case_sits_on_its_site_grid_with_the_right_types(modality: str) -> None:
    config = _config()
    profile = site_profiles(modality, config)[0]
    case = make_case(modality, profile, 3, config)
    assert case.case_id == f"phantom-{modality}-s01-003"
    assert Geometry.of(case.image) == profile.geometry
    assert Geometry.of(case.label) == profile.geometry
    expected = sitk.sitkInt16 if modality == "ct" else sitk.sitkFloat32
    assert case.image.GetPixelID() == expected
    assert case.label.GetPixelID() == sitk.sitkUInt8


@pytest.mark.parametrize("modality", MODALITIES)
def test_a_flipped_site_stores_the_same_anatomy_at_the_same_place(modality: str) -> None:
    config = _config(noise_min=0.0, noise_max=0.0)
    reference = dataclasses.replace(
        site_profiles(modality, config)[0], direction=STORED_DIRECTIONS[0]
    )
    straight = make_case(modality, reference, 0, config)
    for direction in STORED_DIRECTIONS[1:]:
        flipped = make_case(
            modality, dataclasses.replace(reference, direction=direction), 0, config
        )
        assert flipped.image.GetDirection() == direction
        label = sitk.DICOMOrient(flipped.label, "LPS")
        image = sitk.DICOMOrient(flipped.image, "LPS")
        assert label.GetOrigin() == pytest.approx(straight.label.GetOrigin(), abs=1e-6)
        straight_image, straight_label = _arrays(straight)
        np.testing.assert_array_equal(sitk.GetArrayFromImage(label), straight_label)
        difference = sitk.GetArrayFromImage(image).astype(float) - straight_image
        assert np.abs(difference).max() <= 1.0  # rounding to int16 at most


@pytest.mark.parametrize("modality", MODALITIES)
def test_tumours_too_small_for_the_grid_are_still_labelled(modality: str) -> None:
    """Radii of 1-2 mm on 12.5 mm voxels: drawn as small as the grid can show, never lost."""
    config = _config(size=16, tumour_radius_min_mm=1.0, tumour_radius_max_mm=2.0)
    expected = {0, 1, 2} if modality == "ct" else {0, 1, 2, 3}
    for profile in site_profiles(modality, config):
        for index in range(3):
            drawn = render_case(modality, profile, index, config)
            assert set(np.unique(drawn.label)) == expected


def test_sites_with_a_larger_tumour_scale_have_larger_tumours() -> None:
    config = _config(
        size=24, site_tumour_scale=0.5, tumour_radius_min_mm=14.0, tumour_radius_max_mm=16.0
    )
    volumes = []
    for profile in site_profiles("ct", config):
        voxel_mm3 = float(np.prod(profile.spacing))
        cases = [render_case("ct", profile, i, config) for i in range(4)]
        mean = np.mean([(case.label == 1).sum() * voxel_mm3 for case in cases])
        volumes.append((profile.tumour_scale, mean))
    (small_scale, small), (large_scale, large) = sorted(volumes)
    assert large_scale > small_scale + 0.2  # stratified: the sites' scales are far apart
    assert large > 1.5 * small


def test_noise_in_the_air_matches_each_site_noise_level() -> None:
    config = _config(size=24, noise_min=0.005, noise_max=0.04)
    estimates = []
    for profile in site_profiles("ct", config):
        drawn = render_case("ct", profile, 0, config)
        air = ndimage.binary_erosion(drawn.tissue == Tissue.AIR, iterations=2)
        estimate = float(drawn.image[air].std())
        assert estimate == pytest.approx(profile.noise_sd, rel=0.1)
        estimates.append(estimate)
    assert max(estimates) > 1.5 * min(estimates)


def test_a_profile_of_another_modality_is_refused() -> None:
    config = _config()
    with pytest.raises(ConfigError, match="use site_profiles"):
        make_case("mri", site_profiles("ct", config)[0], 0, config)
    with pytest.raises(ConfigError, match="pet"):
        make_case("pet", site_profiles("ct", config)[0], 0, config)
