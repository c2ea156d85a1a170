"""The one interface every generator family satisfies (GAN and diffusion alike).

A model owns named networks (``nets``) and one optimiser per network (``optimizers``).
``private_networks`` names the networks that see real data: those, and only those, are trained
with DP-SGD; the others only ever see synthetic data or those networks' outputs, so they are
post-processing and cost no privacy. The trainer makes the private networks private by replacing
``nets[name]`` with Opacus' wrapped module and ``optimizers[name]`` with its DP optimiser, so a
family must always reach its networks and optimisers through these two dicts.

Tensors: images ``(B, 1, *spatial)`` in [-1, 1]; label maps ``(B, *spatial)`` of class indices
(0 = background, then the schema's labels). ``spatial`` is (z, y, x) in 3D, (y, x) in 2D.
Every random draw takes an explicit ``torch.Generator``.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import dataclass
from typing import ClassVar

import torch
from torch import nn

from common.config import ModelConfig, TrainingConfig
from common.models.averaging import WeightAverage

AVERAGE_SUFFIX = "-ema"
""":meth:`GenerativeModel.network_state` names a network's weight average ``<network>-ema``."""


@dataclass(frozen=True)
class Batch:
    """Real training pairs: ``image`` (B, 1, *spatial) float, ``label`` (B, *spatial) long."""

    image: torch.Tensor
    label: torch.Tensor


@dataclass(frozen=True)
class SyntheticPairs:
    """Generated pairs, same layout as :class:`Batch`."""

    image: torch.Tensor
    label: torch.Tensor


def unwrap(module: nn.Module) -> nn.Module:
    """The network inside an Opacus ``GradSampleModule`` (or the module itself)."""
    inner = getattr(module, "_module", None)
    return inner if isinstance(inner, nn.Module) else module


class GenerativeModel(ABC):
    """A generator of (image, label map) pairs, trained at a site and federated by name."""

    family: ClassVar[str]
    private_networks: ClassVar[tuple[str, ...]]
    loss_names: ClassVar[tuple[str, ...]]
    """The keys of :meth:`train_step`'s result (federated rounds report each one)."""
    grad_sample_mode: ClassVar[str] = "hooks"
    """Opacus per-sample gradient mode ``privacy.grad-sample-mode = auto`` picks: the fastest
    measured for the family's private network (``bench/generators.py``)."""
    averaged_networks: ClassVar[tuple[str, ...]] = ()
    """Networks whose weight average (``training.ema-decay`` > 0) the family samples with."""
    membership_attack: ClassVar[str]
    """What :meth:`membership_scores` scores, in words (for reports)."""
    membership_uses_timesteps: ClassVar[bool] = False
    """Whether :meth:`membership_scores` averages over diffusion timesteps."""

    def __init__(
        self,
        config: ModelConfig,
        training: TrainingConfig,
        *,
        spatial_shape: tuple[int, ...],
        num_classes: int,
    ) -> None:
        self.config = config
        self.training = training
        self.spatial_shape = tuple(spatial_shape)
        self.num_classes = num_classes
        self.nets: dict[str, nn.Module] = {}
        self.optimizers: dict[str, torch.optim.Optimizer] = {}
        self.averages: dict[str, WeightAverage] = {}

    def keep_averages(self) -> None:
        """Start the weight averages of :attr:`averaged_networks` (families call this once
        their networks exist); none when ``training.ema-decay`` is 0."""
        if self.training.ema_decay > 0:
            self.averages = {
                name: WeightAverage(unwrap(self.nets[name])) for name in self.averaged_networks
            }

    def update_averages(self) -> None:
        """Move every weight average towards its network (after each optimisation step)."""
        for name, average in self.averages.items():
            average.update(unwrap(self.nets[name]), self.training.ema_decay)

    def sampling_network(self, name: str) -> nn.Module:
        """The network to generate with: its weight average when one is kept."""
        average = self.averages.get(name)
        return average.network if average is not None else self.nets[name]

    # -- what the federation and checkpoints move -------------------------------------------
    def network_state(self) -> dict[str, dict[str, torch.Tensor]]:
        """Every network's parameters and buffers, by network name (wrappers removed), and
        every weight average's as ``<network>-ema``."""
        state = {name: unwrap(net).state_dict() for name, net in self.nets.items()}
        for name, average in self.averages.items():
            state[f"{name}{AVERAGE_SUFFIX}"] = average.state_dict()
        return state

    def load_network_state(self, state: dict[str, dict[str, torch.Tensor]]) -> None:
        """Load :meth:`network_state` output (strict: names and shapes must match)."""
        for name, net in self.nets.items():
            unwrap(net).load_state_dict(state[name])
        for name, average in self.averages.items():
            average.load_state_dict(state[f"{name}{AVERAGE_SUFFIX}"])

    def to(self, device: torch.device) -> GenerativeModel:
        """Move every network (and weight average) to ``device``."""
        for net in [*self.nets.values(), *self.averages.values()]:
            net.to(device)
        return self

    @property
    def device(self) -> torch.device:
        """Where the networks are."""
        return next(next(iter(self.nets.values())).parameters()).device

    def train_mode(self, training: bool = True) -> None:
        """Put every network in train (or eval) mode."""
        for net in self.nets.values():
            net.train(training)

    # -- what each family implements ---------------------------------------------------------
    @abstractmethod
    def train_step(self, batch: Batch, generator: torch.Generator) -> dict[str, float]:
        """One optimisation step on a batch of real pairs; returns scalar losses by name."""

    @abstractmethod
    def sample(self, n: int, generator: torch.Generator) -> SyntheticPairs:
        """``n`` stand-alone synthetic pairs, made without any real data."""

    @abstractmethod
    def sample_images(self, labels: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
        """Images generated for the given label maps ``(B, *spatial)``: (B, 1, *spatial)."""

    @abstractmethod
    def membership_scores(
        self, batch: Batch, generator: torch.Generator, timesteps: tuple[int, ...]
    ) -> torch.Tensor:
        """A membership-inference attack's score per real pair ``(B,)``, on the CPU: higher
        means "more likely a training case". ``generator`` draws any noise the attack needs
        (the same draw for every case of the batch); ``timesteps`` are the diffusion
        timesteps it averages over (families without timesteps ignore them)."""
