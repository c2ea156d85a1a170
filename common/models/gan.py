"""The GAN family: two-stage generation, one discriminator on (image, label map) pairs.

Design, driven by DP-SGD:

* ``label_generator``: noise (``model.latent-channels`` at a coarse grid) → upsampling
  convolutions → K = ``num_classes`` logits per voxel → straight-through Gumbel-softmax (a hard
  one-hot label map forward, soft gradients backward, temperature ``model.label-temperature``).
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
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from typing import ClassVar

import torch
from torch import nn

from common.config import ModelConfig, TrainingConfig
from common.data.schema import SCHEMAS
from common.errors import ConfigError
from common.models.gan_losses import (
    discriminator_loss,
    feature_matching,
    generator_loss,
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
)
from common.models.interface import Batch, GenerativeModel, SyntheticPairs, unwrap
from common.models.registry import register_family

AMP_DTYPE = torch.bfloat16
"""Mixed precision on CUDA (``training.amp``): bfloat16 needs no loss scaling, which would
otherwise scale the per-sample gradients that DP-SGD clips."""

SEED_BITS = 62
"""Bits of the seed drawn from a CPU generator for a generator on another device."""


def tumour_values_for(num_classes: int) -> tuple[int, ...]:
    """The tumour's label values of the one schema with ``num_classes`` classes (background
    included): (1,) for CT, (1, 2, 3) for MRI."""
    matches = {
        schema.tumour_values for schema in SCHEMAS.values() if len(schema.labels) + 1 == num_classes
    }
    if len(matches) != 1:
        raise ConfigError(
            f"no single label schema has {num_classes} classes: pass tumour_values explicitly"
        )
    return matches.pop()


@register_family("gan")
class GanModel(GenerativeModel):
    """Label-map generator + label-conditioned image generator + pair discriminator; see the
    module docstring for the design and why it suits DP-SGD."""

    private_networks: ClassVar[tuple[str, ...]] = ("discriminator",)

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
            "label_generator": LabelGenerator(config, num_classes),
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

    # -- training ----------------------------------------------------------------------------
    def train_step(self, batch: Batch, generator: torch.Generator) -> dict[str, float]:
        """A discriminator step on real + fake pairs, then a generator step (module docstring).
        Returns ``d_loss``, ``d_real``, ``d_fake``, ``g_loss``, ``g_adversarial``, ``g_l1``,
        ``g_feature_matching`` and ``real_cases`` (the real batch size, 0 allowed)."""
        self._check_extras_allowed()
        source = _on_device(generator, self.device)
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
        with self._autocast():
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
        with _frozen(discriminator), self._autocast():
            fake_pairs = self._fake_pairs(self.training.batch_size, source)
            adversarial = generator_loss(discriminator(fake_pairs)[-1], self.config.gan_loss)
            adversarial = adversarial.mean()
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
    def _fake_pairs(self, count: int, source: torch.Generator) -> torch.Tensor:
        """``count`` generated (image, one-hot label) pairs ``(count, 1 + K, *spatial)``."""
        latent = torch.randn(
            (count, *latent_shape(self.config, self.spatial_shape)),
            generator=source,
            device=self.device,
        )
        logits = self.nets["label_generator"](latent).float()
        labels = gumbel_one_hot(logits, self.config.label_temperature, source)
        return torch.cat([self._images_for(labels, source), labels], dim=1)

    def _images_for(self, labels_one_hot: torch.Tensor, source: torch.Generator) -> torch.Tensor:
        noise = torch.randn(
            (labels_one_hot.shape[0], 1, *self.spatial_shape),
            generator=source,
            device=self.device,
        )
        image: torch.Tensor = self.nets["image_generator"](labels_one_hot, noise)
        return image.float()

    def sample(self, n: int, generator: torch.Generator) -> SyntheticPairs:
        """``n`` stand-alone pairs from noise alone (label map = argmax of the one-hot)."""
        if n < 0:
            raise ValueError(f"n = {n}: the number of samples cannot be negative")
        source = _on_device(generator, self.device)
        images, labels = [], []
        with self._evaluating(), torch.no_grad():
            for start in range(0, n, self.training.batch_size):
                pairs = self._fake_pairs(min(self.training.batch_size, n - start), source)
                images.append(pairs[:, :1])
                labels.append(pairs[:, 1:].argmax(dim=1))
        if not images:
            empty = torch.zeros((0, *self.spatial_shape), device=self.device)
            return SyntheticPairs(image=empty[:, None], label=empty.long())
        return SyntheticPairs(image=torch.cat(images), label=torch.cat(labels))

    def sample_images(self, labels: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
        """Images ``(B, 1, *spatial)`` that the image generator makes for label maps
        ``(B, *spatial)`` of class indices."""
        self._check_labels(labels)
        source = _on_device(generator, self.device)
        images = []
        with self._evaluating(), torch.no_grad():
            for start in range(0, labels.shape[0], self.training.batch_size):
                chunk = labels[start : start + self.training.batch_size].to(self.device)
                images.append(self._images_for(one_hot(chunk, self.num_classes), source))
        if not images:
            return torch.zeros((0, 1, *self.spatial_shape), device=self.device)
        return torch.cat(images)

    # -- internals ---------------------------------------------------------------------------
    @contextlib.contextmanager
    def _evaluating(self) -> Iterator[None]:
        """Eval mode for sampling; each network's previous mode is restored afterwards."""
        modes = {name: net.training for name, net in self.nets.items()}
        self.train_mode(False)
        try:
            yield
        finally:
            for name, net in self.nets.items():
                net.train(modes[name])

    def _autocast(self) -> contextlib.AbstractContextManager[object]:
        if self.training.amp and self.device.type == "cuda":
            return torch.autocast("cuda", dtype=AMP_DTYPE)
        return contextlib.nullcontext()

    def _check_labels(self, labels: torch.Tensor) -> None:
        if tuple(labels.shape[1:]) != self.spatial_shape or labels.dtype.is_floating_point:
            shape = ", ".join(map(str, self.spatial_shape))
            raise ValueError(
                f"label maps must be integer tensors of shape (B, {shape}); "
                f"got {labels.dtype} {tuple(labels.shape)}"
            )
        if labels.numel() and (labels.min() < 0 or labels.max() >= self.num_classes):
            raise ValueError(
                f"label values must lie in 0..{self.num_classes - 1}; got "
                f"{int(labels.min())}..{int(labels.max())}"
            )


@contextlib.contextmanager
def _frozen(net: nn.Module) -> Iterator[None]:
    """No parameter gradients (and no Opacus per-sample gradients) for ``net`` inside: gradients
    still flow through it to its inputs."""
    trainable = [p for p in net.parameters() if p.requires_grad]
    hooks = bool(getattr(net, "hooks_enabled", False))  # an Opacus GradSampleModule
    if hooks:
        net.disable_hooks()  # type: ignore[operator]
    for parameter in trainable:
        parameter.requires_grad_(False)
    try:
        yield
    finally:
        for parameter in trainable:
            parameter.requires_grad_(True)
        if hooks:
            net.enable_hooks()  # type: ignore[operator]


def _on_device(generator: torch.Generator, device: torch.device) -> torch.Generator:
    """``generator`` itself if it is on ``device``, else one on ``device`` seeded from it."""
    if generator.device.type == device.type:
        return generator
    seed = int(torch.randint(0, 2**SEED_BITS, (1,), generator=generator))
    return torch.Generator(device=device).manual_seed(seed)
