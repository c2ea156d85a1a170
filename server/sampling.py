"""Sampling a release from a trained model: synthetic pairs only, in batches."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import torch

from common.config import FedsynthConfig, Scalar, load_config, to_run_config
from common.errors import ConfigError
from common.models.checkpoint import load_model, model_hash
from common.models.interface import GenerativeModel, SyntheticPairs
from common.models.presence import sample_with_presence
from common.release import new_manifest, write_release
from common.runs import MODEL_FILE, read_summary
from common.seeding import torch_generator

SAMPLING_KEYS = (
    "model.sampler",
    "model.sampling-steps",
    "model.tumour-logit-shift",
    "model.label-logit-shifts",
    "model.tumour-presence-redraws",
    "model.tumour-presence",
)
"""Settings ``fedsynth sample --run-config`` may change: how a trained model is sampled, not
what it is (every other setting is the model's own and stays as it was trained)."""


def sampling_config(config: FedsynthConfig, overrides: Mapping[str, Scalar]) -> FedsynthConfig:
    """The trained model's config with its sampling settings changed (validated like any other).

    Raises:
        ConfigError: a key is not a sampling setting, or a value is invalid.
    """
    others = sorted(set(overrides) - set(SAMPLING_KEYS))
    if others:
        raise ConfigError(
            f"{', '.join(others)}: only the sampling settings ({', '.join(SAMPLING_KEYS)}) can "
            "change at sampling; the others are the trained model's own"
        )
    return load_config({**to_run_config(config), **overrides})


def sample_pairs(
    model: GenerativeModel,
    n: int,
    batch_size: int,
    generator: torch.Generator,
    on_batch: Callable[[int], None] | None = None,
) -> SyntheticPairs:
    """``n`` stand-alone pairs, made ``batch_size`` at a time (with the tumour presence rule,
    ``common.models.presence``)."""
    images, labels = [], []
    done = 0
    while done < n:
        count = min(batch_size, n - done)
        pairs = sample_with_presence(model, count, generator)
        images.append(pairs.image.cpu())
        labels.append(pairs.label.cpu())
        done += count
        if on_batch is not None:
            on_batch(count)
    return SyntheticPairs(torch.cat(images), torch.cat(labels))


def release_from_run(
    run: Path,
    n: int,
    out: Path,
    *,
    seed: int | None = None,
    overwrite: bool = False,
    sampling: Mapping[str, Scalar] | None = None,
    on_batch: Callable[[int], None] | None = None,
) -> tuple[FedsynthConfig, list[str]]:
    """Sample ``n`` pairs from a run's model and write them as a release folder; ``sampling``
    changes the sampler settings (:data:`SAMPLING_KEYS`), and the manifest records them."""
    model, config = load_model(run / MODEL_FILE)
    if sampling:
        config = sampling_config(config, sampling)
        model.config = config.model
    root_seed = config.seed if seed is None else seed
    generator = torch_generator(root_seed, "release")
    model.train_mode(False)
    pairs = sample_pairs(model, n, config.training.batch_size, generator, on_batch)
    ids = write_model_release(run, model, config, pairs, out, seed=root_seed, overwrite=overwrite)
    return config, ids


def write_model_release(
    run: Path,
    model: GenerativeModel,
    config: FedsynthConfig,
    pairs: SyntheticPairs,
    out: Path,
    *,
    seed: int,
    audit: dict[str, Any] | None = None,
    overwrite: bool = False,
) -> list[str]:
    """Write ``pairs`` sampled from a run's ``model`` (with ``seed``) as a release folder whose
    manifest names the run's rounds and sites, and ``audit`` (the release gate's record)."""
    summary = read_summary(run)
    manifest = new_manifest(
        config,
        family=model.family,
        model_hash=model_hash(model),
        rounds=summary.rounds,
        sites=summary.sites,
        cases=int(pairs.label.shape[0]),
        seed=seed,
        audit=audit,
    )
    return write_release(pairs, out, config, manifest, overwrite=overwrite)
