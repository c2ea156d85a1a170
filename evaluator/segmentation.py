"""The one fixed segmentation recipe of the utility study: network, loss, schedule,
augmentation, training loop and inference, the same for every arm (real, synthetic, both).

Recipe (every number is a field of :class:`SegmentationRecipe`):

* network: MONAI 3D ``UNet`` (residual units, PReLU, instance or group norm, never batch norm),
  one input channel, one output channel per class; the whole volume goes in at once, so every
  case must be on one grid whose sides divide by ``2 ** (len(channels) - 1)``;
* loss: MONAI ``DiceCELoss`` (softmax, one-hot labels, batch Dice over the foreground classes
  plus cross-entropy over all classes);
* optimiser: Adam with weight decay, ``iterations`` steps of ``batch_size`` cases drawn with
  replacement, learning rate decayed by a poly (nnU-Net's) or cosine schedule;
* augmentation: per case, a flip of each of ``flip_axes`` with ``flip_probability``, then
  intensity ``x * (1 + a) + b`` with ``a``, ``b`` uniform in ``±intensity_scale``,
  ``±intensity_shift``;
* inference: argmax of the network's output on the whole volume.

Inputs: a case is ``(image, label)``, numpy arrays or torch tensors of shape ``(z, y, x)``:
image float, normalised as a site's prepared cache is (``[-1, 1]``: CT by a fixed HU window,
MRI by robust percentiles inside the body); label integer in ``0 .. num_classes - 1``. The
caller resamples every case to one grid (arrays carry no spacing; only shapes are checked).

Determinism: one seed drives network initialisation, batch draws and augmentation through
explicit ``torch.Generator`` objects; the global RNG is left as it was. On the CPU the same seed
gives the same model bit for bit; on a GPU, cuDNN's convolution algorithms may differ slightly.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np
import torch
from monai.losses import DiceCELoss
from monai.networks.nets import UNet
from torch import nn

from common.config import setting
from common.errors import ConfigError, FedsynthError
from common.seeding import derive_seed

Array = np.ndarray | torch.Tensor
Case = tuple[Array, Array]
"""One case: (image (z, y, x) float, label (z, y, x) int)."""

IterationCallback = Callable[[int, float], None]
"""Called after each training iteration with (iterations done, loss)."""


class SegmentationInputError(FedsynthError, ValueError):
    """Cases handed to the segmentation recipe cannot be used as they are."""


@dataclass(frozen=True)
class SegmentationRecipe:
    """Every setting of the segmentation recipe, with its default; the same for every arm."""

    channels: tuple[int, ...] = setting(
        (32, 64, 128, 256), "UNet feature channels per level (e.g. (8, 16, 32) for tests)"
    )
    num_res_units: int = setting(2, "residual units per UNet block", minimum=0, maximum=8)
    norm: str = setting("instance", "normalisation layer", choices=("instance", "group"))
    norm_groups: int = setting(8, "groups of group norm; divides every channel count", minimum=1)
    iterations: int = setting(2000, "optimisation steps", minimum=1)
    batch_size: int = setting(2, "cases per step, drawn with replacement", minimum=1)
    learning_rate: float = setting(1e-3, "Adam's initial learning rate", minimum=0.0)
    weight_decay: float = setting(1e-5, "Adam's L2 weight decay", minimum=0.0)
    schedule: str = setting("poly", "learning-rate decay", choices=("poly", "cosine"))
    poly_power: float = setting(0.9, "exponent of the poly schedule", minimum=0.0)
    lambda_dice: float = setting(1.0, "weight of the Dice term of DiceCE", minimum=0.0)
    lambda_ce: float = setting(1.0, "weight of the cross-entropy term of DiceCE", minimum=0.0)
    flip_axes: tuple[int, ...] = setting((0, 1, 2), "(z, y, x) axes that may be flipped")
    flip_probability: float = setting(0.5, "chance of each flip", minimum=0.0, maximum=1.0)
    intensity_scale: float = setting(0.1, "largest relative intensity scale", minimum=0.0)
    intensity_shift: float = setting(0.1, "largest intensity shift", minimum=0.0)

    def __post_init__(self) -> None:
        for name in ("channels", "flip_axes"):  # lists from a parsed config become tuples
            object.__setattr__(self, name, tuple(int(v) for v in getattr(self, name)))
        for spec in dataclasses.fields(self):
            _check_setting(spec, getattr(self, spec.name))
        if len(self.channels) < 2 or min(self.channels) < 1:
            raise ConfigError(f"channels = {self.channels}: give two or more positive counts")
        if self.norm == "group" and any(c % self.norm_groups for c in self.channels):
            raise ConfigError(
                f"norm_groups = {self.norm_groups} does not divide channels {self.channels}: "
                "choose a divisor of every channel count, or norm='instance'"
            )
        if any(axis not in (0, 1, 2) for axis in self.flip_axes):
            raise ConfigError(f"flip_axes = {self.flip_axes}: axes are 0 (z), 1 (y), 2 (x)")
        if self.intensity_scale >= 1.0:
            raise ConfigError("intensity_scale must be below 1 (a scale of 1 - 1 erases images)")

    @property
    def grid_multiple(self) -> int:
        """Each side of the volumes must be a multiple of this (the UNet's downsampling)."""
        return int(2 ** (len(self.channels) - 1))


def _check_setting(spec: dataclasses.Field[object], value: object) -> None:
    choices = spec.metadata.get("choices")
    if choices is not None and value not in choices:
        raise ConfigError(f"{spec.name} = {value!r} is not one of {', '.join(choices)}")
    low, high = spec.metadata.get("minimum"), spec.metadata.get("maximum")
    if isinstance(value, int | float) and not isinstance(value, bool):
        if low is not None and value < low:
            raise ConfigError(f"{spec.name} = {value} is below its minimum {low}")
        if high is not None and value > high:
            raise ConfigError(f"{spec.name} = {value} is above its maximum {high}")


def resolve_device(device: str | torch.device) -> torch.device:
    """``"auto"`` is a GPU when one is present, else the CPU; anything else as torch reads it."""
    if isinstance(device, str) and device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(device)


def build_network(recipe: SegmentationRecipe, num_classes: int, seed: int) -> UNet:
    """The recipe's UNet, initialised from ``seed`` (the global RNG is restored afterwards)."""
    norm: tuple[str, dict[str, object]] = (
        ("INSTANCE", {"affine": True})
        if recipe.norm == "instance"
        else ("GROUP", {"num_groups": recipe.norm_groups})
    )
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(derive_seed(seed, "segmentation", "init"))
        return UNet(
            spatial_dims=3,
            in_channels=1,
            out_channels=num_classes,
            channels=recipe.channels,
            strides=(2,) * (len(recipe.channels) - 1),
            num_res_units=recipe.num_res_units,
            norm=norm,
        )


def _as_tensor(value: Array, what: str) -> torch.Tensor:
    if isinstance(value, np.ndarray):
        return torch.from_numpy(np.ascontiguousarray(value))
    if isinstance(value, torch.Tensor):
        return value.detach().cpu()
    raise SegmentationInputError(
        f"{what} is a {type(value).__name__}: pass a numpy array or tensor"
    )


def volume_tensor(image: Array, what: str = "image") -> torch.Tensor:
    """An image as a float32 (z, y, x) tensor on the CPU, checked to be 3D and finite."""
    tensor = _as_tensor(image, what)
    if tensor.ndim != 3:
        raise SegmentationInputError(
            f"{what} has shape {tuple(tensor.shape)}: pass one (z, y, x) volume "
            "(drop a channel axis, e.g. image[0] of a CachedCases item)"
        )
    tensor = tensor.to(torch.float32)
    if not bool(torch.isfinite(tensor).all()):
        raise SegmentationInputError(f"{what} holds NaN or Inf voxels: prepare the case again")
    return tensor


def label_tensor(label: Array, num_classes: int, what: str = "label") -> torch.Tensor:
    """A label map as an int64 (z, y, x) tensor, checked to hold values 0..num_classes - 1."""
    tensor = _as_tensor(label, what)
    if tensor.ndim != 3 or tensor.dtype.is_floating_point or tensor.dtype == torch.bool:
        raise SegmentationInputError(
            f"{what} is {tensor.dtype} of shape {tuple(tensor.shape)}: "
            "pass an integer (z, y, x) label map"
        )
    tensor = tensor.to(torch.int64)
    low, high = int(tensor.min()), int(tensor.max())
    if low < 0 or high >= num_classes:
        raise SegmentationInputError(
            f"{what} holds values {low}..{high} but num_classes = {num_classes} allows "
            f"0..{num_classes - 1}: map them to the schema (data.label-remap) or raise num_classes"
        )
    return tensor


def stack_cases(
    cases: Sequence[Case], num_classes: int, recipe: SegmentationRecipe, what: str = "cases"
) -> tuple[torch.Tensor, torch.Tensor]:
    """Checked cases as (images (N, 1, z, y, x) float32, labels (N, z, y, x) int64).

    Raises:
        SegmentationInputError: no case; a case not 3D, not finite or with labels outside
            ``0..num_classes - 1``; image and label or two cases on different grids; a grid
            the UNet cannot halve ``len(channels) - 1`` times.
    """
    if not cases:
        raise SegmentationInputError(f"no {what}: give at least one (image, label) case")
    if num_classes < 2:
        raise SegmentationInputError(f"num_classes = {num_classes}: background plus one or more")
    images, labels = [], []
    for index, (image, label) in enumerate(cases):
        images.append(volume_tensor(image, f"{what}[{index}] image"))
        labels.append(label_tensor(label, num_classes, f"{what}[{index}] label"))
        if images[-1].shape != labels[-1].shape:
            raise SegmentationInputError(
                f"{what}[{index}]: image {tuple(images[-1].shape)} and label "
                f"{tuple(labels[-1].shape)} differ: resample the label onto the image's grid"
            )
        if images[-1].shape != images[0].shape:
            raise SegmentationInputError(
                f"{what}[{index}] is on a {tuple(images[-1].shape)} grid, {what}[0] on "
                f"{tuple(images[0].shape)}: resample every case to one grid (prepare all sites "
                "with the same data.target-shape and data.target-spacing)"
            )
    check_grid(tuple(images[0].shape), recipe)
    return torch.stack(images)[:, None], torch.stack(labels)


def check_grid(shape: tuple[int, ...], recipe: SegmentationRecipe) -> None:
    """Raise SegmentationInputError unless every side of ``shape`` divides by the UNet's
    downsampling factor."""
    multiple = recipe.grid_multiple
    if any(side % multiple for side in shape):
        raise SegmentationInputError(
            f"grid {shape} is not a multiple of {multiple} on every side, which "
            f"{len(recipe.channels)} UNet levels need: crop or pad the cases "
            "(data.target-shape), or use fewer channels"
        )


def augment(
    images: torch.Tensor,
    labels: torch.Tensor,
    recipe: SegmentationRecipe,
    generator: torch.Generator,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Random flips (image and label together) and intensity scale/shift, drawn per case
    from ``generator``; inputs (B, 1, z, y, x) and (B, z, y, x) on the generator's device."""
    batch = images.shape[0]
    flips = torch.rand(batch, len(recipe.flip_axes), generator=generator) < recipe.flip_probability
    out_images, out_labels = [], []
    for index in range(batch):
        axes = [axis for axis, flip in zip(recipe.flip_axes, flips[index], strict=True) if flip]
        image, label = images[index], labels[index]
        if axes:
            image = torch.flip(image, [axis + 1 for axis in axes])
            label = torch.flip(label, axes)
        out_images.append(image)
        out_labels.append(label)
    shape = (batch, 1, 1, 1, 1)
    scale = 1 + (torch.rand(shape, generator=generator) * 2 - 1) * recipe.intensity_scale
    shift = (torch.rand(shape, generator=generator) * 2 - 1) * recipe.intensity_shift
    return torch.stack(out_images) * scale + shift, torch.stack(out_labels)


def learning_rate_factor(recipe: SegmentationRecipe, iteration: int) -> float:
    """The schedule's multiplier of the initial learning rate at ``iteration`` (0-based)."""
    progress = iteration / recipe.iterations
    if recipe.schedule == "poly":
        return float((1 - progress) ** recipe.poly_power)
    return 0.5 * (1 + math.cos(math.pi * progress))


def train_segmenter(
    cases: Sequence[Case],
    recipe: SegmentationRecipe,
    seed: int,
    num_classes: int,
    device: str | torch.device = "auto",
    on_iteration: IterationCallback | None = None,
) -> nn.Module:
    """Train the recipe's UNet on ``cases`` from ``seed``; returns it in eval mode.

    Raises:
        SegmentationInputError: see :func:`stack_cases`.
    """
    images, labels = stack_cases(cases, num_classes, recipe, "training cases")
    target = resolve_device(device)
    net = build_network(recipe, num_classes, seed).to(target)
    generator = torch.Generator().manual_seed(derive_seed(seed, "segmentation", "batches"))
    loss_function = DiceCELoss(
        include_background=False,
        to_onehot_y=True,
        softmax=True,
        batch=True,
        lambda_dice=recipe.lambda_dice,
        lambda_ce=recipe.lambda_ce,
    )
    optimizer = torch.optim.Adam(
        net.parameters(), lr=recipe.learning_rate, weight_decay=recipe.weight_decay
    )
    schedule = torch.optim.lr_scheduler.LambdaLR(
        optimizer, lambda step: learning_rate_factor(recipe, step)
    )
    net.train()
    for iteration in range(recipe.iterations):
        chosen = torch.randint(0, images.shape[0], (recipe.batch_size,), generator=generator)
        batch_images, batch_labels = augment(images[chosen], labels[chosen], recipe, generator)
        logits = net(batch_images.to(target))
        loss = loss_function(logits, batch_labels.to(target)[:, None])
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        schedule.step()
        if on_iteration is not None:
            on_iteration(iteration + 1, float(loss.detach()))
    net.eval()
    return net


def predict(model: nn.Module, image: Array) -> np.ndarray:
    """The label map (z, y, x) int64 that ``model`` predicts for one (z, y, x) image."""
    volume = volume_tensor(image)
    device = next(model.parameters()).device
    was_training = model.training
    model.eval()
    try:
        with torch.inference_mode():
            logits = model(volume[None, None].to(device))
    except RuntimeError as error:  # a grid the network cannot halve often enough
        raise SegmentationInputError(
            f"the model cannot segment a {tuple(volume.shape)} volume ({error}): give images "
            "on the grid it was trained on"
        ) from error
    finally:
        model.train(was_training)
    return logits.argmax(dim=1)[0].to("cpu", torch.int64).numpy()
