"""The GAN family's three networks and its straight-through Gumbel-softmax.

Every network normalises with GroupNorm (``model.norm-groups``), never BatchNorm: BatchNorm mixes
the samples of a batch, so a sample's gradient would depend on the others and DP-SGD's per-sample
clipping would no longer bound one case's influence. Sizes follow ``model.channels``.
"""

from __future__ import annotations

import itertools
import math
from functools import partial

import torch
from monai.networks.blocks import Convolution
from monai.networks.nets import PatchDiscriminator
from torch import nn
from torch.nn import functional

from common.config import ModelConfig
from common.errors import ConfigError

LEAKY_SLOPE = 0.2
"""Negative slope of the LeakyReLU activations (the DCGAN / pix2pix choice)."""

DISCRIMINATOR_KERNEL = 4
"""Kernel size of the patch discriminator's convolutions (pix2pix's 4, padding 1)."""

GUMBEL_EPS = 1e-10
"""Keeps the uniform draws of the Gumbel noise away from 0 and 1, where log overflows."""


def _leaky() -> tuple[str, dict[str, float]]:
    return ("LEAKYRELU", {"negative_slope": LEAKY_SLOPE})


def group_norm(config: ModelConfig) -> tuple[str, dict[str, int]]:
    """MONAI's norm argument for GroupNorm with ``model.norm-groups`` groups."""
    return ("GROUP", {"num_groups": config.norm_groups})


def latent_shape(config: ModelConfig, spatial_shape: tuple[int, ...]) -> tuple[int, ...]:
    """Shape ``(latent_channels, *coarse)`` of the label generator's noise for one sample:
    the grid is halved once per width of ``model.channels``."""
    factor = 2 ** len(config.channels)
    return (config.latent_channels, *(size // factor for size in spatial_shape))


def check_sizes(config: ModelConfig, spatial_shape: tuple[int, ...]) -> None:
    """The networks' size constraints, as configuration errors that say what to change."""
    if len(config.channels) < 2:
        raise ConfigError(
            f"model.channels = {config.channels[0]}: the GAN needs at least two widths "
            f"(resolution levels), e.g. '{config.channels[0]},{2 * config.channels[0]}'"
        )
    widths = [*config.channels, *discriminator_widths(config)]
    if any(width % config.norm_groups for width in widths):
        raise ConfigError(
            f"model.channels = {','.join(map(str, config.channels))}: every width, and twice "
            f"to 2^{len(config.channels) - 1} times the first (the GAN discriminator's), must "
            f"be a multiple of model.norm-groups = {config.norm_groups}"
        )
    factor = 2 ** len(config.channels)
    if any(size % factor or size < 2 * factor for size in spatial_shape):
        raise ConfigError(
            f"the GAN's spatial shape {spatial_shape} must be divisible by {factor} (2 per "
            f"width of model.channels) and at least {2 * factor} (the discriminator's patches "
            f"need room); change data.target-shape or model.channels"
        )


def discriminator_widths(config: ModelConfig) -> list[int]:
    """Widths of the discriminator's normalised layers: the first width doubled per level."""
    return [config.channels[0] * 2**level for level in range(1, len(config.channels))]


class LabelGenerator(nn.Module):
    """Noise at a coarse grid → a fully connected layer over the whole grid → upsampling
    convolutions → ``num_classes`` logits per voxel.

    The fully connected layer lets every coarse voxel depend on all the noise, so one draw
    sets the whole anatomy at once (as DCGAN's first layer does); convolutions alone would
    leave distant parts of a label map independent of each other.
    """

    def __init__(
        self, config: ModelConfig, num_classes: int, spatial_shape: tuple[int, ...]
    ) -> None:
        super().__init__()
        dims, norm = config.spatial_dims, group_norm(config)
        act = _leaky()
        widths = list(reversed(config.channels))
        self.coarse = latent_shape(config, spatial_shape)[1:]
        cells = math.prod(self.coarse)
        self.first_width = widths[0]
        self.project = nn.Linear(config.latent_channels * cells, widths[0] * cells)
        layers: list[nn.Module] = [
            nn.GroupNorm(config.norm_groups, widths[0]),
            nn.LeakyReLU(LEAKY_SLOPE),
        ]
        in_width = widths[0]
        for width in widths:
            layers.append(nn.Upsample(scale_factor=2, mode="nearest"))
            layers.append(Convolution(dims, in_width, width, kernel_size=3, act=act, norm=norm))
            in_width = width
        layers.append(Convolution(dims, in_width, num_classes, kernel_size=1, conv_only=True))
        self.decoder = nn.Sequential(*layers)

    def forward(self, latent: torch.Tensor) -> torch.Tensor:
        """Logits ``(B, num_classes, *spatial)`` for noise ``(B, latent_channels, *coarse)``."""
        features = self.project(latent.flatten(1)).view(-1, self.first_width, *self.coarse)
        logits: torch.Tensor = self.decoder(features)
        return logits


class PaintingUNet(nn.Module):
    """A small UNet that paints an image from per-voxel class channels.

    One level per width of ``model.channels``: two 3x3 convolutions per level, stride-2
    convolutions down, nearest-neighbour upsampling then a convolution up (no transposed
    convolutions, hence no checkerboard artefacts), skip connections by concatenation, and a
    1x1 convolution to ``out_channels`` raw outputs.
    """

    def __init__(self, config: ModelConfig, in_channels: int, out_channels: int) -> None:
        super().__init__()
        dims, widths = config.spatial_dims, config.channels
        block = partial(Convolution, dims, kernel_size=3, act=_leaky(), norm=group_norm(config))
        self.down = nn.ModuleList()
        in_width = in_channels
        for level, width in enumerate(widths):
            self.down.append(
                nn.Sequential(
                    block(in_width, width, strides=1 if level == 0 else 2), block(width, width)
                )
            )
            in_width = width
        self.up = nn.ModuleList(
            nn.Sequential(nn.Upsample(scale_factor=2, mode="nearest"), block(deep, shallow))
            for shallow, deep in itertools.pairwise(widths)
        )
        self.merge = nn.ModuleList(block(2 * width, width) for width in widths[:-1])
        self.head = Convolution(dims, widths[0], out_channels, kernel_size=1, conv_only=True)

    def forward(self, features: torch.Tensor) -> torch.Tensor:
        """Raw outputs ``(B, out_channels, *spatial)`` for ``(B, in_channels, *spatial)``."""
        skips = []
        for down in self.down:
            features = down(features)
            skips.append(features)
        for level in reversed(range(len(self.up))):
            features = self.up[level](features)
            features = self.merge[level](torch.cat([features, skips[level]], dim=1))
        out: torch.Tensor = self.head(features)
        return out


class ImageGenerator(nn.Module):
    """The GAN's image generator: a :class:`PaintingUNet` from (one-hot label map, one noise
    channel) to a tanh image."""

    def __init__(self, config: ModelConfig, num_classes: int) -> None:
        super().__init__()
        self.unet = PaintingUNet(config, num_classes + 1, 1)

    def forward(self, one_hot: torch.Tensor, noise: torch.Tensor) -> torch.Tensor:
        """Image ``(B, 1, *spatial)`` in (-1, 1) for label channels and a noise channel."""
        return torch.tanh(self.unet(torch.cat([one_hot, noise], dim=1)))


def build_discriminator(config: ModelConfig, num_classes: int) -> PatchDiscriminator:
    """MONAI's PatchDiscriminator on (image, one-hot label) pairs: ``1 + num_classes`` input
    channels, GroupNorm; its forward returns every layer's output, the prediction last."""
    return PatchDiscriminator(
        spatial_dims=config.spatial_dims,
        channels=config.channels[0],
        in_channels=1 + num_classes,
        num_layers_d=len(config.channels) - 1,
        kernel_size=DISCRIMINATOR_KERNEL,
        activation=_leaky(),
        norm=group_norm(config),
    )


def one_hot(labels: torch.Tensor, num_classes: int) -> torch.Tensor:
    """Label maps ``(B, *spatial)`` as float one-hot channels ``(B, num_classes, *spatial)``."""
    return functional.one_hot(labels, num_classes).movedim(-1, 1).float()


def gumbel_one_hot(
    logits: torch.Tensor, temperature: float, generator: torch.Generator
) -> torch.Tensor:
    """Straight-through Gumbel-softmax over the channels of ``logits`` (dim 1): a hard one-hot
    sample forward, the tempered softmax's gradient backward; noise from ``generator``."""
    uniform = torch.rand(
        logits.shape, generator=generator, device=logits.device, dtype=logits.dtype
    )
    gumbel = -torch.log(-torch.log(uniform.clamp(GUMBEL_EPS, 1.0 - GUMBEL_EPS)))
    return straight_through_one_hot(logits + gumbel, temperature)


def straight_through_one_hot(logits: torch.Tensor, temperature: float) -> torch.Tensor:
    """The argmax of ``logits`` over dim 1 as a one-hot forward, the tempered softmax's
    gradient backward (no noise: the label map is a function of the generator's input)."""
    soft = torch.softmax(logits / temperature, dim=1)
    hard = one_hot(soft.argmax(dim=1), logits.shape[1]).to(soft.dtype)
    return hard - soft.detach() + soft
