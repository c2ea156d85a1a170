"""Brain glioma T1c phantoms have T1c contrast and BraTS labels."""

from __future__ import annotations

import numpy as np
import pytest
from data_support import calibrated_phantoms

from common.config import FedsynthConfig, PhantomConfig
from simulations.phantoms import site_profiles
from simulations.phantoms.brain_mri import Tissue
from simulations.phantoms.case import render_case
from simulations.phantoms.render import RenderedCase

CALIBRATED = calibrated_phantoms()


@pytest.fixture(scope="module")
def cases() -> list[RenderedCase]:
    config = FedsynthConfig(phantoms=CALIBRATED)
    return [
        render_case("mri", profile, index, config)
        for profile in site_profiles("mri", config)
        for index in range(2)
    ]


def _mean(case: RenderedCase, mask: np.ndarray) -> float:
    return float(case.image[mask].mean())


def test_every_brats_label_is_present(cases: list[RenderedCase]) -> None:
    for case in cases:
        assert case.label.dtype == np.uint8
        assert set(np.unique(case.label)) == {0, 1, 2, 3}


def test_t1c_contrast_orders_the_tissues(cases: list[RenderedCase]) -> None:
    for case in cases:
        enhancing = _mean(case, case.label == 3)
        necrotic = _mean(case, case.label == 1)
        oedema = _mean(case, case.label == 2)
        white = _mean(case, case.tissue == Tissue.WHITE_MATTER)
        grey = _mean(case, case.tissue == Tissue.GREY_MATTER)
        csf = _mean(case, case.tissue == Tissue.CSF)
        assert enhancing > 1.2 * white
        assert white > 1.2 * grey
        assert grey > 1.2 * csf
        assert necrotic < enhancing - 200
        assert grey < oedema < white  # slightly hypointense to white matter


def test_white_matter_is_about_1000_and_background_dark(cases: list[RenderedCase]) -> None:
    for case in cases:
        # The bias field shades by a few per cent; partial volume with grey matter lowers it.
        assert _mean(case, case.tissue == Tissue.WHITE_MATTER) == pytest.approx(1000, rel=0.15)
        assert _mean(case, case.tissue == Tissue.BACKGROUND) < 50


def test_images_are_positive_float32() -> None:
    config = FedsynthConfig(phantoms=PhantomConfig(size=16, sites=2, noise_max=0.05))
    for profile in site_profiles("mri", config):
        case = render_case("mri", profile, 0, config)
        assert case.image.dtype == np.float32
        assert case.image.min() >= 0.0
