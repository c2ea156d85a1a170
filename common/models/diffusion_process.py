"""The forward (noising) and reverse (sampling) processes of the tissue-map denoiser.

A tissue map of C classes (``common.models.tissue``) is diffused as C one-hot channels scaled
to [-1, 1] (continuous diffusion of discrete data, as "analog bits" do): the class of a voxel
is the argmax of its channels at the end. :func:`reverse_process` runs MONAI's DDIM or DDPM
scheduler from pure noise; given known channels (a label map fixes some) it replaces them at
every step by their values noised to the step's level (the replacement method of RePaint,
without resampling), so the rest is drawn conditioned on them.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TypeVar

import torch
from monai.networks.schedulers import DDIMScheduler, DDPMScheduler, Scheduler
from torch.nn.functional import one_hot

from common.config import ModelConfig

SAMPLERS = ("ddim", "ddpm")
PREDICTION_TYPES = {"velocity": "v_prediction", "class-probabilities": "sample"}
"""MONAI's prediction type for each ``model.denoiser-output``. The velocity v = sqrt(a_t) * noise
- sqrt(1 - a_t) * x_0 (Salimans and Ho, 2022): with epsilon prediction the implied x_0 error
grows as sqrt((1 - a_t) / a_t) at high noise levels (on the 16^3 test cohort, epsilon prediction
still gave noise-like volumes after 400 steps, v-prediction body-like ones after 200-300). Class
probabilities are an x_0 estimate ("sample"): the softmax of the denoiser's logits, scaled to the
one-hot channels' [-1, 1]."""

Denoiser = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]
"""``denoiser(x_t, timesteps) -> prediction`` (of the model's prediction type), as ``x_t``."""

ReverseScheduler = DDIMScheduler | DDPMScheduler
_Scheduler = TypeVar("_Scheduler", DDIMScheduler, DDPMScheduler)


def one_hot_channels(classes: torch.Tensor, count: int) -> torch.Tensor:
    """A class map ``(B, *s)`` as one-hot channels ``(B, count, *s)`` scaled to [-1, 1]."""
    return one_hot(classes.long(), count).movedim(-1, 1).float() * 2.0 - 1.0


def training_scheduler(config: ModelConfig) -> DDPMScheduler:
    """The forward (noising) process: ``config.diffusion_steps`` steps of ``beta_schedule``
    (rescaled to a zero terminal SNR with ``config.zero_terminal_snr``)."""
    return _with_schedule(
        DDPMScheduler(
            num_train_timesteps=config.diffusion_steps,
            schedule=config.beta_schedule,
            prediction_type=PREDICTION_TYPES[config.denoiser_output],
        ),
        config,
    )


def zero_terminal_snr(alphas_cumprod: torch.Tensor) -> torch.Tensor:
    """``alphas_cumprod`` rescaled so that the last is 0 and the first unchanged (Lin et al.
    2024, algorithm 1: sqrt(alpha_bar) shifted and scaled linearly)."""
    roots = alphas_cumprod.sqrt()
    first, last = roots[0].clone(), roots[-1].clone()
    rescaled: torch.Tensor = ((roots - last) * first / (first - last)) ** 2
    return rescaled


def _with_schedule(scheduler: _Scheduler, config: ModelConfig) -> _Scheduler:
    """``scheduler`` with its alphas rescaled to a zero terminal SNR when the config asks."""
    if config.zero_terminal_snr:
        cumulative = zero_terminal_snr(scheduler.alphas_cumprod)
        previous = torch.cat([cumulative.new_ones(1), cumulative[:-1]])
        scheduler.alphas_cumprod = cumulative
        scheduler.alphas = cumulative / previous
        scheduler.betas = 1.0 - scheduler.alphas
    return scheduler


def velocity_target(
    scheduler: Scheduler, clean: torch.Tensor, noise: torch.Tensor, levels: torch.Tensor
) -> torch.Tensor:
    """The velocity a v-predicting denoiser should output for ``clean`` noised with ``noise``."""
    velocity: torch.Tensor = scheduler.get_velocity(clean, noise, levels)
    return velocity


def clean_from_velocity(
    scheduler: Scheduler, noisy: torch.Tensor, velocity: torch.Tensor, levels: torch.Tensor
) -> torch.Tensor:
    """The clean estimate x_0 = sqrt(a_t) x_t - sqrt(1 - a_t) v of a velocity prediction."""
    alphas = scheduler.alphas_cumprod.to(noisy.device)[levels].view(-1, *([1] * (noisy.dim() - 1)))
    clean: torch.Tensor = alphas.sqrt() * noisy - (1.0 - alphas).sqrt() * velocity
    return clean


def loss_weights(scheduler: Scheduler, levels: torch.Tensor, min_snr_gamma: float) -> torch.Tensor:
    """Per-sample weights ``(B,)`` of the denoising loss at ``levels``: 1 each, or with
    ``min_snr_gamma`` > 0 the Min-SNR-gamma weights (Hang et al. 2023) for the velocity target,
    ``min(SNR, gamma) / (SNR + 1)``, with ``SNR = a_t / (1 - a_t)``. They stop the many nearly
    clean timesteps, whose targets are easy and whose gradients conflict with the noisy ones,
    from dominating training."""
    if min_snr_gamma <= 0:
        return torch.ones(levels.shape, device=levels.device)
    alphas = scheduler.alphas_cumprod.to(levels.device)[levels]
    snr = alphas / (1.0 - alphas)
    return torch.clamp(snr, max=min_snr_gamma) / (snr + 1.0)


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
            prediction_type=PREDICTION_TYPES[config.denoiser_output],
        )
        ddpm.set_timesteps(total)
        return _with_schedule(ddpm, config)
    count = config.sampling_steps if steps is None else steps
    if not 1 <= count <= total:
        raise ValueError(
            f"DDIM steps = {count} must be between 1 and model.diffusion-steps = {total}"
        )
    ddim = DDIMScheduler(
        num_train_timesteps=total,
        schedule=config.beta_schedule,
        prediction_type=PREDICTION_TYPES[config.denoiser_output],
    )
    ddim.set_timesteps(count)
    return _with_schedule(ddim, config)


def reverse_process(
    denoiser: Denoiser,
    scheduler: ReverseScheduler,
    shape: tuple[int, ...],
    generator: torch.Generator,
    *,
    forward_scheduler: Scheduler,
    known: tuple[torch.Tensor, torch.Tensor] | None = None,
    device: torch.device | None = None,
) -> torch.Tensor:
    """Run the reverse process from pure noise to a tensor of ``shape``.

    With ``known`` = (values, mask), both shaped like the sample, the masked entries of ``x_t``
    are replaced before each step by ``values`` noised to level ``t`` with
    ``forward_scheduler``, and by the clean values at the end (RePaint's replacement, without
    resampling). All noise comes from ``generator``, which must be on ``device``.
    """
    device = generator.device if device is None else device
    sample = torch.randn(shape, generator=generator, device=device)
    for timestep in scheduler.timesteps.tolist():
        level = torch.full((shape[0],), timestep, dtype=torch.long, device=device)
        if known is not None:
            values, mask = known
            noise = torch.randn(values.shape, generator=generator, device=device)
            sample = torch.where(mask, forward_scheduler.add_noise(values, noise, level), sample)
        predicted = denoiser(sample, level).float()
        sample, _ = scheduler.step(predicted, timestep, sample, generator=generator)
    if known is not None:
        sample = torch.where(known[1], known[0], sample)
    return sample
