"""Generator families by name: ``@register_family("gan")`` and :func:`build_model`."""

from __future__ import annotations

from collections.abc import Callable
from typing import TypeVar

from common.config import FedsynthConfig
from common.data.schema import schema_for
from common.errors import ConfigError
from common.models.interface import GenerativeModel

_FAMILIES: dict[str, type[GenerativeModel]] = {}
M = TypeVar("M", bound=type[GenerativeModel])


def register_family(name: str) -> Callable[[M], M]:
    """Class decorator that makes a family buildable by name."""

    def decorator(cls: M) -> M:
        if name in _FAMILIES:
            raise ValueError(f"generator family {name!r} is registered twice")
        cls.family = name
        _FAMILIES[name] = cls
        return cls

    return decorator


def families() -> list[str]:
    """The registered family names."""
    _import_builtin_families()
    return sorted(_FAMILIES)


def model_family(name: str) -> type[GenerativeModel]:
    """The class of the family called ``name`` (``ConfigError`` naming the known ones)."""
    _import_builtin_families()
    if name not in _FAMILIES:
        raise ConfigError(f"model.family = {name!r} is not one of {', '.join(families())}")
    return _FAMILIES[name]


def _import_builtin_families() -> None:
    import common.models.diffusion
    import common.models.gan  # noqa: F401  (registers "gan")


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
