"""Another phantom population (a public prior's): anatomy scale and tissue contrast."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest
from data_support import calibrated_phantoms
from scipy import ndimage

from common.config import FedsynthConfig
from simulations.phantoms import site_profiles
from simulations.phantoms.brain_mri import Tissue as BrainTissue
from simulations.phantoms.case import render_case
from simulations.phantoms.head_neck_ct import SOFT_TISSUE_HU
from simulations.phantoms.head_neck_ct import Tissue as NeckTissue
from simulations.phantoms.render import RenderedCase


def cases(modality: str, **changes: float) -> list[RenderedCase]:
    phantoms = dataclasses.replace(calibrated_phantoms(), sites=1, **changes)
    config = FedsynthConfig(phantoms=phantoms)
    profile = site_profiles(modality, config)[0]
    return [render_case(modality, profile, index, config) for index in range(2)]


def pure(case: RenderedCase, tissue: int) -> np.ndarray:
    return ndimage.binary_erosion(case.tissue == tissue, ndimage.generate_binary_structure(3, 1))


@pytest.mark.parametrize(("modality", "power"), [("ct", 2), ("mri", 3)])
def test_anatomy_scale_shrinks_every_structure(modality: str, power: int) -> None:
    """The same patients drawn at 0.8 of the size: the head holds about 0.8^3 of the voxels;
    the neck, a column through the whole field of view, 0.8^2 (partial volume keeps it
    approximate)."""
    reference, smaller = cases(modality), cases(modality, anatomy_scale=0.8)
    for big, small in zip(reference, smaller, strict=True):
        ratio = (small.tissue > 0).sum() / (big.tissue > 0).sum()
        assert ratio == pytest.approx(0.8**power, rel=0.05)


def test_ct_contrast_scale_multiplies_differences_from_soft_tissue() -> None:
    reference, stronger = cases("ct"), cases("ct", contrast_scale=1.5)
    for base, strong in zip(reference, stronger, strict=True):
        for tissue in (NeckTissue.CORTICAL, NeckTissue.TUMOUR):
            before = np.median(base.image[pure(base, tissue)]) - SOFT_TISSUE_HU
            after = np.median(strong.image[pure(strong, tissue)]) - SOFT_TISSUE_HU
            assert after == pytest.approx(1.5 * before, rel=0.05), tissue
        air = np.median(strong.image[pure(strong, NeckTissue.AIR)])
        assert air == pytest.approx(-1000, abs=5)  # air stays air


def test_mri_contrast_scale_multiplies_differences_from_white_matter() -> None:
    reference, weaker = cases("mri"), cases("mri", contrast_scale=0.5)
    for base, weak in zip(reference, weaker, strict=True):
        white = np.median(base.image[pure(base, BrainTissue.WHITE_MATTER)])
        core = np.median(base.image[pure(base, BrainTissue.NECROTIC)])
        weak_white = np.median(weak.image[pure(weak, BrainTissue.WHITE_MATTER)])
        weak_core = np.median(weak.image[pure(weak, BrainTissue.NECROTIC)])
        assert weak_white - weak_core == pytest.approx(0.5 * (white - core), rel=0.1)
        assert (weak.image >= 0).all()
