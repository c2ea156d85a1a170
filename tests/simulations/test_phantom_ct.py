"""Head-and-neck CT phantoms look like CT: Hounsfield units where anatomy says they should be."""

from __future__ import annotations

import numpy as np
import pytest
from data_support import calibrated_phantoms
from scipy import ndimage

from common.config import FedsynthConfig, PhantomConfig
from common.data.imageio import Geometry
from simulations.phantoms import make_case, site_profiles
from simulations.phantoms.case import render_case
from simulations.phantoms.head_neck_ct import Tissue
from simulations.phantoms.render import RenderedCase

CALIBRATED = calibrated_phantoms()


@pytest.fixture(scope="module")
def calibrated() -> list[RenderedCase]:
    config = FedsynthConfig(phantoms=CALIBRATED)
    return [
        render_case("ct", profile, index, config)
        for profile in site_profiles("ct", config)
        for index in range(2)
    ]


def _pure(case: RenderedCase, tissue: Tissue) -> np.ndarray:
    """Voxels of one tissue whose six face neighbours are the same tissue (no partial volume)."""
    return ndimage.binary_erosion(case.tissue == tissue, ndimage.generate_binary_structure(3, 1))


def test_labels_are_tumour_and_bone_only_and_both_present(calibrated: list[RenderedCase]) -> None:
    for case in calibrated:
        assert case.label.dtype == np.uint8
        assert set(np.unique(case.label)) == {0, 1, 2}


def test_soft_tissue_is_about_40_hu_and_air_minus_1000(calibrated: list[RenderedCase]) -> None:
    for case in calibrated:
        assert np.median(case.image[_pure(case, Tissue.SOFT_TISSUE)]) == pytest.approx(40, abs=5)
        assert np.median(case.image[_pure(case, Tissue.AIR)]) == pytest.approx(-1000, abs=5)


def test_bone_label_holds_bone_values(calibrated: list[RenderedCase]) -> None:
    for case in calibrated:
        bone = case.image[case.label == 2]
        assert 300 <= np.median(bone) <= 1500
        assert bone.max() <= 1500
        # The dense cortical shell shows through the partial volume of 6 mm voxels.
        assert np.percentile(bone, 95) > 700


def test_tumour_is_a_few_tens_of_hu_above_soft_tissue(calibrated: list[RenderedCase]) -> None:
    for case in calibrated:
        soft = np.median(case.image[_pure(case, Tissue.SOFT_TISSUE)])
        interior = _pure(case, Tissue.TUMOUR)
        assert interior.sum() >= 5
        assert 15 <= case.image[interior].mean() - soft <= 80
        # Heterogeneous, not a flat blob: texture well above the 2 HU noise.
        assert case.image[interior].std() > 4
        # Even with its partial-volume rim the whole label is brighter than soft tissue.
        assert case.image[case.label == 1].mean() > soft + 5


def _world_y(mask: np.ndarray, geometry: Geometry) -> float:
    """Mean world y (mm) of the voxels in ``mask``, placed by the stored geometry."""
    index = np.argwhere(mask)[:, ::-1]  # (x, y, z)
    direction = np.reshape(geometry.direction, (3, 3))
    points = np.asarray(geometry.origin) + (index * np.asarray(geometry.spacing)) @ direction.T
    return float(points[:, 1].mean())


def test_airway_is_anterior_to_the_spine_in_world_coordinates() -> None:
    """LPS: anterior is -y. Holds on every site, whichever direction it stores its axes in."""
    config = FedsynthConfig(phantoms=PhantomConfig(size=24, sites=3))
    for profile in site_profiles("ct", config):
        geometry = Geometry.of(make_case("ct", profile, 0, config).image)
        drawn = render_case("ct", profile, 0, config)
        airway = _world_y(drawn.tissue == Tissue.AIRWAY, geometry)
        assert airway < _world_y(drawn.label == 2, geometry) - 10


def test_site_calibration_keeps_tissues_near_their_hu() -> None:
    """Default site variation: soft tissue within 40 ± 25 HU, air within the gain/offset bounds."""
    phantoms = PhantomConfig(size=24, sites=3)
    config = FedsynthConfig(phantoms=phantoms)
    bound = 1000 * (phantoms.site_intensity_scale + phantoms.site_intensity_offset) + 5
    for profile in site_profiles("ct", config):
        case = render_case("ct", profile, 0, config)
        assert case.image.dtype == np.int16
        assert np.median(case.image[_pure(case, Tissue.SOFT_TISSUE)]) == pytest.approx(40, abs=25)
        assert np.median(case.image[_pure(case, Tissue.AIR)]) == pytest.approx(-1000, abs=bound)
