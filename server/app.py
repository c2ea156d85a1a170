"""The fedsynth ServerApp: what the federation operator runs. Thin: unpack, call, pack.

``app`` reads the run settings from Flower's run config (``flwr run . --run-config ...``);
:func:`make_server_app` binds settings in code (``fedsynth simulate``, where Flower's
simulation engine passes none).
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from pathlib import Path

from flwr.app import Context
from flwr.serverapp import Grid, ServerApp

from common.config import Scalar, load_config, log_config
from server.federation import FederationOutcome, RoundCallback, federate

LOGGER_ROOT = "fedsynth"
LOGGER = logging.getLogger(f"{LOGGER_ROOT}.server")

DEFAULT_RUNS_DIR = Path.home() / ".fedsynth" / "runs"
"""Where a run goes when ``federation.run-dir`` is empty: ``<this>/<Flower run id>``."""


def make_server_app(
    settings: Mapping[str, Scalar] | None = None, on_round: RoundCallback | None = None
) -> ServerApp:
    """A ServerApp running the federation with ``settings`` over the run config's;
    ``on_round`` is called after every round (progress bars)."""
    server_app = ServerApp()

    @server_app.main()
    def main(grid: Grid, context: Context) -> None:
        _log_to_stderr_when_unconfigured()
        config = load_config({**dict(context.run_config), **dict(settings or {})})
        log_config(config, LOGGER)
        run_dir = Path(config.federation.run_dir or DEFAULT_RUNS_DIR / str(context.run_id))
        outcome: FederationOutcome = federate(grid, config, run_dir, on_round=on_round)
        LOGGER.info("release of %d synthetic cases: %s", outcome.cases, outcome.release)

    return server_app


def _log_to_stderr_when_unconfigured() -> None:
    """Under ``flwr run`` nothing configures logging, and Flower forwards only the ServerApp's
    stdout and stderr to ``flwr log``: give fedsynth's logger a stderr handler at INFO."""
    logger = logging.getLogger(LOGGER_ROOT)
    if not logger.handlers and not logging.getLogger().handlers:
        handler = logging.StreamHandler()
        handler.setFormatter(logging.Formatter("%(levelname)s %(name)s: %(message)s"))
        logger.addHandler(handler)
        logger.setLevel(logging.INFO)


app = make_server_app()
