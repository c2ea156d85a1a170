"""Many sites on one machine: Flower's simulation engine (Ray) runs the real ClientApp and
ServerApp, one virtual SuperNode per site folder.

A simulation folder ``RUN`` holds:

- ``sites/``: one sub-folder per site (a phantom cohort made here, or the user's ``--sites``
  folders are used in place and ``sites/`` is not written),
- ``site-state/``: each virtual site's prepared cache and privacy ledger,
- ``server/``: the server's checkpoints, ``rounds.jsonl``, ``model.pt``, ``run.json`` and the
  release (``server/release/``).
"""

from __future__ import annotations

import logging
import os
import time
import warnings
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from flwr.simulation import run_simulation

from client.app import app as client_app
from common.atomic import is_nonempty_dir
from common.config import FedsynthConfig, Scalar, load_config, to_run_config
from common.data.layouts import list_cases
from common.errors import ConfigError, FedsynthError, OutputExistsError
from common.interrupts import Interrupted
from common.memory.plan import MemoryPlan, plan_memory
from common.run_state import RunRecord, previous_run_notice
from common.runs import RunSummary, read_summary
from server.app import make_server_app
from server.federation import RELEASE_DIR, RoundCallback, RoundReport
from simulations.phantoms import write_cohort

LOGGER = logging.getLogger("fedsynth.simulate")

SITES_DIR, STATE_DIR, SERVER_DIR = "sites", "site-state", "server"
QUIET_ENVIRONMENT = {
    "FLWR_TELEMETRY_ENABLED": "0",
    "FLWR_DISABLE_UPDATE_CHECK": "1",
    "RAY_DEDUP_LOGS": "0",
    "RAY_ACCEL_ENV_VAR_OVERRIDE_ON_ZERO": "0",
    "RAY_DISABLE_FAILURE_SIGNAL_HANDLER": "1",
}
"""No telemetry or update checks from Flower; quiet Ray; and no Ray crash handler, which turns
a SIGTERM into an abort (exit 134) before fedsynth can stop cleanly (``common.interrupts``)."""


@dataclass(frozen=True)
class SimulationOutcome:
    """A finished simulation: its summary, folders and wall time."""

    summary: RunSummary
    server_dir: Path
    release: Path
    sites: int
    seconds: float


def simulation_settings(config: FedsynthConfig, out: Path, sites_dir: Path) -> dict[str, Scalar]:
    """The run settings of a simulation in ``out`` over the site folders in ``sites_dir``."""
    settings = dict(to_run_config(config))
    settings["simulation.sites-dir"] = str(sites_dir.resolve())
    settings["simulation.state-dir"] = str((out / STATE_DIR).resolve())
    settings["federation.run-dir"] = str((out / SERVER_DIR).resolve())
    return settings


def site_folders(sites_dir: Path) -> list[Path]:
    """The site folders of a simulation, sorted (site k is partition k).

    Raises:
        ConfigError: the folder does not exist or holds no site folders.
    """
    folders = sorted(p for p in sites_dir.iterdir() if p.is_dir()) if sites_dir.is_dir() else []
    if not folders:
        raise ConfigError(
            f"{sites_dir}: no site folders here; give a folder with one sub-folder per site "
            "(for example one made by `fedsynth phantoms`)"
        )
    return folders


def sites_at_once(config: FedsynthConfig, sites: int) -> int:
    """How many virtual sites Ray trains side by side: as many as the CPU cores hold at
    ``simulation.cpus-per-site`` each (Ray's default of one core per CPU), at least one."""
    cores = os.cpu_count() or 1
    return min(sites, max(1, int(cores // config.simulation.cpus_per_site)))


def plan_sites(config: FedsynthConfig, folders: list[Path]) -> MemoryPlan:
    """Check, before the federation starts (and before any site's ledger is charged), that
    the sites Ray trains side by side fit in memory, each with its largest step.

    Raises:
        MemoryPlanError: they would not; the message says which settings would fit.
    """
    counts = []
    for folder in folders:
        try:
            counts.append(len(list_cases(folder, config.data).cases))
        except FedsynthError:
            continue  # that site will fail its rounds with the reason; plan for the others
    return plan_memory(config, max(counts, default=1), copies=sites_at_once(config, len(folders)))


def simulate(
    config: FedsynthConfig,
    out: Path,
    *,
    sites_dir: Path | None = None,
    resume: bool = False,
    on_round: RoundCallback | None = None,
    on_notice: Callable[[str], None] = LOGGER.warning,
) -> SimulationOutcome:
    """Run a federated simulation into ``out`` (see the module docstring).

    Without ``sites_dir`` a phantom cohort of ``config.phantoms`` is written to ``out/sites``.
    With ``resume`` the run continues from its server checkpoint and every site's ledger
    continues. Memory is planned before the federation starts; an earlier simulation in
    ``out`` that was killed is reported through ``on_notice`` (``run-state.json``).

    Raises:
        OutputExistsError: ``out`` already holds a run and ``resume`` is off.
        ConfigError: no site folders; fewer sites than ``federation.min-sites``.
        MemoryPlanError: the sites would not fit in memory.
        RunInUseError: another live process runs in ``out``.
    """
    started = time.perf_counter()
    notice = previous_run_notice(out)
    if notice is not None:
        on_notice(notice)
    if resume:
        config = load_config({**to_run_config(config), "federation.resume": True})
    elif is_nonempty_dir(out):
        raise OutputExistsError(out, "resume that simulation (--resume) or choose a new --out")
    if sites_dir is None:
        sites_dir = out / SITES_DIR
        if not resume:
            write_cohort(config, sites_dir)
    folders = site_folders(sites_dir)
    if len(folders) < config.federation.min_sites:
        raise ConfigError(
            f"{len(folders)} site folders in {sites_dir}, but federation.min-sites = "
            f"{config.federation.min_sites}: add sites or lower federation.min-sites"
        )
    plan = plan_sites(config, folders)
    settings = simulation_settings(config, out, sites_dir)
    record = RunRecord(out, settings, plan.needed, config.federation.num_rounds)

    def round_done(report: RoundReport) -> None:
        record.reached(report.round)
        if on_round is not None:
            on_round(report)

    resources = {
        "num_cpus": config.simulation.cpus_per_site,
        "num_gpus": config.simulation.gpus_per_site,
    }
    os.environ.update(QUIET_ENVIRONMENT)
    from simulations.ray_engine import ray_under_fedsynths_stop, stop_ray  # Ray loads slowly

    with warnings.catch_warnings(), record.stopped_on_error(), ray_under_fedsynths_stop():
        warnings.simplefilter("ignore", DeprecationWarning)
        warnings.simplefilter("ignore", FutureWarning)
        try:
            run_simulation(
                make_server_app(settings, round_done),
                client_app,
                num_supernodes=len(folders),
                backend_config={"client_resources": resources},  # type: ignore[dict-item]
            )
        except Interrupted:
            stop_ray()
            raise
    record.finish(config.federation.num_rounds)
    server_dir = out / SERVER_DIR
    return SimulationOutcome(
        summary=read_summary(server_dir),
        server_dir=server_dir,
        release=server_dir / RELEASE_DIR,
        sites=len(folders),
        seconds=time.perf_counter() - started,
    )
