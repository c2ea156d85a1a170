"""Fixtures of the deployment tests: credentials, phantom sites, and a SuperLink on 127.0.0.1.

Every daemon a test starts is stopped by process id when the test ends, and the test fails if
any of them (or any process they started) is still alive afterwards.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from deploy_support import SITES, UNREGISTERED_SITE, Credentials

from common.config import load_config
from deploy.certificates import node_keys, superlink_credentials
from deploy.commands import SuperLinkSpec
from deploy.daemons import free_port, pid_alive
from deploy.federation import LOOPBACK, Federation
from simulations.phantoms.cohort import write_cohort
from simulations.presets import preset


@pytest.fixture(scope="module")
def credentials(tmp_path_factory: pytest.TempPathFactory) -> Credentials:
    """A CA, a SuperLink certificate, keys for every site, and an unrelated second CA."""
    root = tmp_path_factory.mktemp("certs")
    layout, _ = superlink_credentials(root / "federation")
    for site in (*SITES, UNREGISTERED_SITE):
        node_keys(layout.root, site)
    foreign, _ = superlink_credentials(root / "foreign")
    return Credentials(layout, foreign)


@pytest.fixture(scope="module")
def cohort(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """Two tiny phantom CT sites (the "smoke" preset's sizes), by site name."""
    summary = write_cohort(load_config(preset("smoke")), tmp_path_factory.mktemp("cohort") / "ct")
    return {path.name: path for path in summary.sites}


@pytest.fixture
def federation(
    credentials: Credentials, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> Iterator[Federation]:
    """A federation on a free port of 127.0.0.1 (nothing started yet); stopped by pid after."""
    monkeypatch.setenv("OMP_NUM_THREADS", "1")  # daemons inherit it: one torch thread each
    spec = SuperLinkSpec(credentials.layout, LOOPBACK, free_port())
    federation = Federation(spec, tmp_path / "work")
    try:
        yield federation
    finally:
        stopped = federation.stop()
        alive = [pid for pid in stopped if pid_alive(pid)]
        assert alive == [], f"processes left running after the test: {alive}"
