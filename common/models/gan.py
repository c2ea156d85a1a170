"""The GAN family: two-stage generation, one discriminator on (image, label map) pairs.

Design, driven by DP-SGD:

* ``label_generator``: noise (``model.latent-channels`` at a coarse grid) → a fully connected
  layer → upsampling convolutions → K = ``num_classes`` logits per voxel → a hard one-hot label
  map forward with the tempered softmax's gradient backward (straight-through; by argmax, or
  with ``model.label-sampling = "gumbel"`` by per-voxel Gumbel noise; temperature
  ``model.label-temperature``).
* ``image_generator``: a MONAI UNet from the one-hot label map plus one noise channel to a tanh
  image; it also makes images for given label maps (:meth:`GanModel.sample_images`).
* ``discriminator``: MONAI's PatchDiscriminator on (image, one-hot label) pairs, GroupNorm only.

Privacy. Only the discriminator sees real data, so ``private_networks = ("discriminator",)``.
The generators are trained only through the discriminator on generated pairs (noise →
label_generator → image_generator): they are post-processing of a DP-trained discriminator,
as in Opacus' DCGAN example, and privacy is charged once, for the discriminator's steps.

A training step is (1) a discriminator step: *one* forward of ``nets["discriminator"]`` on
real pairs concatenated with detached fake pairs, per-sample losses, mean reduction, one
backward: what Opacus' per-sample gradients need (with Poisson sampling the real part may even
be empty); then (2) a generator step on a fresh fake batch of ``training.batch-size`` pairs with
the discriminator frozen, after which the discriminator's gradients (and any Opacus
``grad_sample``) are cleared. Without DP, two optional losses give the image generator real
voxels: tumour-weighted L1 to the real image for real label maps (``model.l1-weight``,
``model.tumour-weight``) and discriminator feature matching (``model.feature-matching-weight``);
the configuration forbids both with DP-SGD.

Sampling shifts the label generator's logits as ``model.tumour-logit-shift`` and
``model.label-logit-shifts`` say, which ``model.tumour-calibration-cases`` searches after
training (``common.models.calibration``), as for the diffusion family.
"""

from __future__ import annotations

from typing import ClassVar

import torch

from common.config import ModelConfig, TrainingConfig
from common.errors import ConfigError
from common.models.gan_losses import (
    discriminator_loss,
    feature_matching,
    generator_loss,
    tumour_values_for,
    tumour_weighted_l1,
)
from common.models.gan_networks import (
    ImageGenerator,
    LabelGenerator,
    build_discriminator,
    check_sizes,
    gumbel_one_hot,
    latent_shape,
    one_hot,
    straight_through_one_hot,
)
from common.models.interface import Batch, GenerativeModel, SyntheticPairs, unwrap
from common.models.runtime import (
    autocast,
    check_label_maps,
    evaluating,
    frozen,
    on_device,
    shift_label_logits,
)


class GanModel(GenerativeModel):
    """Label-map generator + label-conditioned image generator + pair discriminator; see the
    module docstring for the design and why it suits DP-SGD."""

    family: ClassVar[str] = "gan"
    private_networks: ClassVar[tuple[str, ...]] = ("discriminator",)
    averaged_networks: ClassVar[tuple[str, ...]] = ("label_generator", "image_generator")
    loss_names: ClassVar[tuple[str, ...]] = (
        "d_loss",
        "d_real",
        "d_fake",
        "g_loss",
        "g_adversarial",
        "g_l1",
        "g_feature_matching",
    )
    membership_attack: ClassVar[str] = (
        "the discriminator's score of the real (image, label map) pair"
    )
    grad_sample_mode: ClassVar[str] = "hooks"
    """The small patch discriminator's per-sample gradients are cheapest with Opacus' hooks
    (1.03x a plain step at 32^3; functorch 1.46x)."""

    def __init__(
        self,
        config: ModelConfig,
        training: TrainingConfig,
        *,
        spatial_shape: tuple[int, ...],
        num_classes: int,
        tumour_values: tuple[int, ...] | None = None,
    ) -> None:
        super().__init__(config, training, spatial_shape=spatial_shape, num_classes=num_classes)
        check_sizes(config, self.spatial_shape)
        self.tumour_values = tumour_values or tumour_values_for(num_classes)
        self.nets = {
            "label_generator": LabelGenerator(config, num_classes, self.spatial_shape),
            "image_generator": ImageGenerator(config, num_classes),
            "discriminator": build_discriminator(config, num_classes),
        }
        rates = {
            "label_generator": training.learning_rate,
            "image_generator": training.learning_rate,
            "discriminator": training.discriminator_learning_rate,
        }
        self.optimizers = {
            name: torch.optim.Adam(
                self.nets[name].parameters(),
                lr=rate,
                betas=(training.adam_beta1, training.adam_beta2),
            )
            for name, rate in rates.items()
        }
        self.keep_averages()

    # -- training ----------------------------------------------------------------------------
    def train_step(self, batch: Batch, generator: torch.Generator) -> dict[str, float]:
        """A discriminator step on real + fake pairs, then a generator step (module docstring).
        Returns ``d_loss``, ``d_real``, ``d_fake``, ``g_loss``, ``g_adversarial``, ``g_l1``,
        ``g_feature_matching`` and ``real_cases`` (the real batch size, 0 allowed)."""
        self._check_extras_allowed()
        source = on_device(generator, self.device)
        self.train_mode(True)
        real_image = batch.image.to(self.device, torch.float32)
        real_labels = batch.label.to(self.device)
        real_pairs = torch.cat([real_image, one_hot(real_labels, self.num_classes)], dim=1)
        losses = self._discriminator_step(real_pairs, source)
        losses.update(self._generator_step(real_image, real_labels, real_pairs, source))
        losses["real_cases"] = float(real_pairs.shape[0])
        return losses

    def _discriminator_step(
        self, real_pairs: torch.Tensor, source: torch.Generator
    ) -> dict[str, float]:
        discriminator, optimizer = self.nets["discriminator"], self.optimizers["discriminator"]
        with torch.no_grad():
            fake_pairs = self._fake_pairs(self.training.batch_size, source)
        optimizer.zero_grad(set_to_none=True)
        with autocast(self.training, self.device):
            prediction = discriminator(torch.cat([real_pairs, fake_pairs]))[-1]
        count = real_pairs.shape[0]
        kind = self.config.gan_loss
        real_loss = discriminator_loss(prediction[:count], real=True, kind=kind)
        fake_loss = discriminator_loss(prediction[count:], real=False, kind=kind)
        loss = torch.cat([real_loss, fake_loss]).mean()
        loss.backward()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        return {
            "d_loss": float(loss.detach()),
            "d_real": float(real_loss.detach().mean()) if count else 0.0,
            "d_fake": float(fake_loss.detach().mean()),
        }

    def _generator_step(
        self,
        real_image: torch.Tensor,
        real_labels: torch.Tensor,
        real_pairs: torch.Tensor,
        source: torch.Generator,
    ) -> dict[str, float]:
        names = ("label_generator", "image_generator")
        for name in names:
            self.optimizers[name].zero_grad(set_to_none=True)
        discriminator = self.nets["discriminator"]
        with frozen(discriminator):  # the backward pass too: Opacus' hooks must stay off
            with autocast(self.training, self.device):
                fake_pairs = self._fake_pairs(self.training.batch_size, source)
                prediction = discriminator(fake_pairs)[-1]
                adversarial = generator_loss(prediction, self.config.gan_loss).mean()
                l1, matching = self._real_data_losses(real_image, real_labels, real_pairs, source)
            total = (
                adversarial
                + self.config.l1_weight * l1
                + self.config.feature_matching_weight * matching
            )
            total.backward()
        for name in names:
            self.optimizers[name].step()
            self.optimizers[name].zero_grad(set_to_none=True)
        self.optimizers["discriminator"].zero_grad(set_to_none=True)
        return {
            "g_loss": float(total.detach()),
            "g_adversarial": float(adversarial.detach()),
            "g_l1": float(l1.detach()),
            "g_feature_matching": float(matching.detach()),
        }

    def _real_data_losses(
        self,
        real_image: torch.Tensor,
        real_labels: torch.Tensor,
        real_pairs: torch.Tensor,
        source: torch.Generator,
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """The non-DP losses (tumour-weighted L1, feature matching); zeros when unused."""
        zero = torch.zeros((), device=self.device)
        use_l1 = self.config.l1_weight > 0
        use_matching = self.config.feature_matching_weight > 0
        if real_pairs.shape[0] == 0 or not (use_l1 or use_matching):
            return zero, zero
        conditional = self._images_for(real_pairs[:, 1:], source)
        l1 = zero
        if use_l1:
            l1 = tumour_weighted_l1(
                conditional,
                real_image,
                real_labels,
                self.tumour_values,
                self.config.tumour_weight,
            )
        matching = zero
        if use_matching:
            discriminator = self.nets["discriminator"]
            fake_features = discriminator(torch.cat([conditional, real_pairs[:, 1:]], dim=1))
            with torch.no_grad():
                real_features = discriminator(real_pairs)
            matching = feature_matching(fake_features[:-1], real_features[:-1])
        return l1, matching

    def _check_extras_allowed(self) -> None:
        extras = self.config.l1_weight > 0 or self.config.feature_matching_weight > 0
        if extras and unwrap(self.nets["discriminator"]) is not self.nets["discriminator"]:
            raise ConfigError(
                "model.l1-weight and model.feature-matching-weight must be 0 when the "
                "discriminator is trained with DP-SGD: they feed real voxels to the generator"
            )

    # -- generation --------------------------------------------------------------------------
    def _fake_pairs(
        self, count: int, source: torch.Generator, *, sampling: bool = False
    ) -> torch.Tensor:
        """``count`` generated (image, one-hot label) pairs ``(count, 1 + K, *spatial)``, by
        the trained generators or (``sampling``, for a release) by their weight averages
        with the label logits shifted as the sampling settings say."""
        latent = torch.randn(
            (count, *latent_shape(self.config, self.spatial_shape)),
            generator=source,
            device=self.device,
        )
        logits = self._generator("label_generator", sampling)(latent).float()
        if sampling:
            logits = shift_label_logits(logits, self.config, self.num_classes, self.tumour_values)
        if self.config.label_sampling == "gumbel":
            labels = gumbel_one_hot(logits, self.config.label_temperature, source)
        else:
            labels = straight_through_one_hot(logits, self.config.label_temperature)
        return torch.cat([self._images_for(labels, source, sampling=sampling), labels], dim=1)

    def _images_for(
        self, labels_one_hot: torch.Tensor, source: torch.Generator, *, sampling: bool = False
    ) -> torch.Tensor:
        noise = torch.randn(
            (labels_one_hot.shape[0], 1, *self.spatial_shape),
            generator=source,
            device=self.device,
        )
        image: torch.Tensor = self._generator("image_generator", sampling)(labels_one_hot, noise)
        return image.float()

    def _generator(self, name: str, sampling: bool) -> torch.nn.Module:
        return self.sampling_network(name) if sampling else self.nets[name]

    def sample(self, n: int, generator: torch.Generator) -> SyntheticPairs:
        """``n`` stand-alone pairs from noise alone (label map = argmax of the shifted
        logits)."""
        if n < 0:
            raise ValueError(f"n = {n}: the number of samples cannot be negative")
        source = on_device(generator, self.device)
        images, labels = [], []
        with evaluating(self.nets), torch.no_grad(), autocast(self.training, self.device):
            for start in range(0, n, self.training.batch_size):
                count = min(self.training.batch_size, n - start)
                pairs = self._fake_pairs(count, source, sampling=True)
                images.append(pairs[:, :1])
                labels.append(pairs[:, 1:].argmax(dim=1))
        if not images:
            empty = torch.zeros((0, *self.spatial_shape), device=self.device)
            return SyntheticPairs(image=empty[:, None], label=empty.long())
        return SyntheticPairs(image=torch.cat(images), label=torch.cat(labels))

    def sample_images(self, labels: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
        """Images ``(B, 1, *spatial)`` that the image generator makes for label maps
        ``(B, *spatial)`` of class indices."""
        check_label_maps(labels, self.spatial_shape, self.num_classes)
        source = on_device(generator, self.device)
        images = []
        with evaluating(self.nets), torch.no_grad(), autocast(self.training, self.device):
            for start in range(0, labels.shape[0], self.training.batch_size):
                chunk = labels[start : start + self.training.batch_size].to(self.device)
                labels_one_hot = one_hot(chunk, self.num_classes)
                images.append(self._images_for(labels_one_hot, source, sampling=True))
        if not images:
            return torch.zeros((0, 1, *self.spatial_shape), device=self.device)
        return torch.cat(images)

    # -- membership inference ----------------------------------------------------------------
    def membership_scores(
        self, batch: Batch, generator: torch.Generator, timesteps: tuple[int, ...]
    ) -> torch.Tensor:
        """The discriminator's score of each real (image, label map) pair: its patch
        predictions' mean (higher = more real for every ``model.gan-loss``). A discriminator
        that memorised its training pairs scores them above other patients' pairs. Needs no
        noise and no timesteps."""
        check_label_maps(batch.label, self.spatial_shape, self.num_classes)
        pairs = torch.cat(
            [
                batch.image.to(self.device, torch.float32),
                one_hot(batch.label.to(self.device), self.num_classes),
            ],
            dim=1,
        )
        with evaluating(self.nets), torch.no_grad(), autocast(self.training, self.device):
            prediction = self.nets["discriminator"](pairs)[-1]
        return prediction.float().flatten(start_dim=1).mean(dim=1).cpu()
