"""The diffusion family: a tissue-map diffusion model and an image decoder, trained as one.

Design (brainSPADE's split of label-map generation and label-conditioned image synthesis, in
one network that DP-SGD trains as a whole):

* ``denoiser``: a MONAI ``DiffusionModelUNet`` (no attention levels; its middle block always
  holds one narrow attention layer) denoises the C one-hot channels of a *tissue map*
  (``common.models.tissue``: the label map, with unlabelled voxels split into intensity classes
  by ``model.tissue-thresholds`` on the image smoothed by ``model.tissue-smoothing``). It is
  trained as a DDPM (``model.diffusion-steps``, ``model.beta-schedule``) with an MSE loss on the
  velocity (``diffusion_process``), optionally Min-SNR weighted (``model.min-snr-gamma``),
  weighted ``1 + model.tumour-weight`` inside the tumour (a few hundred voxels of a 32^3 map).
  With ``model.denoiser-output = class-probabilities`` it outputs each voxel's class logits
  instead: the clean-map estimate is their softmax (a mixture of classes, never an arbitrary
  vector), trained with cross-entropy, as discrete-data diffusion models in continuous space
  do (CDCD, Dieleman et al. 2022). With ``model.self-conditioning`` it also sees its previous
  clean-map estimate (Chen et al. 2023, "analog bits"): at sampling the last step's, in
  training for a random half of the cases its own estimate made without gradients.
  Discrete maps with ±1 contrasts are learned in a few thousand steps; the grey values of a CT,
  whose soft-tissue contrasts are a few hundredths of its window, are not (a joint image + label
  denoiser still drew speckle after 1,000 steps).
* ``decoder``: a :class:`~common.models.gan_networks.PaintingUNet` from the one-hot tissue map
  to the image (``common.models.painting``, weighted by ``model.decoder-weight``): with
  ``model.image-decoder = "median"`` each voxel's median in (-1, 1) (an L1 loss on the real
  pairs) and one learned noise level, the image being the median plus white Gaussian noise of
  that level; with ``"quantiles"`` each voxel's distribution as quantiles (the pinball loss),
  the image drawn from them through a Gaussian copula whose colouring kernel is learned from
  the real images' texture, so that a release is as varied, voxel by voxel, as the scans.

Sampling. Stand-alone (:meth:`DiffusionModel.sample`): DDIM (``model.sampling-steps``) or
DDPM from pure noise, the argmax tissue map, its labels as the label map and the decoder's
image: no real data at all. For given label maps (:meth:`DiffusionModel.sample_images`): the
label channels (and the intensity channels of labelled voxels) are replaced at every step by
the known values noised to that level (RePaint), so only the unlabelled anatomy is drawn.

Privacy. Both networks see real data; they are one module (``nets["generator"]``), so DP-SGD
clips each case's gradient over both together and charges privacy once. The forward pass is
per-sample (GroupNorm only, timestep embedding per sample, attention within a sample).
"""

from __future__ import annotations

from typing import ClassVar

import torch
from monai.networks.nets import DiffusionModelUNet
from torch import nn
from torch.nn.functional import cross_entropy, mse_loss, softmax

from common.config import ModelConfig, TrainingConfig
from common.errors import ConfigError
from common.models.diffusion_process import (
    clean_from_velocity,
    loss_weights,
    one_hot_channels,
    reverse_process,
    sampling_scheduler,
    training_scheduler,
    velocity_target,
)
from common.models.gan_losses import tumour_values_for
from common.models.gan_networks import PaintingUNet
from common.models.interface import Batch, GenerativeModel, SyntheticPairs, unwrap
from common.models.painting import (
    MedianPainting,
    NoiseLevel,
    Painting,
    QuantilePainting,
    TextureKernel,
    monotone_quantiles,
    quantile_step_bias,
)
from common.models.runtime import (
    autocast,
    check_label_maps,
    evaluating,
    on_device,
    shift_label_logits,
)
from common.models.tissue import TissueClasses


class TissueGenerator(nn.Module):
    """The family's one private network: the tissue-map denoiser and the image decoder."""

    def __init__(self, config: ModelConfig, tissues: TissueClasses) -> None:
        super().__init__()
        self.self_conditioning = config.self_conditioning
        self.denoiser = DiffusionModelUNet(
            spatial_dims=config.spatial_dims,
            in_channels=tissues.count * (2 if config.self_conditioning else 1),
            out_channels=tissues.count,
            channels=config.channels,
            attention_levels=(False,) * len(config.channels),
            num_res_blocks=config.num_res_blocks,
            norm_num_groups=config.norm_groups,
            num_head_channels=config.channels[-1],
        )
        self.quantile_decoder = config.image_decoder == "quantiles"
        outputs = config.decoder_quantiles if self.quantile_decoder else 1
        self.decoder = PaintingUNet(config, tissues.count, outputs)
        if self.quantile_decoder:
            self.texture = TextureKernel(config.texture_kernel, config.spatial_dims)
            _start_narrow(self.decoder)
        else:
            self.noise = NoiseLevel()

    def forward(
        self,
        noisy: torch.Tensor,
        levels: torch.Tensor,
        tissue_one_hot: torch.Tensor,
        estimate: torch.Tensor | None = None,
    ) -> tuple[torch.Tensor, Painting]:
        """(the denoiser's output for the noisy maps, the decoder's painting of the tissue
        maps) in one pass, as Opacus' per-sample gradients need; ``estimate`` is the
        self-conditioning input."""
        return self.denoise(noisy, levels, estimate), self.paint(tissue_one_hot)

    def denoise(
        self, noisy: torch.Tensor, levels: torch.Tensor, estimate: torch.Tensor | None = None
    ) -> torch.Tensor:
        """The denoiser's output for noisy maps; with self-conditioning, the previous clean-map
        estimate (zeros for none) is given beside them."""
        if self.self_conditioning:
            given = torch.zeros_like(noisy) if estimate is None else estimate.to(noisy.dtype)
            noisy = torch.cat([noisy, given], dim=1)
        denoised: torch.Tensor = self.denoiser(noisy, timesteps=levels)
        return denoised

    def paint(self, tissue_one_hot: torch.Tensor) -> Painting:
        """The decoder's painting of one-hot tissue maps (0/1): median and noise level, or
        quantiles and texture kernel (``model.image-decoder``)."""
        raw = self.decoder(tissue_one_hot)
        if self.quantile_decoder:
            return QuantilePainting(monotone_quantiles(raw), self.texture(raw))
        median = torch.tanh(raw)
        return MedianPainting(median, self.noise(median))


def _start_narrow(decoder: PaintingUNet) -> None:
    """Start the quantile decoder's gaps at INITIAL_QUANTILE_STEP everywhere: every output
    channel but the median's gets zero weights and the bias whose softplus that step is."""
    convolution = decoder.head.conv
    if not isinstance(convolution, nn.Conv1d | nn.Conv2d | nn.Conv3d) or convolution.bias is None:
        raise TypeError("the decoder's head must be a convolution with a bias")  # pragma: no cover
    middle = convolution.out_channels // 2
    gaps = [channel for channel in range(convolution.out_channels) if channel != middle]
    with torch.no_grad():
        convolution.weight[gaps] = 0.0
        convolution.bias[gaps] = quantile_step_bias()


class DiffusionModel(GenerativeModel):
    """Tissue-map DDPM + image decoder; see the module docstring for the design."""

    family: ClassVar[str] = "diffusion"
    private_networks: ClassVar[tuple[str, ...]] = ("generator",)
    averaged_networks: ClassVar[tuple[str, ...]] = ("generator",)
    loss_names: ClassVar[tuple[str, ...]] = ("loss", "denoising", "decoding")
    membership_attack: ClassVar[str] = (
        "minus the denoising loss averaged over the timesteps, the same noise for every case"
    )
    membership_uses_timesteps: ClassVar[bool] = True
    grad_sample_mode: ClassVar[str] = "functorch"
    """Per-sample gradients of the UNets' 3D convolutions by ``torch.func.vmap``: 1.9x a plain
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
        self.tissues = TissueClasses(num_classes, config.thresholds(), config.tissue_smoothing)
        self.tumour_values = tumour_values_for(num_classes)
        generator = TissueGenerator(config, self.tissues)
        self.nets = {"generator": generator}
        self.optimizers = {
            "generator": torch.optim.Adam(
                generator.parameters(),
                lr=training.learning_rate,
                betas=(training.adam_beta1, training.adam_beta2),
            )
        }
        self.scheduler = training_scheduler(config)
        self.keep_averages()

    def train_step(self, batch: Batch, generator: torch.Generator) -> dict[str, float]:
        """One step: the denoiser on the real tissue maps noised at random timesteps, the
        decoder on the real tissue maps and images (one forward, one backward).

        Raises:
            ValueError: the batch is empty (with DP-SGD, take the privacy session's
                ``step_without_data()`` instead).
        """
        if batch.image.shape[0] == 0:
            raise ValueError(
                "train_step got an empty batch; an empty Poisson batch of DP-SGD must take "
                "the privacy session's step_without_data() instead"
            )
        net, optimizer = self.nets["generator"], self.optimizers["generator"]
        device = self.device
        source = on_device(generator, device)
        image = batch.image.to(device, torch.float32)
        tissue = self.tissues.tissue_map(image, batch.label.to(device))
        clean = one_hot_channels(tissue, self.tissues.count)
        levels = torch.randint(
            0, self.config.diffusion_steps, (clean.shape[0],), generator=source, device=device
        )
        noise = torch.randn(clean.shape, generator=source, device=device)
        noisy = self.scheduler.add_noise(clean, noise, levels)
        net.train()
        estimate = self._self_conditioning_input(net, noisy, levels, source)
        optimizer.zero_grad(set_to_none=True)
        with autocast(self.training, device):
            output, painting = net(noisy, levels, _painting_input(tissue, self.tissues), estimate)
        voxels = self._voxel_weights(batch.label.to(device))
        denoising = self._denoising_loss(output, tissue, clean, noise, levels, voxels)
        decoding = painting.loss(image, voxels)
        loss = (denoising + self.config.decoder_weight * decoding).mean()
        loss.backward()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        return {
            "loss": float(loss.detach()),
            "denoising": float(denoising.detach().mean()),
            "decoding": float(decoding.detach().mean()),
        }

    def _denoising_loss(
        self,
        output: torch.Tensor,
        tissue: torch.Tensor,
        clean: torch.Tensor,
        noise: torch.Tensor,
        levels: torch.Tensor,
        voxels: torch.Tensor,
    ) -> torch.Tensor:
        """The denoising loss per case ``(B,)`` of the denoiser's ``output`` for ``clean``
        one-hot maps (of ``tissue``) noised by ``noise`` at ``levels``; ``voxels`` weights."""
        if self.config.denoiser_output == "class-probabilities":
            errors = cross_entropy(output.float(), tissue, reduction="none")[:, None]
            weights = torch.ones(levels.shape, device=levels.device)
        else:
            target = velocity_target(self.scheduler, clean, noise, levels)
            errors = mse_loss(output.float(), target, reduction="none").mean(dim=1, keepdim=True)
            weights = loss_weights(self.scheduler, levels, self.config.min_snr_gamma)
        return _per_sample(voxels * errors) * weights

    def membership_scores(
        self, batch: Batch, generator: torch.Generator, timesteps: tuple[int, ...]
    ) -> torch.Tensor:
        """Minus each real pair's denoising loss (the training objective's denoising term),
        averaged over ``timesteps``, by the network releases are sampled with (the weight
        average when one is kept), without self-conditioning input. One noise draw per
        timestep, of one case's shape, serves every case: cases are scored alike whatever
        batch they are in. A denoiser that memorised its training maps denoises them better.

        Raises:
            ConfigError: no timestep, or one not below ``model.diffusion-steps``.
        """
        steps = self.config.diffusion_steps
        if not timesteps or max(timesteps) >= steps:
            raise ConfigError(
                f"audit.membership-timesteps = {','.join(map(str, timesteps))}: give timesteps "
                f"below the model's model.diffusion-steps = {steps}"
            )
        check_label_maps(batch.label, self.spatial_shape, self.num_classes)
        device = self.device
        source = on_device(generator, device)
        image = batch.image.to(device, torch.float32)
        label = batch.label.to(device)
        tissue = self.tissues.tissue_map(image, label)
        clean = one_hot_channels(tissue, self.tissues.count)
        voxels = self._voxel_weights(label)
        net = _generator_of(self.sampling_network("generator"))
        losses = []
        with evaluating(self.nets), torch.no_grad():
            for timestep in timesteps:
                draw = torch.randn((1, *clean.shape[1:]), generator=source, device=device)
                noise = draw.expand_as(clean)
                levels = torch.full((clean.shape[0],), timestep, device=device, dtype=torch.long)
                noisy = self.scheduler.add_noise(clean, noise, levels)
                with autocast(self.training, device):
                    output = net.denoise(noisy, levels)
                losses.append(self._denoising_loss(output, tissue, clean, noise, levels, voxels))
        return -torch.stack(losses).mean(dim=0).cpu()

    def _clean_estimate(
        self, output: torch.Tensor, noisy: torch.Tensor, levels: torch.Tensor
    ) -> torch.Tensor:
        """The clean one-hot map in [-1, 1] that the denoiser's ``output`` implies."""
        if self.config.denoiser_output == "class-probabilities":
            return softmax(output.float(), dim=1) * 2.0 - 1.0
        return clean_from_velocity(self.scheduler, noisy, output.float(), levels).clamp(-1, 1)

    def _self_conditioning_input(
        self, net: nn.Module, noisy: torch.Tensor, levels: torch.Tensor, source: torch.Generator
    ) -> torch.Tensor | None:
        """Self-conditioning's training input: for a random half of the cases the denoiser's
        own clean-map estimate (made without gradients, from no estimate), zeros for the rest;
        None without self-conditioning."""
        if not self.config.self_conditioning:
            return None
        chosen = torch.rand(noisy.shape[0], generator=source, device=noisy.device) < 0.5
        with torch.no_grad(), autocast(self.training, noisy.device):
            output = _generator_of(net).denoise(noisy, levels)
        estimate = self._clean_estimate(output, noisy, levels)
        mask = chosen.view(-1, *([1] * (noisy.dim() - 1)))
        return torch.where(mask, estimate, torch.zeros_like(estimate)).detach()

    def _voxel_weights(self, label: torch.Tensor) -> torch.Tensor:
        """Per-voxel loss weights ``(B, 1, *s)``: 1, and ``1 + model.tumour-weight`` inside
        the tumour, so that a structure of a few hundred voxels is not drowned by the rest."""
        tumour = torch.isin(label, torch.tensor(self.tumour_values, device=label.device))
        return 1.0 + self.config.tumour_weight * tumour[:, None].float()

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
        source = on_device(generator, self.device)
        images, labels = [], []
        for start in range(0, n, self.training.batch_size):
            count = min(self.training.batch_size, n - start)
            tissue = self._tissue_maps(count, source, sampler, steps, label=None)
            images.append(self._paint(tissue, source))
            labels.append(self.tissues.labels_of(tissue))
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
        """Images ``(B, 1, *spatial)`` for the given label maps ``(B, *spatial)``: the tissue
        map around the labels is drawn (see the module docstring), then painted."""
        check_label_maps(labels, self.spatial_shape, self.num_classes)
        source = on_device(generator, self.device)
        images = []
        for start in range(0, labels.shape[0], self.training.batch_size):
            chunk = labels[start : start + self.training.batch_size].to(self.device)
            tissue = self._tissue_maps(chunk.shape[0], source, sampler, steps, label=chunk)
            images.append(self._paint(tissue, source))
        if not images:
            return torch.zeros((0, 1, *self.spatial_shape), device=self.device)
        return torch.cat(images)

    # -- internals ---------------------------------------------------------------------------
    def _tissue_maps(
        self,
        count: int,
        source: torch.Generator,
        sampler: str | None,
        steps: int | None,
        label: torch.Tensor | None,
    ) -> torch.Tensor:
        """Tissue maps ``(count, *spatial)`` drawn by the reverse process (around ``label``)."""
        scheduler = sampling_scheduler(self.config, sampler or self.config.sampler, steps)
        net = self.sampling_network("generator")
        shape = (count, self.tissues.count, *self.spatial_shape)
        known = None if label is None else self.tissues.known_channels(label)
        previous: list[torch.Tensor] = []  # the last clean-map estimate, for self-conditioning

        def predict(noisy: torch.Tensor, levels: torch.Tensor) -> torch.Tensor:
            with autocast(self.training, self.device):
                output = _generator_of(net).denoise(
                    noisy, levels, previous[-1] if previous else None
                )
            estimate = self._clean_estimate(self._shifted(output), noisy, levels)
            previous[:] = [estimate]
            if self.config.denoiser_output == "class-probabilities":
                return estimate
            return output

        with evaluating(self.nets), torch.no_grad():
            channels = reverse_process(
                predict,
                scheduler,
                shape,
                source,
                forward_scheduler=self.scheduler,
                known=known,
                device=self.device,
            )
        return channels.argmax(dim=1)

    def _shifted(self, output: torch.Tensor) -> torch.Tensor:
        """The denoiser's class logits with the sampling settings' logit shifts
        (:func:`shift_label_logits`); the velocity output is returned as it is."""
        if self.config.denoiser_output != "class-probabilities":
            return output
        first = self.tissues.intensity_classes - 1
        return shift_label_logits(
            output, self.config, self.num_classes, self.tumour_values, first=first
        )

    def _paint(self, tissue: torch.Tensor, source: torch.Generator) -> torch.Tensor:
        """Images ``(B, 1, *s)`` in [-1, 1] for tissue maps, drawn from the decoder's painting."""
        net = self.sampling_network("generator")
        with evaluating(self.nets), torch.no_grad(), autocast(self.training, self.device):
            painting = _generator_of(net).paint(_painting_input(tissue, self.tissues))
        return painting.draw(source)


def _per_sample(values: torch.Tensor) -> torch.Tensor:
    return values.flatten(start_dim=1).mean(dim=1)


def _painting_input(tissue: torch.Tensor, tissues: TissueClasses) -> torch.Tensor:
    """The decoder's input: the tissue map's one-hot channels (0/1)."""
    return (one_hot_channels(tissue, tissues.count) + 1.0) / 2.0


def _generator_of(net: nn.Module) -> TissueGenerator:
    inner = unwrap(net)
    if not isinstance(inner, TissueGenerator):  # pragma: no cover - programming error
        raise TypeError(f"expected a TissueGenerator, got {type(inner).__name__}")
    return inner


def _check_sizes(config: ModelConfig, spatial_shape: tuple[int, ...]) -> None:
    """The UNets' constraints, as configuration errors that say what to change."""
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
