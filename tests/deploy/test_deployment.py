"""End to end on 127.0.0.1: a SuperLink with TLS and SuperNode authentication, two hospitals'
SuperNodes, one fedsynth run; and the SuperNodes the SuperLink must turn away."""

from __future__ import annotations

from pathlib import Path

import pytest
from deploy_support import (
    NEGATIVE_MAX_WAIT_S,
    PROJECT,
    SITES,
    UNREGISTERED_SITE,
    Credentials,
    Job,
    descendant_commands,
    site_spec,
)

from common.config import Scalar
from deploy.commands import ALLOW_DEPENDENCY_INSTALL_FLAG, supernode_command
from deploy.control import CONNECTION_NAME
from deploy.daemons import Daemon, wait_for
from deploy.errors import RunError
from deploy.federation import Federation

pytestmark = pytest.mark.deployment

# Seconds the whole fedsynth run may take on 2 busy cores (it takes about 40 s alone).
JOB_TIMEOUT_S = 600.0
# Seconds a refused SuperNode gets to give up and exit (it takes about 2 s).
REFUSAL_TIMEOUT_S = 60.0


def _refused(daemon: Daemon) -> str:
    """Wait for a SuperNode to give up; return its log."""
    wait_for(lambda: not daemon.alive(), REFUSAL_TIMEOUT_S, [], f"{daemon.name} exits")
    assert daemon.process.returncode != 0
    return daemon.log_text()


def test_a_run_completes_on_two_authenticated_sites(
    federation: Federation, credentials: Credentials, cohort: dict[str, Path], tmp_path: Path
) -> None:
    federation.start_superlink()
    node_ids = [
        federation.register(site, credentials.layout.node_public_key(site)) for site in SITES
    ]
    for site in SITES:
        federation.start_supernode(site_spec(site, cohort[site], credentials, tmp_path))
    federation.wait_online(node_ids)

    job = Job(tmp_path / "run")
    result = federation.run(PROJECT, job.run_config(), JOB_TIMEOUT_S)

    job.check(result)
    assert set(federation.cli.node_statuses()) == set(node_ids)
    helpers = [c for d in federation.daemons for c in descendant_commands(d.pid)]
    superexecs = [c for c in helpers if any(p.endswith("flower-superexec") for p in c)]
    assert len(superexecs) == 1 + len(SITES)  # the SuperLink's and each SuperNode's
    assert not any(ALLOW_DEPENDENCY_INSTALL_FLAG in c for c in superexecs)


def test_a_supernode_whose_key_is_not_registered_is_refused(
    federation: Federation, credentials: Credentials, cohort: dict[str, Path], tmp_path: Path
) -> None:
    superlink = federation.start_superlink()
    registered = federation.register(SITES[0], credentials.layout.node_public_key(SITES[0]))
    stranger = site_spec(UNREGISTERED_SITE, cohort[SITES[0]], credentials, tmp_path)

    refused = federation.start_supernode(stranger, max_wait_s=NEGATIVE_MAX_WAIT_S)

    assert "Failed to activate SuperNode" in _refused(refused)
    assert "No SuperNode found with the given public key" in superlink.log_text()
    assert federation.cli.node_statuses() == {registered: "registered"}
    # the same SuperNode is let in once the operator registers its key
    admitted = federation.register(UNREGISTERED_SITE, stranger.private_key.with_suffix(".pub"))
    retry = site_spec(UNREGISTERED_SITE, cohort[SITES[0]], credentials, tmp_path)
    federation.start_supernode(retry)
    federation.wait_online([admitted], watched=[superlink, federation.daemons[-1]])


def test_a_supernode_without_a_key_cannot_register_itself(
    federation: Federation, credentials: Credentials, cohort: dict[str, Path], tmp_path: Path
) -> None:
    superlink = federation.start_superlink()
    registered = federation.register(SITES[0], credentials.layout.node_public_key(SITES[0]))
    site = site_spec(UNREGISTERED_SITE, cohort[SITES[0]], credentials, tmp_path)
    argv = supernode_command(
        site, federation.superlink.address, credentials.layout.ca_cert, max_wait_s=5.0
    )
    key_flag = argv.index("--auth-supernode-private-key")
    anonymous = argv[:key_flag] + argv[key_flag + 2 :]

    refused = federation.start("anonymous", anonymous)

    assert "All SuperNodes must be registered via the CLI" in _refused(refused)
    assert "POST /v1/fleet/register-node" in superlink.log_text()
    assert federation.cli.node_statuses() == {registered: "registered"}


def test_a_supernode_trusting_another_ca_cannot_connect(
    federation: Federation, credentials: Credentials, cohort: dict[str, Path], tmp_path: Path
) -> None:
    superlink = federation.start_superlink()
    node_id = federation.register(SITES[0], credentials.layout.node_public_key(SITES[0]))
    site = site_spec(SITES[0], cohort[SITES[0]], credentials, tmp_path)

    refused = federation.start_supernode(
        site, root_certificates=credentials.foreign.ca_cert, max_wait_s=NEGATIVE_MAX_WAIT_S
    )

    log = _refused(refused)
    assert "CERTIFICATE_VERIFY_FAILED" in log
    assert federation.cli.node_statuses() == {node_id: "registered"}
    # the same SuperNode connects when it trusts the federation's CA
    retry = site_spec(SITES[0], cohort[SITES[0]], credentials, tmp_path)
    federation.start_supernode(retry)
    federation.wait_online([node_id], watched=[superlink, federation.daemons[-1]])


def test_a_run_that_does_not_end_in_time_is_stopped(federation: Federation, tmp_path: Path) -> None:
    federation.start_superlink()
    waits_for_sites: dict[str, Scalar] = {
        "federation.min-sites": 2,
        "federation.run-dir": str(tmp_path / "run"),
    }

    with pytest.raises(RunError, match=r"did not finish within 5 s and was stopped"):
        federation.run(PROJECT, waits_for_sites, timeout=5.0)

    (run,) = federation.cli.call_json("list", CONNECTION_NAME)["runs"]
    wait_for(
        lambda: federation.cli.run_status(int(run["run-id"])) == "finished:stopped",
        REFUSAL_TIMEOUT_S,
        federation.daemons,
        "the run stopped",
    )
