"""Flower's aggregation strategies, chosen and wrapped from ``federation.*`` settings.

FedAvg weights each site by its cases (``num-examples``); FedProx is FedAvg plus the sites'
proximal pull (done in the ClientApp); FedMedian and FedTrimmedAvg take the coordinate-wise
median or trimmed mean, robust to a few outlying sites. With ``federation.central-dp`` the
strategy is wrapped in Flower's server-side clipping (fixed or adaptive) and Gaussian noise; the
sites are then weighted equally (``site-weight``), which the sensitivity of that noise assumes.

The server runs its own round loop (:mod:`server.federation`) and calls the strategy's
``configure_train`` and ``aggregate_train``; client-side evaluation is off.
"""

from __future__ import annotations

from flwr.serverapp.strategy import (
    DifferentialPrivacyServerSideAdaptiveClipping,
    DifferentialPrivacyServerSideFixedClipping,
    FedAvg,
    FedMedian,
    FedProx,
    FedTrimmedAvg,
    Strategy,
)

from common.config import FederationConfig
from common.errors import ConfigError
from common.exchange import ARRAYS_KEY, CONFIG_KEY, EXAMPLES_KEY, SITE_WEIGHT_KEY

ADAPTIVE_NOISE_LIMIT_PER_SITE = 0.1
"""Flower's adaptive clipping needs the noise multiplier below sites x this."""


def build_strategy(federation: FederationConfig, sites: int) -> Strategy:
    """The strategy of ``federation.strategy``, wrapped for central DP when asked.

    ``sites`` is how many sites are sampled per round (central DP's noise is scaled by it).

    Raises:
        ConfigError: adaptive clipping with a noise multiplier its analysis cannot split.
    """
    weight = SITE_WEIGHT_KEY if federation.central_dp != "off" else EXAMPLES_KEY
    common = {
        "fraction_train": federation.fraction_train,
        "fraction_evaluate": 0.0,
        "min_train_nodes": federation.min_sites,
        "min_available_nodes": federation.min_sites,
        "weighted_by_key": weight,
        "arrayrecord_key": ARRAYS_KEY,
        "configrecord_key": CONFIG_KEY,
    }
    strategy: Strategy
    if federation.strategy == "fedprox":
        strategy = FedProx(**common, proximal_mu=federation.proximal_mu)  # type: ignore[arg-type]
    elif federation.strategy == "fedmedian":
        strategy = FedMedian(**common)  # type: ignore[arg-type]
    elif federation.strategy == "fedtrimmedavg":
        strategy = FedTrimmedAvg(**common, beta=federation.trim_beta)  # type: ignore[arg-type]
    else:
        strategy = FedAvg(**common)  # type: ignore[arg-type]
    if federation.central_dp == "fixed":
        return DifferentialPrivacyServerSideFixedClipping(
            strategy,
            noise_multiplier=federation.central_noise_multiplier,
            clipping_norm=federation.central_clipping_norm,
            num_sampled_clients=sites,
        )
    if federation.central_dp == "adaptive":
        limit = sites * ADAPTIVE_NOISE_LIMIT_PER_SITE
        if federation.central_noise_multiplier >= limit:
            raise ConfigError(
                f"federation.central-noise-multiplier = {federation.central_noise_multiplier:g} "
                f"is too large for adaptive clipping with {sites} sites per round: it must be "
                f"below sites / 10 = {limit:g}, because part of the noise budget goes to the "
                "noisy count of clipped updates (Andrew et al. 2021). Use more sites per "
                "round, less noise, or federation.central-dp=fixed"
            )
        return DifferentialPrivacyServerSideAdaptiveClipping(
            strategy,
            noise_multiplier=federation.central_noise_multiplier,
            num_sampled_clients=sites,
            initial_clipping_norm=federation.central_clipping_norm,
        )
    return strategy
