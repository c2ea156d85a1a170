"""Helpers for audit tests: prepared phantom case sets and planted copies of training cases."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from common.audit.search import CaseSet
from common.config import FedsynthConfig, load_config
from common.data.preprocess import prepare_case
from common.models.interface import SyntheticPairs
from common.release import new_manifest, write_release
from simulations.phantoms import make_case, site_profiles, write_cohort

SIZE = 24
GRID = {
    "phantoms.size": SIZE,
    "data.target-shape": f"{SIZE},{SIZE},{SIZE}",
    "data.target-spacing": "8.0,8.0,8.0",
}
PLANTS = ("noise", "shift", "rescale", "slab")
SMALL_GRID = {
    "phantoms.size": 16,
    "phantoms.sites": 1,
    "data.target-shape": "16,16,16",
    "data.target-spacing": "12.0,12.0,12.0",
}
"""The command tests' grid: 16^3 phantoms at 12 mm, one site per cohort."""


def phantom_config(seed: int) -> FedsynthConfig:
    """CT phantoms of one site drawn from ``seed`` on the tests' small grid."""
    return load_config({"seed": seed, **GRID})


def phantom_set(seed: int, count: int) -> CaseSet:
    """``count`` prepared CT phantoms of the first site drawn from ``seed``."""
    config = phantom_config(seed)
    profile = site_profiles("ct", config)[0]
    images, labels = [], []
    for index in range(count):
        case = make_case("ct", profile, index, config)
        prepared = prepare_case(case.case_id, case.image, case.label, config.data)
        images.append(prepared.image)
        labels.append(prepared.label)
    return CaseSet.of(np.stack(images), np.stack(labels))


def plant(
    train: CaseSet, fresh: CaseSet, kind: str, source: int, seed: int
) -> tuple[np.ndarray, np.ndarray]:
    """A planted copy of training case ``source``: small noise, a shift of 2 voxels along each
    axis, an intensity rescale, or a quarter of its slices copied into a fresh case."""
    image = train.images[source].numpy().copy()
    label = train.labels[source].numpy().copy()
    rng = np.random.default_rng(seed)
    if kind == "noise":
        return image + rng.normal(0.0, 0.02, image.shape).astype(np.float32), label
    if kind == "shift":
        moved = (2, -2, 2)
        return np.roll(image, moved, axis=(0, 1, 2)), np.roll(label, moved, axis=(0, 1, 2))
    if kind == "rescale":
        return 0.8 * image + 0.05, label
    if kind == "slab":
        host_image = fresh.images[source % len(fresh)].numpy().copy()
        host_label = fresh.labels[source % len(fresh)].numpy().copy()
        quarter = image.shape[0] // 4
        start = int(rng.integers(0, image.shape[0] - quarter))
        host_image[start : start + quarter] = image[start : start + quarter]
        host_label[start : start + quarter] = label[start : start + quarter]
        return host_image, host_label
    raise ValueError(f"unknown plant {kind}")


def planted_set(train: CaseSet, fresh: CaseSet, sources: list[int]) -> tuple[CaseSet, list[str]]:
    """Every kind of plant of every source case, with ids naming kind and source."""
    images, labels, ids = [], [], []
    for kind in PLANTS:
        for source in sources:
            image, label = plant(train, fresh, kind, source, seed=source)
            images.append(image)
            labels.append(label)
            ids.append(f"{kind}-{source}")
    return CaseSet.of(np.stack(images), np.stack(labels)), ids


def write_phantom_site(root: Path, seed: int, cases: int) -> Path:
    """A folder of ``cases`` CT phantoms (nnU-Net raw) on :data:`SMALL_GRID` from ``seed``."""
    config = load_config({**SMALL_GRID, "seed": seed, "phantoms.cases-per-site": cases})
    return write_cohort(config, root).sites[0]


def write_case_release(cases: CaseSet, out: Path, config: FedsynthConfig) -> list[str]:
    """``cases`` (preprocessed units) written as a release with ``config`` in its manifest."""
    pairs = SyntheticPairs(cases.images[:, None], cases.labels.long())
    manifest = new_manifest(
        config, family="gan", model_hash="ab" * 32, rounds=1, sites=[], cases=len(cases), seed=5
    )
    return write_release(pairs, out, config, manifest)


def stacked(parts: list[tuple[np.ndarray, np.ndarray]]) -> CaseSet:
    """A case set of (image, label map) pairs."""
    return CaseSet.of(np.stack([p[0] for p in parts]), np.stack([p[1] for p in parts]))
