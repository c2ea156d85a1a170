"""The ServerApp and ClientApp import and run together in Flower's simulation engine."""

from __future__ import annotations

import logging

import pytest
from flwr.simulation import run_simulation

from client.app import app as client_app
from server.app import app as server_app


@pytest.mark.filterwarnings("ignore::DeprecationWarning", "ignore::FutureWarning")
def test_apps_run_in_the_simulation_engine(caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.INFO, logger="fedsynth"):
        run_simulation(
            server_app,
            client_app,
            num_supernodes=2,
            backend_config={"client_resources": {"num_cpus": 1, "num_gpus": 0.0}},
        )
    messages = [record.getMessage() for record in caplog.records]
    assert "2 sites replied, 0 valid cases in all" in messages
    assert "config seed = 42" in messages
