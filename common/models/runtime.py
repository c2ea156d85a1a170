"""Runtime helpers every generator family shares: eval mode, autocast, frozen networks,
generators on the right device, label-map checks, the sampling settings' logit shifts."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator, Mapping

import torch
from torch import nn

from common.config import ModelConfig, TrainingConfig

AMP_DTYPE = torch.bfloat16
"""Mixed precision (``training.amp``): bfloat16 needs no loss scaling, which would
otherwise scale the per-sample gradients that DP-SGD clips."""

SEED_BITS = 62
"""Bits of the seed drawn from a CPU generator for a generator on another device."""


@contextlib.contextmanager
def evaluating(nets: Mapping[str, nn.Module]) -> Iterator[None]:
    """Eval mode inside; each network's previous mode is restored afterwards."""
    modes = {name: net.training for name, net in nets.items()}
    for net in nets.values():
        net.train(False)
    try:
        yield
    finally:
        for name, net in nets.items():
            net.train(modes[name])


def autocast(
    training: TrainingConfig, device: torch.device
) -> contextlib.AbstractContextManager[object]:
    """bfloat16 autocast on ``device`` as ``training.amp`` says (auto: on CUDA only)."""
    if training.amp == "bf16" or (training.amp == "auto" and device.type == "cuda"):
        return torch.autocast(device.type, dtype=AMP_DTYPE)
    return contextlib.nullcontext()


@contextlib.contextmanager
def frozen(net: nn.Module) -> Iterator[None]:
    """No parameter gradients, and no Opacus per-sample gradients, for ``net`` inside (run the
    backward pass inside too); gradients still flow through ``net`` to its inputs."""
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


def on_device(generator: torch.Generator, device: torch.device) -> torch.Generator:
    """``generator`` itself if it is on ``device``, else one on ``device`` seeded from it."""
    if generator.device.type == device.type:
        return generator
    seed = int(torch.randint(0, 2**SEED_BITS, (1,), generator=generator))
    return torch.Generator(device=device).manual_seed(seed)


def check_label_maps(
    labels: torch.Tensor, spatial_shape: tuple[int, ...], num_classes: int
) -> None:
    """Raise ``ValueError`` unless ``labels`` are integer maps ``(B, *spatial_shape)`` with
    values in ``0..num_classes - 1``."""
    if tuple(labels.shape[1:]) != spatial_shape or labels.dtype.is_floating_point:
        shape = ", ".join(map(str, spatial_shape))
        raise ValueError(
            f"label maps must be integer tensors of shape (B, {shape}); "
            f"got {labels.dtype} {tuple(labels.shape)}"
        )
    if labels.numel() and (labels.min() < 0 or labels.max() >= num_classes):
        raise ValueError(
            f"label values must lie in 0..{num_classes - 1}; got "
            f"{int(labels.min())}..{int(labels.max())}"
        )


def shift_label_logits(
    logits: torch.Tensor,
    config: ModelConfig,
    num_classes: int,
    tumour_values: tuple[int, ...],
    first: int = 0,
) -> torch.Tensor:
    """Class logits ``(B, C, *s)`` with ``model.tumour-logit-shift`` added to the tumour
    labels' and ``model.label-logit-shifts`` to each label's (label value ``v``'s logit is
    channel ``first + v``); ``logits`` itself when neither is set. A sampling setting: the
    sampled volume of a label grows with its shift."""
    tumour = config.tumour_logit_shift
    values = range(1, num_classes)
    own = config.label_shifts() or (0.0,) * len(values)
    if not (tumour or any(own)):
        return logits
    shifted = logits.float().clone()
    for value, label_shift in zip(values, own, strict=True):
        union = tumour if value in tumour_values else 0.0
        shifted[:, first + value] += union + label_shift
    return shifted
