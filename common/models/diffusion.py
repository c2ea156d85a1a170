"""The diffusion family: one joint DDPM denoiser over image and label-map channels.

Design. A single MONAI ``DiffusionModelUNet`` (no attention levels; its middle block always
holds one attention layer, kept narrow: a single head at the smallest resolution) denoises a
*joint* tensor of ``1 + K`` channels: the image and the K = ``num_classes`` one-hot label channels
scaled to [-1, 1]. It is trained as a DDPM (MONAI ``DDPMScheduler`` with
``model.diffusion-steps`` and ``model.beta-schedule``) with an MSE loss on the *velocity*
``sqrt(a_t) * noise - sqrt(1 - a_t) * x_0`` rather than the noise itself (see
``diffusion_process.PREDICTION_TYPE``: the same model, re-parametrised; it learns much faster).

* Stand-alone sampling (:meth:`DiffusionModel.sample`) runs the reverse process on all channels
  from pure noise (DDIM with ``model.sampling-steps`` by default, DDPM with ``model.sampler =
  "ddpm"``): the image is channel 0 clipped to [-1, 1], the label map the argmax over the label
  channels. It uses no real data at all, only the network and the generator's noise.
* Conditional sampling (:meth:`DiffusionModel.sample_images`) runs the same reverse process but
  replaces the label channels at every step by the given label maps noised to that step's level
  (the replacement method, as in RePaint). Because the network models image and labels jointly,
  this one network serves both uses; no separate label-conditioned network is needed.

Privacy. The whole denoiser sees real data, so ``private_networks = ("denoiser",)`` and DP-SGD
covers all of it. Its forward pass is per-sample (GroupNorm only, timestep embedding per sample,
attention within a sample) and runs once per training step, as Opacus' per-sample gradients need.
"""

from __future__ import annotations

from typing import ClassVar

import torch
from monai.networks.nets import DiffusionModelUNet
from torch.nn.functional import mse_loss

from common.config import ModelConfig, TrainingConfig
from common.errors import ConfigError
from common.models.diffusion_process import (
    from_joint,
    label_channels,
    reverse_process,
    sampling_scheduler,
    to_joint,
    training_scheduler,
    training_target,
)
from common.models.interface import Batch, GenerativeModel, SyntheticPairs
from common.models.registry import register_family
from common.models.runtime import autocast, check_label_maps, evaluating, on_device


@register_family("diffusion")
class DiffusionModel(GenerativeModel):
    """Joint image + label-map DDPM; see the module docstring for the design."""

    private_networks: ClassVar[tuple[str, ...]] = ("denoiser",)
    loss_names: ClassVar[tuple[str, ...]] = ("loss",)
    grad_sample_mode: ClassVar[str] = "functorch"
    """Per-sample gradients of the UNet's 3D convolutions by ``torch.func.vmap``: 1.9x a plain
    step at 32^3 and 1.5x at 64^3, against 3.7-5x with Opacus' unfold hooks (bench/results.json);
    Opacus' "ew" mode fails in the 3D convolution backward."""

    def __init__(
        self,
        config: ModelConfig,
        training: TrainingConfig,
        *,
        spatial_shape: tuple[int, ...],
        num_classes: int,
    ) -> None:
        super().__init__(config, training, spatial_shape=spatial_shape, num_classes=num_classes)
        _check_sizes(config, self.spatial_shape)
        denoiser = DiffusionModelUNet(
            spatial_dims=config.spatial_dims,
            in_channels=1 + num_classes,
            out_channels=1 + num_classes,
            channels=config.channels,
            attention_levels=(False,) * len(config.channels),
            num_res_blocks=config.num_res_blocks,
            norm_num_groups=config.norm_groups,
            num_head_channels=config.channels[-1],
        )
        self.nets = {"denoiser": denoiser}
        self.optimizers = {
            "denoiser": torch.optim.Adam(
                denoiser.parameters(),
                lr=training.learning_rate,
                betas=(training.adam_beta1, training.adam_beta2),
            )
        }
        self.scheduler = training_scheduler(config)

    def train_step(self, batch: Batch, generator: torch.Generator) -> dict[str, float]:
        """One DDPM step: noise the joint tensor at random timesteps, predict the velocity.

        Raises:
            ValueError: the batch is empty (with DP-SGD, take the privacy session's
                ``step_without_data()`` instead).
        """
        if batch.image.shape[0] == 0:
            raise ValueError(
                "train_step got an empty batch; an empty Poisson batch of DP-SGD must take "
                "the privacy session's step_without_data() instead"
            )
        denoiser, optimizer = self.nets["denoiser"], self.optimizers["denoiser"]
        device = self.device
        source = on_device(generator, device)
        clean = to_joint(
            batch.image.to(device, torch.float32), batch.label.to(device), self.num_classes
        )
        levels = torch.randint(
            0, self.config.diffusion_steps, (clean.shape[0],), generator=source, device=device
        )
        noise = torch.randn(clean.shape, generator=source, device=device)
        noisy = self.scheduler.add_noise(clean, noise, levels)
        denoiser.train()
        optimizer.zero_grad(set_to_none=True)
        with autocast(self.training, self.device):
            predicted = denoiser(noisy, timesteps=levels)
        loss = mse_loss(predicted.float(), training_target(self.scheduler, clean, noise, levels))
        loss.backward()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        return {"loss": float(loss.detach())}

    def sample(
        self,
        n: int,
        generator: torch.Generator,
        *,
        sampler: str | None = None,
        steps: int | None = None,
    ) -> SyntheticPairs:
        """``n`` stand-alone pairs from pure noise, ``training.batch-size`` at a time;
        ``sampler`` ("ddim" or "ddpm") and DDIM ``steps`` default to the config's (``None``)."""
        if n < 0:
            raise ValueError(f"n = {n}: the number of samples cannot be negative")
        images, labels = [], []
        for start in range(0, n, self.training.batch_size):
            count = min(self.training.batch_size, n - start)
            joint = self._reverse(count, generator, sampler, steps, known_labels=None)
            image, label = from_joint(joint)
            images.append(image)
            labels.append(label)
        if not images:
            empty = torch.zeros((0, *self.spatial_shape), device=self.device)
            return SyntheticPairs(image=empty[:, None], label=empty.long())
        return SyntheticPairs(image=torch.cat(images), label=torch.cat(labels))

    def sample_images(
        self,
        labels: torch.Tensor,
        generator: torch.Generator,
        *,
        sampler: str | None = None,
        steps: int | None = None,
    ) -> torch.Tensor:
        """Images ``(B, 1, *spatial)`` for the given label maps ``(B, *spatial)``, by
        replacing the label channels at every step (see the module docstring)."""
        check_label_maps(labels, self.spatial_shape, self.num_classes)
        images = []
        for start in range(0, labels.shape[0], self.training.batch_size):
            chunk = labels[start : start + self.training.batch_size].to(self.device)
            known = label_channels(chunk, self.num_classes, torch.float32)
            joint = self._reverse(chunk.shape[0], generator, sampler, steps, known_labels=known)
            images.append(from_joint(joint)[0])
        if not images:
            return torch.zeros((0, 1, *self.spatial_shape), device=self.device)
        return torch.cat(images)

    # -- internals ---------------------------------------------------------------------------
    def _reverse(
        self,
        count: int,
        generator: torch.Generator,
        sampler: str | None,
        steps: int | None,
        known_labels: torch.Tensor | None,
    ) -> torch.Tensor:
        scheduler = sampling_scheduler(self.config, sampler or self.config.sampler, steps)
        denoiser = self.nets["denoiser"]
        shape = (count, 1 + self.num_classes, *self.spatial_shape)

        def predict(noisy: torch.Tensor, levels: torch.Tensor) -> torch.Tensor:
            with autocast(self.training, self.device):
                predicted: torch.Tensor = denoiser(noisy, timesteps=levels)
            return predicted

        with evaluating(self.nets), torch.no_grad():
            return reverse_process(
                predict,
                scheduler,
                shape,
                on_device(generator, self.device),
                forward_scheduler=self.scheduler,
                known_labels=known_labels,
                device=self.device,
            )


def _check_sizes(config: ModelConfig, spatial_shape: tuple[int, ...]) -> None:
    """The UNet's constraints, as configuration errors that say what to change."""
    if any(width % config.norm_groups for width in config.channels):
        raise ConfigError(
            f"model.channels = {','.join(map(str, config.channels))}: every width must be a "
            f"multiple of model.norm-groups = {config.norm_groups}"
        )
    factor = 2 ** (len(config.channels) - 1)
    if any(size % factor for size in spatial_shape):
        raise ConfigError(
            f"the model's spatial shape {spatial_shape} must be divisible by {factor} "
            f"(2 per extra level of model.channels); change data.target-shape or model.channels"
        )
