"""The learning rate over a training: a linear warm-up, then constant or a cosine decay.

A training is every step a model takes towards its release: one ``fedsynth train`` run, or all
the rounds of a federation (round ``r`` of a site's ``s`` steps per round starts at step
``(r - 1) * s``), so a federated model follows the same schedule as a centralised one.
"""

from __future__ import annotations

import math
from collections.abc import Mapping

import torch

from common.config import TrainingConfig

INITIAL_RATE_KEY = "initial_lr"
"""Where a parameter group keeps its configured rate (the key torch's own schedulers use)."""


def learning_rate_factor(step: int, total: int, training: TrainingConfig) -> float:
    """The fraction of the configured rate that step ``step`` (0-based) of ``total`` takes."""
    warmup = training.warmup_steps
    if step < warmup:
        return (step + 1) / warmup
    if training.lr_schedule == "constant":
        return 1.0
    progress = min(1.0, (step - warmup) / max(1, total - warmup))
    low = training.min_lr_ratio
    return low + (1.0 - low) * 0.5 * (1.0 + math.cos(math.pi * progress))


def apply_learning_rates(optimizers: Mapping[str, torch.optim.Optimizer], factor: float) -> None:
    """Set every parameter group's rate to ``factor`` times its configured rate."""
    for optimizer in optimizers.values():
        for group in optimizer.param_groups:
            group.setdefault(INITIAL_RATE_KEY, group["lr"])
            group["lr"] = group[INITIAL_RATE_KEY] * factor
