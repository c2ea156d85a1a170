"""The learning-rate schedule: warm-up, constant or cosine, across federated rounds."""

from __future__ import annotations

import math

import pytest
import torch

from common.config import load_config
from common.models.schedule import apply_learning_rates, learning_rate_factor


def training(**settings: object):  # type: ignore[no-untyped-def]
    return load_config({f"training.{k}": v for k, v in settings.items()}).training


def test_constant_without_warmup_is_one() -> None:
    config = training()
    assert [learning_rate_factor(step, 10, config) for step in (0, 5, 9)] == [1.0, 1.0, 1.0]


def test_warmup_rises_linearly_then_cosine_falls_to_the_floor() -> None:
    config = training(**{"lr-schedule": "cosine", "warmup-steps": 4, "min-lr-ratio": 0.2})
    factors = [learning_rate_factor(step, 14, config) for step in range(14)]
    assert factors[:4] == pytest.approx([0.25, 0.5, 0.75, 1.0])
    # after the warm-up: 0.2 + 0.8 * (1 + cos(pi * k / 10)) / 2 for k = 0..9
    expected = [0.2 + 0.4 * (1.0 + math.cos(math.pi * k / 10)) for k in range(10)]
    assert factors[4:] == pytest.approx(expected)
    assert learning_rate_factor(100, 14, config) == pytest.approx(0.2)  # past the end


def test_rates_follow_each_group_initial_rate() -> None:
    weights = [torch.nn.Parameter(torch.zeros(1)), torch.nn.Parameter(torch.zeros(1))]
    optimizer = torch.optim.Adam(
        [{"params": [weights[0]], "lr": 1e-3}, {"params": [weights[1]], "lr": 4e-3}]
    )
    apply_learning_rates({"net": optimizer}, 0.5)
    apply_learning_rates({"net": optimizer}, 0.25)  # from the configured rates, not compounded
    assert [group["lr"] for group in optimizer.param_groups] == pytest.approx([2.5e-4, 1e-3])
