"""Generator families by name, and :func:`build_model`."""

from __future__ import annotations

from common.config import FedsynthConfig
from common.data.schema import schema_for
from common.errors import ConfigError
from common.models.diffusion import DiffusionModel
from common.models.gan import GanModel
from common.models.interface import GenerativeModel

FAMILIES: dict[str, type[GenerativeModel]] = {"diffusion": DiffusionModel, "gan": GanModel}
"""Every generator family, by its ``model.family`` name."""


def families() -> list[str]:
    """The family names."""
    return sorted(FAMILIES)


def model_family(name: str) -> type[GenerativeModel]:
    """The class of the family called ``name`` (``ConfigError`` naming the known ones)."""
    if name not in FAMILIES:
        raise ConfigError(f"model.family = {name!r} is not one of {', '.join(families())}")
    return FAMILIES[name]


def spatial_shape(config: FedsynthConfig) -> tuple[int, ...]:
    """The model's spatial shape, (z, y, x) from data.target-shape, or (y, x) in 2D."""
    x, y, z = config.data.target_shape
    return (z, y, x) if config.model.spatial_dims == 3 else (y, x)


def build_model(config: FedsynthConfig) -> GenerativeModel:
    """A fresh model of ``config.model.family``, sized for the data settings, seeded from
    ``config.seed`` (network initialisation is deterministic)."""
    import torch

    from common.seeding import derive_seed

    family = model_family(config.model.family)
    num_classes = len(schema_for(config.data.modality).labels) + 1
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(derive_seed(config.seed, "model-init", config.model.family))
        return family(
            config.model,
            config.training,
            spatial_shape=spatial_shape(config),
            num_classes=num_classes,
        )
