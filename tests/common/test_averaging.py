"""Weight averages: the EMA arithmetic, its warm-up, and where models use it."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from common.models.averaging import WeightAverage
from common.models.interface import AVERAGE_SUFFIX
from common.models.registry import build_model
from tests.model_support import tiny_config


def test_average_follows_the_ema_with_warmup() -> None:
    net = nn.Linear(1, 1, bias=False)
    nn.init.constant_(net.weight, 0.0)
    average = WeightAverage(net)
    expected = 0.0
    for step, value in enumerate([1.0, 2.0, 3.0]):
        nn.init.constant_(net.weight, value)
        decay = min(0.9, (1 + step) / (10 + step))  # 0.1, 2/11, 0.25
        expected = decay * expected + (1 - decay) * value
        average.update(net, 0.9)
    assert float(average.network.weight) == pytest.approx(expected)
    assert float(average.updates) == 3.0
    assert not average.network.weight.requires_grad
    average.train(True)
    assert not average.training  # never in train mode


@pytest.mark.parametrize(
    ("family", "averaged"),
    [("diffusion", ("generator",)), ("gan", ("label_generator", "image_generator"))],
)
def test_models_keep_averages_only_when_asked(family: str, averaged: tuple[str, ...]) -> None:
    plain = build_model(tiny_config(**{"model.family": family}))
    assert plain.averages == {}
    assert not any(name.endswith(AVERAGE_SUFFIX) for name in plain.network_state())
    model = build_model(tiny_config(**{"model.family": family, "training.ema-decay": 0.99}))
    assert tuple(model.averages) == averaged
    assert {f"{name}{AVERAGE_SUFFIX}" for name in averaged} <= set(model.network_state())
    for name in averaged:
        assert model.sampling_network(name) is model.averages[name].network


def test_diffusion_samples_with_the_average_not_the_trained_weights() -> None:
    config = tiny_config(**{"training.ema-decay": 0.99, "model.sampling-steps": 2})
    model = build_model(config)
    generator = torch.Generator().manual_seed(0)
    before = model.sample(1, generator=torch.Generator().manual_seed(1)).image
    with torch.no_grad():
        for parameter in model.nets["generator"].parameters():
            parameter.add_(torch.randn(parameter.shape, generator=generator))
    after_training = model.sample(1, generator=torch.Generator().manual_seed(1)).image
    torch.testing.assert_close(after_training, before)  # the average has not moved yet
    model.update_averages()
    moved = model.sample(1, generator=torch.Generator().manual_seed(1)).image
    assert not torch.allclose(moved, before)


def test_averages_round_trip_through_network_state() -> None:
    config = tiny_config(**{"training.ema-decay": 0.99})
    model, other = build_model(config), build_model(config)
    model.update_averages()
    with torch.no_grad():
        for parameter in model.averages["generator"].parameters():
            parameter.add_(1.0)
    other.load_network_state(model.network_state())
    for name, tensor in model.network_state()[f"generator{AVERAGE_SUFFIX}"].items():
        torch.testing.assert_close(
            other.network_state()[f"generator{AVERAGE_SUFFIX}"][name], tensor
        )
