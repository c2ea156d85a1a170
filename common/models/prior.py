"""A public prior: weights pretrained on public phantoms that a training starts from.

The phantom generator is public, so a model trained on phantoms alone costs no privacy. Starting
a site's (or a federation's) training from it instead of random weights leaves DP-SGD only the
difference between the phantoms and the site's patients to learn, which takes far fewer noisy
steps. A prior file is a model file (``common.models.checkpoint``) with a ``prior`` record: what
it was trained on (the phantom settings, cases, seed, steps), and nothing from any site. It
keeps one set of weights per network: the training's weight average where one was kept (the
smoother weights a family samples with), so a prior is half the size of a site's model file.

``model.prior`` names a prior shipped with fedsynth (a file in ``common/models/priors/``, see
:data:`SHIPPED_PRIORS`) or gives the path of one made by ``fedsynth prior``. The release
manifest records the prior's name, hash and provenance.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch

from common.config import FedsynthConfig
from common.errors import ConfigError
from common.models.checkpoint import (
    MODEL_FIELDS,
    MODEL_FORMAT,
    CheckpointError,
    load_payload,
    model_payload,
    payload_config,
    save_payload,
)
from common.models.interface import GenerativeModel, unwrap
from common.models.registry import build_model

SHIPPED_PRIORS_DIR = Path(__file__).parent / "priors"
SHIPPED_PRIORS = {"phantom-ct-32": "phantom-ct-32.pt"}
"""Priors that come with fedsynth, by name: ``fedsynth prior --preset prior-ct`` makes each."""
PRIOR_KEY = "prior"
"""Where a prior file keeps its provenance."""


def prior_path(name: str) -> Path:
    """The file of prior ``name``: a shipped prior's, or ``name`` read as a path.

    Raises:
        ConfigError: neither a shipped prior nor an existing file.
    """
    if name in SHIPPED_PRIORS:
        return SHIPPED_PRIORS_DIR / SHIPPED_PRIORS[name]
    path = Path(name).expanduser()
    if not path.is_file():
        shipped = ", ".join(sorted(SHIPPED_PRIORS))
        raise ConfigError(
            f"model.prior = {name!r}: no such file and no shipped prior of that name (shipped: "
            f"{shipped}); make one with `fedsynth prior` or set model.prior = ''"
        )
    return path


def read_prior(name: str) -> dict[str, Any]:
    """The payload of prior ``name`` (a model file with a ``prior`` record).

    Raises:
        ConfigError: no such prior; CheckpointError: the file is not a fedsynth prior.
    """
    path = prior_path(name)
    payload = load_payload(path, MODEL_FORMAT, "prior", MODEL_FIELDS)
    payload_config(path, payload, "prior")
    if not isinstance(payload.get(PRIOR_KEY), dict):
        raise CheckpointError(
            f"{path}: a model file, but not a public prior (it has no record of being trained "
            "on public phantoms only); a model trained on site data must not seed other runs"
        )
    return payload


def initial_model(config: FedsynthConfig) -> GenerativeModel:
    """The model a training starts from: :func:`build_model`, then the weights of
    ``model.prior`` when one is set, for the trained networks and their averages alike.

    Raises:
        ConfigError: the prior is missing, or was made for another family or architecture.
    """
    model = build_model(config)
    if not config.model.prior:
        return model
    payload = read_prior(config.model.prior)
    if payload["family"] != model.family:
        raise ConfigError(
            f"model.prior = {config.model.prior!r} is a {payload['family']} model, but "
            f"model.family = {model.family!r}: choose a prior of the same family"
        )
    networks: dict[str, dict[str, torch.Tensor]] = payload["networks"]
    try:
        for name, net in model.nets.items():
            net.load_state_dict(networks[name])
        for name, average in model.averages.items():
            average.network.load_state_dict(networks[name])
    except (KeyError, RuntimeError) as err:
        raise ConfigError(
            f"model.prior = {config.model.prior!r} was made for other network sizes "
            f"({_sizes(payload)}); use the prior's settings or make a prior for these "
            f"(`fedsynth prior`): {str(err).splitlines()[0]}"
        ) from None
    return model


def prior_networks(model: GenerativeModel) -> dict[str, dict[str, torch.Tensor]]:
    """The weights a prior keeps of ``model``: each network's sampling copy (its weight
    average when one is kept), by network name."""
    return {name: unwrap(model.sampling_network(name)).state_dict() for name in model.nets}


def save_prior(
    path: Path, model: GenerativeModel, config: FedsynthConfig, provenance: dict[str, Any]
) -> str:
    """Write a prior file of ``model`` (its :func:`prior_networks`) trained with ``config``,
    with its ``provenance`` record; returns the weights' hash."""
    payload = model_payload(model.family, config, prior_networks(model))
    save_payload(path, {PRIOR_KEY: provenance, **payload})
    return str(payload["hash"])


def _sizes(payload: dict[str, Any]) -> str:
    settings = payload.get("run_config", {})
    keys = ("model.channels", "model.num-res-blocks", "data.target-shape", "data.modality")
    return ", ".join(f"{key} = {settings.get(key)!r}" for key in keys)


def prior_record(config: FedsynthConfig) -> dict[str, Any]:
    """What a release manifest says of the run's prior: {} without one; else its name (a
    shipped prior's name or the file's name, never a folder), hash and provenance."""
    if not config.model.prior:
        return {}
    payload = read_prior(config.model.prior)
    name = config.model.prior
    return {
        "name": name if name in SHIPPED_PRIORS else Path(name).name,
        "model_hash": payload["hash"],
        **payload[PRIOR_KEY],
    }
