"""An exponential moving average (EMA) of a network's weights, the copy a family samples with.

Sampling from an average of the last ~``1 / (1 - decay)`` steps' weights rather than from the
last step's removes most of the step-to-step jitter of the weights, which in a diffusion model
shows as speckle and in a GAN as flicker between modes (Ho et al. 2020, Karras et al. 2018). The
average only ever reads the trained network's weights, never data: with DP-SGD it is post-
processing and costs no privacy.

Early on the decay is warmed up as ``min(decay, (1 + n) / (10 + n))`` after ``n`` updates, so
that the average is not dominated by the random initial weights. ``n`` is a buffer of the
average, so it is saved in checkpoints and federated (sites that took the same steps agree).
"""

from __future__ import annotations

import copy

import torch
from torch import nn

WARMUP_OFFSET = 10.0
"""The decay after ``n`` updates is at most ``(1 + n) / (WARMUP_OFFSET + n)``."""


class WeightAverage(nn.Module):
    """A frozen copy of ``network`` whose weights follow an EMA of the original's."""

    def __init__(self, network: nn.Module) -> None:
        super().__init__()
        self.network = copy.deepcopy(network)
        self.network.requires_grad_(False)
        self.network.train(False)
        self.updates: torch.Tensor
        self.register_buffer("updates", torch.zeros((), dtype=torch.float32))

    def train(self, mode: bool = True) -> WeightAverage:
        """The average always stays in eval mode (it is never trained)."""
        super().train(False)
        return self

    def decay_now(self, decay: float) -> float:
        """The decay the next update uses: ``decay`` after the warm-up."""
        updates = float(self.updates)
        return min(decay, (1.0 + updates) / (WARMUP_OFFSET + updates))

    @torch.no_grad()
    def update(self, network: nn.Module, decay: float) -> None:
        """Move the average towards ``network``'s current weights (same architecture)."""
        rate = 1.0 - self.decay_now(decay)
        mine = dict(self.network.named_parameters())
        for name, parameter in network.named_parameters():
            mine[name].lerp_(parameter.detach().to(mine[name].dtype), rate)
        own_buffers = dict(self.network.named_buffers())
        for name, buffer in network.named_buffers():
            own_buffers[name].copy_(buffer)
        self.updates.add_(1.0)

    def forward(self, *args: object, **kwargs: object) -> object:
        """The averaged network's forward."""
        return self.network(*args, **kwargs)
