"""One phantom case: an image and its label map on a site's grid, from the run's seed."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import SimpleITK as sitk

from common.config import FedsynthConfig, PhantomConfig
from common.data.imageio import from_array
from common.errors import ConfigError
from common.seeding import numpy_rng
from simulations.phantoms.brain_mri import render_mri
from simulations.phantoms.head_neck_ct import render_ct
from simulations.phantoms.profiles import SiteProfile, check_modality
from simulations.phantoms.render import RenderedCase

Renderer = Callable[
    [SiteProfile, PhantomConfig, np.random.Generator, np.random.Generator], RenderedCase
]
RENDERERS: dict[str, Renderer] = {"ct": render_ct, "mri": render_mri}


@dataclass(frozen=True)
class PhantomCase:
    """A case's id, its image (int16 HU for CT, float32 for MRI) and its uint8 label map."""

    case_id: str
    image: sitk.Image
    label: sitk.Image


def case_id(modality: str, site_index: int, case_index: int, config: FedsynthConfig) -> str:
    """The case's id, e.g. ``phantom-ct-s01-000`` (safe for nnU-Net and BraTS file names)."""
    site_width = max(2, len(str(config.phantoms.sites)))
    last = config.phantoms.first_case + config.phantoms.cases_per_site - 1
    case_width = max(3, len(str(last)))
    return f"phantom-{modality}-s{site_index + 1:0{site_width}d}-{case_index:0{case_width}d}"


def render_case(
    modality: str, profile: SiteProfile, case_index: int, config: FedsynthConfig
) -> RenderedCase:
    """The case as numpy arrays, with the tissue map (see :func:`make_case`)."""
    check_modality(modality)
    if profile.modality != modality:
        raise ConfigError(
            f"{profile.name} was drawn for {profile.modality}, not {modality}: "
            f"use site_profiles({modality!r}, config)"
        )
    path = (config.seed, "phantoms", modality, profile.index, case_index)
    return RENDERERS[modality](
        profile, config.phantoms, numpy_rng(*path), numpy_rng(*path, "noise")
    )


def make_case(
    modality: str, profile: SiteProfile, case_index: int, config: FedsynthConfig
) -> PhantomCase:
    """Draw case ``case_index`` of the site ``profile``: same seed, same voxels.

    Raises:
        ConfigError: the modality is unknown or the profile was drawn for another modality.
    """
    drawn = render_case(modality, profile, case_index, config)
    geometry = profile.geometry
    return PhantomCase(
        case_id=case_id(modality, profile.index, case_index, config),
        image=from_array(drawn.image, geometry),
        label=from_array(drawn.label, geometry),
    )
