"""A release: synthetic pairs only, in nnU-Net raw layout, with a ``manifest.json``.

Layout: ``imagesTr/<case>_0000.nii.gz`` (CT in HU as int16; MRI in release units),
``labelsTr/<case>.nii.gz`` (uint8, the task's schema), ``dataset.json`` (nnU-Net v2) and
``manifest.json`` (family, model hash, settings, seed, rounds, sites with epsilon and delta,
sampler). Every case sits on :func:`~common.data.preprocess.release_geometry`: the target
spacing, identity direction, centred on the origin — no real patient's position is released.
The folder is written atomically: it appears whole or not at all.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import SimpleITK as sitk

from common.atomic import atomic_directory, atomic_write_text
from common.config import FedsynthConfig, to_run_config
from common.data import nnunet
from common.data.imageio import Geometry, write_image
from common.data.intensity import IntensityMapping, ct_mapping
from common.data.preprocess import release_geometry, to_world_image
from common.models.interface import SyntheticPairs
from common.models.prior import SHIPPED_PRIORS, prior_record

MANIFEST_FILE = "manifest.json"
MANIFEST_FORMAT = "fedsynth-release/1"
MRI_RELEASE_RANGE = (0.0, 1000.0)
"""MRI has no absolute units: released MRI maps [-1, 1] onto this range."""
CASE_PREFIX = "synth"


@dataclass(frozen=True)
class SiteRecord:
    """What the manifest says of one site: its name and the privacy it spent."""

    name: str
    epsilon: float | None
    delta: float | None


@dataclass(frozen=True)
class Manifest:
    """Everything a reader needs to know about where a release came from."""

    family: str
    model_hash: str
    seed: int
    rounds: int
    sites: list[SiteRecord]
    sampler: str
    sampling_steps: int
    cases: int
    run_config: dict[str, Any]
    prior: dict[str, Any] = field(default_factory=dict)
    """The public prior the training started from (name, hash, what it was trained on); {}
    for none."""
    audit: dict[str, Any] = field(default_factory=dict)
    format: str = MANIFEST_FORMAT

    def to_json(self) -> dict[str, Any]:
        """A JSON-ready dict."""
        return asdict(self)


def release_intensity(config: FedsynthConfig) -> IntensityMapping:
    """How released images map from [-1, 1]: the HU window for CT, a fixed range for MRI."""
    if config.data.modality == "ct":
        return ct_mapping(config.data)
    return IntensityMapping("mri", *MRI_RELEASE_RANGE)


def _geometry(config: FedsynthConfig, spatial_shape: tuple[int, ...]) -> Geometry:
    geometry = release_geometry(config.data)
    if len(spatial_shape) == 3:
        return geometry
    x, y, _ = geometry.size
    return Geometry((x, y, 1), geometry.spacing, geometry.origin, geometry.direction)


def _volumes(pairs: SyntheticPairs) -> tuple[np.ndarray, np.ndarray]:
    images = pairs.image.detach().cpu().numpy()[:, 0]
    labels = pairs.label.detach().cpu().numpy().astype(np.uint8)
    if images.ndim == 3:  # 2D models: one-slice volumes
        images, labels = images[:, None], labels[:, None]
    return np.clip(images, -1.0, 1.0), labels


def write_release(
    pairs: SyntheticPairs,
    out: Path,
    config: FedsynthConfig,
    manifest: Manifest,
    *,
    overwrite: bool = False,
) -> list[str]:
    """Write synthetic pairs, ``dataset.json`` and ``manifest.json``; return the case ids."""
    images, labels = _volumes(pairs)
    geometry = _geometry(config, tuple(pairs.label.shape[1:]))
    intensity = release_intensity(config)
    case_ids = [f"{CASE_PREFIX}_{index:04d}" for index in range(len(images))]
    with atomic_directory(out, overwrite=overwrite) as staging:
        for case_id, image, label in zip(case_ids, images, labels, strict=True):
            image_path, label_path = nnunet.case_paths(staging, case_id)
            world = to_world_image(image, geometry, intensity)
            if config.data.modality == "ct":
                world = sitk.Cast(sitk.Round(world), sitk.sitkInt16)
            write_image(world, image_path)
            write_image(to_world_image(label, geometry, None), label_path)
        description = (
            f"fedsynth synthetic {config.data.modality.upper()} release: "
            f"{len(case_ids)} generated cases, no patient data"
        )
        nnunet.write_dataset_json(
            staging,
            nnunet.dataset_json(
                config.data.modality, "fedsynth-synthetic", description, len(case_ids)
            ),
        )
        atomic_write_text(staging / MANIFEST_FILE, json.dumps(manifest.to_json(), indent=2))
    return case_ids


def new_manifest(
    config: FedsynthConfig,
    *,
    family: str,
    model_hash: str,
    rounds: int,
    sites: list[SiteRecord],
    cases: int,
    seed: int,
    audit: dict[str, Any] | None = None,
) -> Manifest:
    """A manifest from the run's settings; ``seed`` is the one sampling used, ``audit`` what
    the release gate recorded ({} for a release no federated audit screened)."""
    sampler = config.model.sampler if family == "diffusion" else "generator"
    steps = (
        config.model.sampling_steps
        if config.model.sampler == "ddim"
        else (config.model.diffusion_steps)
    )
    return Manifest(
        family=family,
        model_hash=model_hash,
        seed=seed,
        rounds=rounds,
        sites=sites,
        sampler=sampler,
        sampling_steps=steps if family == "diffusion" else 1,
        cases=cases,
        run_config=release_settings(config),
        prior=prior_record(config),
        audit=dict(audit or {}),
    )


LOCAL_SETTINGS = ("simulation.sites-dir", "simulation.state-dir", "federation.run-dir")
"""Settings that are places on the operator's machine: never written into a release."""
PRIOR_SETTING = "model.prior"


def release_settings(config: FedsynthConfig) -> dict[str, Any]:
    """The run settings a manifest records: every one but the machine's paths (a prior given
    by path is recorded by its file name)."""
    settings = {k: v for k, v in to_run_config(config).items() if k not in LOCAL_SETTINGS}
    prior = str(settings.get(PRIOR_SETTING, ""))
    if prior and prior not in SHIPPED_PRIORS:
        settings[PRIOR_SETTING] = Path(prior).name
    return settings


def read_manifest(release: Path) -> dict[str, Any]:
    """The manifest of a release folder, as written."""
    return dict(json.loads((release / MANIFEST_FILE).read_text(encoding="utf-8")))
