"""For model tests: a tiny phantom cohort, prepared as a site would, as tensors."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from common.config import FedsynthConfig, Scalar, load_config
from common.data.cache import read_cache
from common.data.dataset import CachedCases
from common.data.site import prepare_site
from common.models.interface import SyntheticPairs
from common.release import new_manifest, write_release
from simulations.phantoms import write_cohort

TINY: dict[str, Scalar] = {
    "phantoms.sites": 1,
    "phantoms.cases-per-site": 8,
    "phantoms.size": 16,
    "data.target-shape": "16,16,16",
    "data.target-spacing": "12.5,12.5,12.5",
    "model.channels": "8,16",
    "model.norm-groups": 4,
}


CALIBRATED: dict[str, Scalar] = {
    "model.family": "diffusion",
    "model.denoiser-output": "class-probabilities",
    "model.diffusion-steps": 10,
    "model.sampling-steps": 2,
    "model.tumour-calibration-cases": 2,
    "privacy.enabled": False,
}
"""Tiny diffusion settings whose tumour volume is calibrated (2 samples a try)."""


def tiny_config(**overrides: Scalar) -> FedsynthConfig:
    """Tiny 16^3 CT settings for model tests, with overrides (run-config keys)."""
    return load_config({**TINY, **overrides})


def tiny_cohort(folder: Path, config: FedsynthConfig) -> CachedCases:
    """Write a phantom cohort to ``folder``, prepare its one site, and load it as a dataset."""
    cohort = write_cohort(config, folder / "sites")
    prepare_site(cohort.sites[0], folder / "cache", config.data)
    return CachedCases(folder / "cache", config.model.spatial_dims)


def release_of_cache(cache: Path, release: Path, config: FedsynthConfig) -> None:
    """Write a release at ``release`` that copies the prepared cases of ``cache``."""
    _, cases = read_cache(cache)
    images = torch.from_numpy(np.stack([c.image for c in cases]))[:, None]
    labels = torch.from_numpy(np.stack([c.label for c in cases])).long()
    manifest = new_manifest(
        config, family="gan", model_hash="ef" * 32, rounds=2, sites=[], cases=len(cases), seed=3
    )
    write_release(SyntheticPairs(images, labels), release, config, manifest)


def stacked(dataset: CachedCases) -> tuple[torch.Tensor, torch.Tensor]:
    """All cases of a dataset as one batch."""
    images, labels = zip(*(dataset[i] for i in range(len(dataset))), strict=True)
    return torch.stack(images), torch.stack(labels)
