"""A SuperNode killed (SIGKILL) while it trains round 2 of 3 and started again with the same node
config: it joins again, the run completes and releases, every site's privacy ledger holds each
round it was charged for once, and the server's round reports say which site missed round 2."""

from __future__ import annotations

import contextlib
import json
import os
import signal
import threading
from collections.abc import Callable
from concurrent.futures import Future
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest
from deploy_support import PROJECT, SITES, Credentials, Job, site_spec

from common.config import Scalar
from common.privacy.ledger_format import SITE_LEDGER_FILE
from deploy.control import RunResult
from deploy.daemons import Daemon, descendants, free_port, pid_alive, wait_for
from deploy.federation import Federation
from server.federation import ROUNDS_FILE

pytestmark = pytest.mark.deployment

ROUNDS = 3
KILLED_ROUND = 2
# Seconds the run may take on 2 busy cores (it includes up to 60 s for the SuperLink to see
# that the killed node stopped sending heartbeats, HEARTBEAT_PATIENCE x 30 s in flwr 1.42).
RUN_TIMEOUT_S = 900.0
# Seconds to wait for a daemon to start or for a sign of the run's progress (a ledger charge, a
# round report): a round took over 2 minutes, the SuperLink over 30 s to listen, on 2 cores
# that other jobs kept busy.
PROGRESS_TIMEOUT_S = 600.0
# The server's wait for a round's replies, only a backstop: round 2 ends on the SuperLink's
# answer that the killed node is unavailable (within 60 s), and round 3 then asks the restarted
# one. At 150 s a site's first round (its ClientApp starting, its cache prepared) was missed on
# 2 cores that other jobs kept busy.
REPLY_TIMEOUT_S = 600.0
# Local steps per round: long enough that the kill lands while the site trains.
STEPS = 3
# Noise of the sites' DP-SGD: 3 rounds of 3 steps at sample rate 1/2 spend epsilon 4.1 (RDP,
# delta 1e-5), within the default budget of 10.
NOISE_MULTIPLIER = 2.0


def run_config(run_dir: Path) -> dict[str, Scalar]:
    """The deployment test's job over 3 rounds; each round needs both sites to aggregate."""
    settings = Job(run_dir).run_config()
    settings.update(
        {
            "federation.num-rounds": ROUNDS,
            "federation.min-sites": len(SITES),
            "federation.reply-timeout-s": REPLY_TIMEOUT_S,
            "training.max-steps": STEPS,
            "training.local-epochs": STEPS,
            "privacy.noise-multiplier": NOISE_MULTIPLIER,
        }
    )
    return settings


def ledger_runs(ledger_dir: Path) -> list[dict[str, Any]]:
    """The charges in a site's ledger (none before its first charge)."""
    path = ledger_dir / SITE_LEDGER_FILE
    return json.loads(path.read_text(encoding="utf-8"))["runs"] if path.exists() else []


def charged_rounds(ledger_dir: Path) -> list[int]:
    """The round of every charge, in ledger order (run ids are ``<run>/round-<n>/<message>``)."""
    return [
        int(run["run_id"].split("/")[1].removeprefix("round-")) for run in ledger_runs(ledger_dir)
    ]


def reports(run_dir: Path) -> list[dict[str, Any]]:
    """The server's round reports written so far."""
    path = run_dir / ROUNDS_FILE
    lines = path.read_text(encoding="utf-8").splitlines() if path.exists() else []
    return [json.loads(line) for line in lines]


def in_background(task: Callable[[], RunResult]) -> Future[RunResult]:
    """Run ``task`` in a daemon thread (which never holds up the end of a failed test)."""
    future: Future[RunResult] = Future()

    def run() -> None:
        try:
            future.set_result(task())
        except BaseException as err:  # handed to whoever waits for the result
            future.set_exception(err)

    threading.Thread(target=run, daemon=True).start()
    return future


def kill_hard(daemon: Daemon) -> list[int]:
    """SIGKILL a daemon and every process it started, as a power cut would; their ids."""
    family = [daemon.pid, *descendants(daemon.pid)]
    for pid in family:
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)
    daemon.process.wait(timeout=30)
    wait_for(lambda: not any(pid_alive(pid) for pid in family), 30, [], "killed processes gone")
    return family


def test_a_supernode_killed_mid_round_rejoins_and_every_ledger_is_right(
    federation: Federation, credentials: Credentials, cohort: dict[str, Path], tmp_path: Path
) -> None:
    federation.start_superlink(timeout=PROGRESS_TIMEOUT_S)
    nodes = {
        site: federation.register(site, credentials.layout.node_public_key(site)) for site in SITES
    }
    specs = {site: site_spec(site, cohort[site], credentials, tmp_path / "state") for site in SITES}
    daemons = {site: federation.start_supernode(spec) for site, spec in specs.items()}
    federation.wait_online(nodes.values(), timeout=PROGRESS_TIMEOUT_S)
    victim, survivor = SITES
    run_dir = tmp_path / "run"
    job = in_background(lambda: federation.run(PROJECT, run_config(run_dir), RUN_TIMEOUT_S))
    wait_for(
        lambda: KILLED_ROUND in charged_rounds(specs[victim].ledger_dir) or job.done(),
        PROGRESS_TIMEOUT_S,
        [federation.daemons[0], daemons[victim]],
        f"{victim} charged for round {KILLED_ROUND}",
    )
    assert not job.done(), job.result().logs
    killed = kill_hard(daemons[victim])  # while it trains round 2
    assert len(killed) > 1  # the SuperNode and the ClientApp process it trains in
    wait_for(
        lambda: len(reports(run_dir)) >= KILLED_ROUND or job.done(),
        PROGRESS_TIMEOUT_S,
        [federation.daemons[0]],
        f"the server's report of round {KILLED_ROUND}",
    )
    # the same node config (data, cache, ledger, key); only its local port is new
    federation.start_supernode(replace(specs[victim], runtime_port=free_port()))
    result = job.result(timeout=RUN_TIMEOUT_S)

    Job(run_dir).check(result)  # completed; the release holds every case, from both sites
    rounds = reports(run_dir)
    assert [r["round"] for r in rounds] == [1, 2, 3]
    assert [(r["asked"], r["replied"], r["accepted"]) for r in rounds] == [
        (2, 2, 2),
        (2, 1, 1),
        (2, 2, 2),  # the restarted SuperNode is asked again, under its (key's) node id
    ]
    assert [r["aggregated"] for r in rounds] == [True, False, True]  # min-sites = 2
    assert [r["rejected"] for r in rounds] == [{}, {}, {}]
    assert rounds[0]["missed"] == rounds[2]["missed"] == {}
    ((node, pseudonym),) = rounds[1]["missed"].items()
    assert node == str(nodes[victim])
    manifest = json.loads((run_dir / "release" / "manifest.json").read_text(encoding="utf-8"))
    assert pseudonym in {site["name"] for site in manifest["sites"]}
    # every round charged once at each site; the killed round too: it was charged before its
    # first step (a crash never leaves spent privacy unrecorded), and never charged again
    for site in SITES:
        assert charged_rounds(specs[site].ledger_dir) == [1, 2, 3], site
    steps = {run["steps"] for site in SITES for run in ledger_runs(specs[site].ledger_dir)}
    assert steps == {STEPS}
    epsilons = {site["name"]: site["epsilon"] for site in manifest["sites"]}
    spent = [
        max(case["spent_epsilon"] for case in json.loads(path.read_text())["cases"].values())
        for path in (specs[site].ledger_dir / SITE_LEDGER_FILE for site in SITES)
    ]
    assert spent[0] == pytest.approx(spent[1])  # same cases, same charges: same epsilon
    assert sorted(epsilons.values()) == pytest.approx(sorted(spent))
    assert federation.cli.node_statuses() == {nodes[victim]: "online", nodes[survivor]: "online"}
