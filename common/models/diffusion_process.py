"""The forward (noising) and reverse (sampling) processes of the joint image + label denoiser.

A *joint* tensor is ``(B, 1 + K, *spatial)``: channel 0 is the image in [-1, 1], channels 1..K are
the one-hot label map scaled to [-1, 1] (K = number of classes, background included).
:func:`reverse_process` runs MONAI's DDIM or DDPM scheduler from pure noise; given known labels it
replaces the label channels at every step by those labels noised to the step's level (the
replacement method of RePaint, without resampling), so the image is drawn conditioned on them.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from monai.networks.schedulers import DDIMScheduler, DDPMScheduler, Scheduler
from torch.nn.functional import one_hot

from common.config import ModelConfig

SAMPLERS = ("ddim", "ddpm")
PREDICTION_TYPE = "v_prediction"  # or MONAI's "epsilon" or "sample"
"""What the denoiser predicts: the velocity v = sqrt(a_t) * noise - sqrt(1 - a_t) * x_0 (Salimans
and Ho, 2022), MONAI's ``v_prediction``; the schedulers turn it into noise and x_0 estimates. With
epsilon prediction the implied x_0 error grows as sqrt((1 - a_t) / a_t) at high noise levels: on
the 16^3 test cohort, epsilon prediction still gave noise-like volumes after 400 steps,
v-prediction body-like ones after 200-300."""

Denoiser = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]
"""``denoiser(x_t, timesteps) -> prediction`` (of :data:`PREDICTION_TYPE`), shaped as ``x_t``."""

ReverseScheduler = DDIMScheduler | DDPMScheduler


def to_joint(image: torch.Tensor, label: torch.Tensor, num_classes: int) -> torch.Tensor:
    """Image ``(B, 1, *s)`` and label map ``(B, *s)`` as one joint tensor ``(B, 1 + K, *s)``."""
    return torch.cat([image, label_channels(label, num_classes, image.dtype)], dim=1)


def label_channels(label: torch.Tensor, num_classes: int, dtype: torch.dtype) -> torch.Tensor:
    """A label map ``(B, *s)`` as one-hot channels ``(B, K, *s)`` scaled to [-1, 1]."""
    channels = one_hot(label.long(), num_classes).movedim(-1, 1).to(dtype)
    return channels * 2.0 - 1.0


def from_joint(joint: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """(image clipped to [-1, 1], label map = argmax over the label channels) of a joint tensor."""
    return joint[:, :1].clamp(-1.0, 1.0), joint[:, 1:].argmax(dim=1)


def training_scheduler(config: ModelConfig) -> DDPMScheduler:
    """The forward (noising) process: ``config.diffusion_steps`` steps of ``beta_schedule``."""
    return DDPMScheduler(
        num_train_timesteps=config.diffusion_steps,
        schedule=config.beta_schedule,
        prediction_type=PREDICTION_TYPE,
    )


def training_target(
    scheduler: Scheduler, clean: torch.Tensor, noise: torch.Tensor, levels: torch.Tensor
) -> torch.Tensor:
    """What the denoiser should output for ``clean`` noised with ``noise`` at ``levels``."""
    if PREDICTION_TYPE == "epsilon":
        return noise
    if PREDICTION_TYPE == "sample":
        return clean
    velocity: torch.Tensor = scheduler.get_velocity(clean, noise, levels)
    return velocity


def sampling_scheduler(config: ModelConfig, sampler: str, steps: int | None) -> ReverseScheduler:
    """A scheduler ready to sample: DDIM with ``steps`` (default ``config.sampling_steps``)
    steps, or DDPM, which always runs all ``config.diffusion_steps`` steps.

    Raises:
        ValueError: an unknown sampler, or a step count the sampler cannot run.
    """
    if sampler not in SAMPLERS:
        raise ValueError(f"sampler {sampler!r} is not one of {', '.join(SAMPLERS)}")
    total = config.diffusion_steps
    if sampler == "ddpm":
        if steps is not None and steps != total:
            raise ValueError(
                f"DDPM sampling runs every one of the {total} training steps (model.diffusion-"
                f"steps); steps={steps} needs sampler='ddim', or pass steps=None"
            )
        ddpm = DDPMScheduler(
            num_train_timesteps=total,
            schedule=config.beta_schedule,
            prediction_type=PREDICTION_TYPE,
        )
        ddpm.set_timesteps(total)
        return ddpm
    count = config.sampling_steps if steps is None else steps
    if not 1 <= count <= total:
        raise ValueError(
            f"DDIM steps = {count} must be between 1 and model.diffusion-steps = {total}"
        )
    ddim = DDIMScheduler(
        num_train_timesteps=total, schedule=config.beta_schedule, prediction_type=PREDICTION_TYPE
    )
    ddim.set_timesteps(count)
    return ddim


def reverse_process(
    denoiser: Denoiser,
    scheduler: ReverseScheduler,
    shape: tuple[int, ...],
    generator: torch.Generator,
    *,
    forward_scheduler: Scheduler,
    known_labels: torch.Tensor | None = None,
    device: torch.device | None = None,
) -> torch.Tensor:
    """Run the reverse process from pure noise to a joint tensor of ``shape``.

    With ``known_labels`` (one-hot channels scaled to [-1, 1], ``(B, K, *s)``), the label
    channels of ``x_t`` are replaced before each step by the known labels noised to level ``t``
    with ``forward_scheduler``, and by the clean known labels at the end.
    All noise comes from ``generator``, which must be on ``device``.
    """
    device = generator.device if device is None else device
    sample = torch.randn(shape, generator=generator, device=device)
    for timestep in scheduler.timesteps.tolist():
        level = torch.full((shape[0],), timestep, dtype=torch.long, device=device)
        if known_labels is not None:
            noise = torch.randn(known_labels.shape, generator=generator, device=device)
            noised = forward_scheduler.add_noise(known_labels, noise, level)
            sample = torch.cat([sample[:, :1], noised], dim=1)
        predicted = denoiser(sample, level).float()
        sample, _ = scheduler.step(predicted, timestep, sample, generator=generator)
    if known_labels is not None:
        sample = torch.cat([sample[:, :1], known_labels], dim=1)
    return sample
