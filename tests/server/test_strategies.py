"""Tests for server/strategies.py: the Flower strategy (and central-DP wrapper) each
``federation.*`` setting builds, and the numbers each one aggregates, checked by hand through the
strategy's own ``configure_train`` and ``aggregate_train``."""

from __future__ import annotations

import math
from collections.abc import Iterable
from typing import cast
from uuid import uuid4

import numpy as np
import pytest
from federation_support import task_identity as task_identity  # fixture
from flwr.app import Array, ArrayRecord, ConfigRecord, Message, MetricRecord, RecordDict
from flwr.serverapp import Grid
from flwr.serverapp.strategy import (
    DifferentialPrivacyServerSideAdaptiveClipping,
    DifferentialPrivacyServerSideFixedClipping,
    FedAvg,
    FedMedian,
    FedProx,
    FedTrimmedAvg,
    Strategy,
)

from common.config import FederationConfig, Scalar, load_config
from common.errors import ConfigError
from server.strategies import build_strategy

ROUND = 2


pytestmark = pytest.mark.usefixtures("task_identity")


class FakeGrid:
    """Just enough of a Grid for ``configure_train``: which nodes are connected."""

    def __init__(self, node_ids: list[int]) -> None:
        self.node_ids = node_ids

    def get_node_ids(self) -> Iterable[int]:
        return list(self.node_ids)


def grid(*node_ids: int) -> Grid:
    """A fake grid with ``node_ids`` connected, where Flower's Grid type is expected."""
    return cast(Grid, FakeGrid(list(node_ids)))


def federation(**settings: Scalar) -> FederationConfig:
    """The federation settings of a run config of ``federation.<key>`` values."""
    return load_config(
        {f"federation.{k.replace('_', '-')}": v for k, v in settings.items()}
    ).federation


def reply(node: int, values: list[float], examples: int, **extra: float) -> Message:
    """``node``'s reply to a train message: array ``g/w`` and metrics."""
    sent = Message(RecordDict({}), dst_node_id=node, message_type="train")
    sent.metadata.__dict__["_message_id"] = uuid4().hex
    metrics = {"num-examples": examples, "server-round": ROUND, "site-weight": 1, **extra}
    content = {
        "arrays": ArrayRecord({"g/w": Array(np.asarray(values, dtype=np.float32))}),
        "metrics": MetricRecord(metrics),  # type: ignore[arg-type]
    }
    return Message(RecordDict(content), reply_to=sent)  # type: ignore[arg-type]


def aggregated(strategy: Strategy, replies: list[Message]) -> tuple[np.ndarray, MetricRecord]:
    """The strategy's aggregate of ``replies``: ``g/w`` and the metrics."""
    arrays, metrics = strategy.aggregate_train(ROUND, replies)
    assert arrays is not None
    assert metrics is not None
    return arrays["g/w"].numpy(), metrics


@pytest.mark.parametrize(
    ("name", "cls"),
    [
        ("fedavg", FedAvg),
        ("fedprox", FedProx),
        ("fedmedian", FedMedian),
        ("fedtrimmedavg", FedTrimmedAvg),
    ],
)
def test_each_strategy_setting_builds_its_flower_class(name: str, cls: type[FedAvg]) -> None:
    strategy = build_strategy(federation(strategy=name, min_sites=3, fraction_train=0.5), 4)
    assert type(strategy) is cls
    assert isinstance(strategy, FedAvg)
    assert strategy.min_train_nodes == 3
    assert strategy.min_available_nodes == 3
    assert strategy.fraction_train == 0.5
    assert strategy.fraction_evaluate == 0.0
    assert strategy.min_evaluate_nodes == 0
    assert strategy.weighted_by_key == "num-examples"
    assert strategy.arrayrecord_key == "arrays"
    assert strategy.configrecord_key == "config"


def test_strategy_specific_settings_are_passed_on() -> None:
    fedprox = build_strategy(federation(strategy="fedprox", proximal_mu=0.25), 2)
    assert isinstance(fedprox, FedProx)
    assert fedprox.proximal_mu == 0.25
    trimmed = build_strategy(federation(strategy="fedtrimmedavg", trim_beta=0.3), 2)
    assert isinstance(trimmed, FedTrimmedAvg)
    assert trimmed.beta == 0.3


@pytest.mark.parametrize("name", ["fedavg", "fedmedian"])
def test_central_dp_fixed_wraps_the_strategy_weighted_by_site(name: str) -> None:
    strategy = build_strategy(
        federation(
            strategy=name,
            min_sites=2,
            central_dp="fixed",
            central_noise_multiplier=0.7,
            central_clipping_norm=2.5,
        ),
        5,
    )
    assert isinstance(strategy, DifferentialPrivacyServerSideFixedClipping)
    assert strategy.noise_multiplier == 0.7
    assert strategy.clipping_norm == 2.5
    assert strategy.num_sampled_clients == 5
    inner = strategy.strategy
    assert isinstance(inner, FedAvg)
    assert type(inner).__name__ == {"fedavg": "FedAvg", "fedmedian": "FedMedian"}[name]
    assert inner.weighted_by_key == "site-weight"
    assert inner.min_train_nodes == 2
    assert inner.fraction_evaluate == 0.0


def test_central_dp_adaptive_wraps_the_strategy_with_the_initial_norm() -> None:
    strategy = build_strategy(
        federation(
            strategy="fedtrimmedavg",
            central_dp="adaptive",
            central_noise_multiplier=0.1,
            central_clipping_norm=3.0,
        ),
        3,
    )
    assert isinstance(strategy, DifferentialPrivacyServerSideAdaptiveClipping)
    assert strategy.clipping_norm == 3.0
    assert strategy.num_sampled_clients == 3
    # Flower splits the noise between the update and the clipped count (std 3 / 20 = 0.15):
    # the update's multiplier z' solves 1/z'^2 = 1/0.1^2 - 1/(2 * 0.15)^2 = 100 - 100/9.
    assert strategy.noise_multiplier == pytest.approx(1 / math.sqrt(100 - 100 / 9))
    assert isinstance(strategy.strategy, FedTrimmedAvg)
    assert strategy.strategy.weighted_by_key == "site-weight"


def test_adaptive_clipping_with_too_much_noise_for_its_sites_is_a_config_error() -> None:
    settings = load_config({"federation.central-dp": "adaptive"})  # noise multiplier 1.0
    with pytest.raises(ConfigError, match=r"federation\.central-noise-multiplier") as caught:
        build_strategy(settings.federation, 3)
    assert "below sites / 10 = 0.3" in str(caught.value)
    assert isinstance(build_strategy(settings.federation, 11), Strategy)  # 1.0 < 1.1


def test_a_zero_central_clipping_norm_is_refused_by_the_config() -> None:
    with pytest.raises(ConfigError, match=r"federation\.central-clipping-norm"):
        load_config({"federation.central-dp": "fixed", "federation.central-clipping-norm": 0.0})


def test_configure_train_asks_the_sampled_nodes_with_the_round() -> None:
    strategy = build_strategy(federation(min_sites=2, fraction_train=0.5), 2)
    arrays = ArrayRecord({"g/w": Array(np.zeros(2, dtype=np.float32))})
    messages = list(strategy.configure_train(ROUND, arrays, ConfigRecord({}), grid(5, 6, 7, 8)))
    assert len(messages) == 2  # 0.5 of 4 connected nodes, and min-sites 2
    assert {m.metadata.dst_node_id for m in messages} <= {5, 6, 7, 8}
    config = messages[0].content["config"]
    assert isinstance(config, ConfigRecord)
    assert config["server-round"] == ROUND


def test_fedavg_weights_by_num_examples() -> None:
    strategy = build_strategy(federation(strategy="fedavg"), 2)
    replies = [reply(1, [0.0, 3.0], 1, loss=1.0), reply(2, [3.0, 0.0], 2, loss=4.0)]
    values, metrics = aggregated(strategy, replies)
    # (0 * 1 + 3 * 2) / 3 = 2 and (3 * 1 + 0 * 2) / 3 = 1
    np.testing.assert_allclose(values, [2.0, 1.0], rtol=1e-6)
    assert metrics["loss"] == pytest.approx((1.0 * 1 + 4.0 * 2) / 3)


def test_fedmedian_takes_the_coordinate_median() -> None:
    strategy = build_strategy(federation(strategy="fedmedian", min_sites=3), 3)
    replies = [reply(1, [1.0, -5.0], 1), reply(2, [2.0, 7.0], 9), reply(3, [10.0, 0.0], 1)]
    values, _ = aggregated(strategy, replies)
    np.testing.assert_array_equal(values, [2.0, 0.0])


def test_fedtrimmedavg_drops_the_lowest_and_highest_of_five() -> None:
    strategy = build_strategy(federation(strategy="fedtrimmedavg", trim_beta=0.2), 5)
    columns = [[0.0, 5.0], [1.0, -100.0], [2.0, 6.0], [3.0, 7.0], [100.0, 8.0]]
    replies = [reply(node, values, 1) for node, values in enumerate(columns, start=1)]
    values, _ = aggregated(strategy, replies)
    # int(0.2 * 5) = 1 cut from each end: mean(1, 2, 3) = 2 and mean(5, 6, 7) = 6
    np.testing.assert_allclose(values, [2.0, 6.0], rtol=1e-6)


def test_central_dp_fixed_clips_each_update_and_weights_sites_equally() -> None:
    strategy = build_strategy(
        federation(central_dp="fixed", central_noise_multiplier=0.0, central_clipping_norm=1.0),
        2,
    )
    current = ArrayRecord({"g/w": Array(np.asarray([1.0, 1.0], dtype=np.float32))})
    strategy.configure_train(ROUND, current, ConfigRecord({}), grid(1, 2))
    # Site 1 moved the model by (6, 8), norm 10: clipped to (0.6, 0.8). Site 2 moved it by
    # (0.3, 0.4), norm 0.5: unchanged. Equal weights although their case counts differ.
    replies = [reply(1, [7.0, 9.0], 1), reply(2, [1.3, 1.4], 3)]
    values, _ = aggregated(strategy, replies)
    np.testing.assert_allclose(values, [1.0 + 0.45, 1.0 + 0.6], rtol=1e-6)
