"""The workload of a generator's training step, from the run settings alone.

Parameter counts come from building the family's networks on PyTorch's ``meta`` device, which
allocates no memory: a GAN whose label generator would hold billions of weights is counted in
milliseconds, not built.
"""

from __future__ import annotations

import math

import torch

from common.config import FedsynthConfig
from common.memory.estimate import Workload, coarsest_tokens
from common.models.interface import unwrap
from common.models.registry import build_model, spatial_shape


def parameter_counts(config: FedsynthConfig) -> tuple[int, int]:
    """(every trained parameter, those of the networks DP-SGD trains) of ``config``'s model;
    the second is 0 with privacy off."""
    with torch.device("meta"):
        model = build_model(config)
    counts = {
        name: sum(p.numel() for p in unwrap(net).parameters()) for name, net in model.nets.items()
    }
    private = sum(counts[name] for name in model.private_networks)
    return sum(counts.values()), private if config.privacy.enabled else 0


def generator_workload(config: FedsynthConfig, cases: int | None = None) -> Workload:
    """One training step of ``config``'s generator with ``cases`` cases (default
    ``training.batch-size``).

    Raises:
        ConfigError: the settings describe no valid model (e.g. a grid its levels cannot halve).
    """
    voxels = math.prod(spatial_shape(config))
    widths = tuple(config.model.channels)
    total, private = parameter_counts(config)
    tokens = 0
    if config.model.family == "diffusion":
        tokens = coarsest_tokens(voxels, len(widths), config.model.spatial_dims)
    return Workload(
        family=config.model.family,
        cases=config.training.batch_size if cases is None else cases,
        voxels=voxels,
        widths=widths,
        spatial_dims=config.model.spatial_dims,
        parameters=total,
        private_parameters=private,
        attention_tokens=tokens,
    )
