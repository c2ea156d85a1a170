"""The GAN family's losses, per sample where DP-SGD needs them.

The discriminator's losses are *per sample* (one value per pair, the mean over its patch
predictions) so that a mean over the batch is exactly what Opacus' ``loss_reduction="mean"``
expects. ``lsgan`` (least squares), ``bce`` (non-saturating, on logits) and ``hinge`` follow
``model.gan-loss``.
"""

from __future__ import annotations

import torch
from torch.nn import functional

from common.data.schema import SCHEMAS
from common.errors import ConfigError

GAN_LOSSES = ("lsgan", "hinge", "bce")


def _per_sample(values: torch.Tensor) -> torch.Tensor:
    return values.flatten(start_dim=1).mean(dim=1)


def discriminator_loss(prediction: torch.Tensor, real: bool, kind: str) -> torch.Tensor:
    """Per-sample loss ``(B,)`` of the discriminator's patch predictions for real or fake pairs."""
    prediction = prediction.float()
    if kind == "lsgan":
        return _per_sample((prediction - 1.0) ** 2 if real else prediction**2)
    if kind == "bce":
        return _per_sample(
            functional.softplus(-prediction) if real else functional.softplus(prediction)
        )
    if kind == "hinge":
        return _per_sample(
            functional.relu(1.0 - prediction) if real else functional.relu(1.0 + prediction)
        )
    raise ConfigError(f"model.gan-loss = {kind!r} is not one of {', '.join(GAN_LOSSES)}")


def generator_loss(prediction: torch.Tensor, kind: str) -> torch.Tensor:
    """Per-sample adversarial loss ``(B,)`` of the generators: fakes should pass as real."""
    if kind == "hinge":
        return _per_sample(-prediction.float())
    return discriminator_loss(prediction, real=True, kind=kind)


def tumour_values_for(num_classes: int) -> tuple[int, ...]:
    """The tumour's label values in the one schema with ``num_classes`` classes (background
    included): (1,) for CT, (1, 2, 3) for MRI."""
    matches = {
        schema.tumour_values for schema in SCHEMAS.values() if len(schema.labels) + 1 == num_classes
    }
    if len(matches) != 1:
        raise ConfigError(
            f"no single label schema has {num_classes} classes: pass tumour_values explicitly"
        )
    return matches.pop()


def tumour_weighted_l1(
    fake: torch.Tensor,
    real: torch.Tensor,
    labels: torch.Tensor,
    tumour_values: tuple[int, ...],
    tumour_weight: float,
) -> torch.Tensor:
    """Mean over voxels of ``w * |fake - real|``, ``w = 1 + tumour_weight`` inside the tumour
    (label in ``tumour_values``) and 1 elsewhere; images ``(B, 1, *s)``, labels ``(B, *s)``."""
    tumour = torch.isin(labels, torch.tensor(tumour_values, device=labels.device))
    weight = 1.0 + tumour_weight * tumour.unsqueeze(1).float()
    return (weight * (fake.float() - real.float()).abs()).mean()


def feature_matching(
    fake_features: list[torch.Tensor], real_features: list[torch.Tensor]
) -> torch.Tensor:
    """Mean over layers of the L1 distance between the discriminator's features of paired
    fake and real inputs (pix2pixHD); the real features are treated as constants."""
    if len(fake_features) != len(real_features) or not fake_features:
        raise ValueError("feature matching needs the same, non-zero number of layers on both")
    distances = [
        functional.l1_loss(fake.float(), real.detach().float())
        for fake, real in zip(fake_features, real_features, strict=True)
    ]
    return torch.stack(distances).mean()
