"""A federation on one machine: a SuperLink, registered SuperNodes, runs, all stopped by pid.

Used by ``python -m deploy.launch local`` and by the end-to-end tests::

    with Federation(SuperLinkSpec(layout, "127.0.0.1", port), work_dir) as federation:
        federation.start_superlink()
        node_id = federation.register("site-01", layout.node_public_key("site-01"))
        federation.start_supernode(site)
        federation.wait_online([node_id])
        result = federation.run(project_dir, {"seed": 7})
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from pathlib import Path
from types import TracebackType

from common.config import Scalar, load_config
from deploy.certificates import CertificateLayout
from deploy.commands import (
    SiteSpec,
    SuperLinkSpec,
    daemon_environment,
    superlink_command,
    supernode_command,
)
from deploy.control import FINISHED_PREFIX, FlwrCli, RunResult, stage_app, write_run_config
from deploy.daemons import (
    Daemon,
    check_port_free,
    port_open,
    start_daemon,
    stop_daemon,
    wait_for,
)
from deploy.errors import CertificateError, DeployError, SettingError

# Seconds the SuperLink gets to open its port.
SUPERLINK_START_TIMEOUT_S = 30.0
# Seconds registered SuperNodes get to come online.
SUPERNODE_START_TIMEOUT_S = 60.0
# Seconds a run may take before it is stopped (a CPU smoke run takes about a minute).
RUN_TIMEOUT_S = 1800.0
# Seconds allowed between a run's log stream ending and `flwr list` saying it finished.
RUN_STATUS_TIMEOUT_S = 30.0
# The SuperNodes' status once connected, as `flwr supernode list` says it.
ONLINE = "online"
LOOPBACK = "127.0.0.1"


def require_file(path: Path, what: str, hint: str) -> Path:
    """Return ``path`` if it is a file, else raise :class:`CertificateError` saying ``hint``."""
    if not path.is_file():
        raise CertificateError(path, f"no {what} here", hint)
    return path


def check_superlink_files(layout: CertificateLayout) -> None:
    """Raise :class:`CertificateError` naming the first missing SuperLink TLS file."""
    hint = f"make them with `python -m deploy.certificates superlink --out {layout.root}`"
    require_file(layout.ca_cert, "CA certificate", hint)
    require_file(layout.server_cert, "SuperLink certificate", hint)
    require_file(layout.server_key, "SuperLink private key", hint)


def check_site(site: SiteSpec, root_certificates: Path) -> None:
    """Check a site's data, key and CA before its SuperNode starts; make its writable folders.

    Raises:
        SettingError: the data folder does not exist.
        CertificateError: the private key or the CA certificate is missing.
    """
    if not site.data_path.is_dir():
        raise SettingError(
            f"site {site.name}: data-path {site.data_path} is not a folder (point it at the "
            "site's data, e.g. one made with `fedsynth phantoms`)"
        )
    require_file(
        site.private_key,
        "SuperNode private key",
        f"make it with `python -m deploy.certificates supernode --site {site.name}`",
    )
    require_file(root_certificates, "CA certificate", "copy the federation's ca.crt there")
    site.cache_dir.mkdir(parents=True, exist_ok=True)
    site.ledger_dir.mkdir(parents=True, exist_ok=True)


class Federation:
    """A SuperLink and SuperNodes started on this machine; :meth:`stop` ends each by pid."""

    def __init__(self, superlink: SuperLinkSpec, work_dir: Path) -> None:
        self.superlink = superlink
        self.work_dir = work_dir
        self.daemons: list[Daemon] = []
        self._cli: FlwrCli | None = None
        self._superlink_daemon: Daemon | None = None

    @property
    def cli(self) -> FlwrCli:
        """The ``flwr`` CLI bound to this SuperLink (after :meth:`start_superlink`)."""
        if self._cli is None:
            raise DeployError("start the SuperLink first (Federation.start_superlink)")
        return self._cli

    def start(self, name: str, argv: list[str]) -> Daemon:
        """Start any daemon (logs and Flower folder under the work folder); :meth:`stop` ends it.

        A daemon started again under a name already used (a SuperNode restarted after it died)
        keeps that name's Flower folder and logs to ``<name>-2.log``, ``<name>-3.log``, ...
        """
        env = daemon_environment(self.work_dir / "flwr" / name)
        earlier = sum(daemon.name == name for daemon in self.daemons)
        log = f"{name}-{earlier + 1}.log" if earlier else f"{name}.log"
        daemon = start_daemon(name, argv, self.work_dir / "logs" / log, env, self.work_dir)
        self.daemons.append(daemon)
        return daemon

    def start_superlink(self, timeout: float = SUPERLINK_START_TIMEOUT_S) -> Daemon:
        """Start the SuperLink and wait until it listens.

        Raises:
            CertificateError: a TLS file is missing.
            PortInUseError: its port is taken.
            DaemonError: it exited or did not listen within ``timeout`` seconds.
        """
        spec = self.superlink
        check_superlink_files(spec.certificates)
        check_port_free(spec.host, spec.port, "SuperLink port")
        daemon = self.start("superlink", superlink_command(spec))
        self._superlink_daemon = daemon
        wait_for(lambda: port_open(spec.host, spec.port), timeout, [daemon], "listening")
        self._cli = FlwrCli(self.work_dir / "flwr" / "cli", spec.address, spec.certificates.ca_cert)
        return daemon

    def register(self, name: str, public_key: Path) -> int:
        """Register a site's SuperNode public key; return its node id.

        Raises:
            CertificateError: the public key file is missing.
        """
        hint = f"make it with `python -m deploy.certificates supernode --site {name}`"
        require_file(public_key, "SuperNode public key", hint)
        return self.cli.register(public_key, name)

    def start_supernode(
        self,
        site: SiteSpec,
        *,
        root_certificates: Path | None = None,
        max_wait_s: float | None = None,
    ) -> Daemon:
        """Start ``site``'s SuperNode (trusting ``root_certificates``, by default the CA).

        Raises:
            SettingError: the site's data folder is missing.
            CertificateError: its key or the CA certificate is missing.
            PortInUseError: its runtime port is taken.
        """
        root = root_certificates or self.superlink.certificates.ca_cert
        check_site(site, root)
        if site.runtime_port is not None:
            check_port_free(LOOPBACK, site.runtime_port, f"site {site.name} runtime port")
        argv = supernode_command(site, self.superlink.address, root, max_wait_s=max_wait_s)
        return self.start(site.name, argv)

    def wait_online(
        self,
        node_ids: Iterable[int],
        timeout: float = SUPERNODE_START_TIMEOUT_S,
        watched: list[Daemon] | None = None,
    ) -> None:
        """Wait until the SuperLink lists every node in ``node_ids`` as online.

        Raises:
            DaemonError: a watched daemon (by default all) exited, or ``timeout`` passed.
        """
        wanted = set(node_ids)

        def all_online() -> bool:
            statuses = self.cli.node_statuses()
            return all(statuses.get(node) == ONLINE for node in wanted)

        daemons = self.daemons if watched is None else watched
        wait_for(all_online, timeout, daemons, f"nodes {sorted(wanted)} online")

    def run(
        self, project: Path, run_config: Mapping[str, Scalar], timeout: float = RUN_TIMEOUT_S
    ) -> RunResult:
        """Submit the Flower app in ``project`` with ``run_config`` overrides; wait for its end.

        Raises:
            ConfigError: an override is not a fedsynth setting or out of range.
            RunError: the run did not finish within ``timeout`` seconds (it is then stopped).
        """
        load_config(run_config)
        app = stage_app(project, self.work_dir / "app" / project.resolve().name)
        config_file = write_run_config(self.work_dir / "run-config.toml", run_config)
        run_id = self.cli.start_run(app, config_file if run_config else None)
        logs = self.cli.stream_logs(run_id, timeout)
        status = self.cli.run_status(run_id)
        if not status.startswith(FINISHED_PREFIX):
            wait_for(
                lambda: self.cli.run_status(run_id).startswith(FINISHED_PREFIX),
                RUN_STATUS_TIMEOUT_S,
                [d for d in (self._superlink_daemon,) if d is not None],
                f"run {run_id} finished",
            )
            status = self.cli.run_status(run_id)
        return RunResult(run_id, status, logs)

    def stop(self) -> list[int]:
        """Stop every daemon started here, SuperNodes first, by process id; return the ids."""
        stopped: list[int] = []
        for daemon in reversed(self.daemons):
            stopped += stop_daemon(daemon)
        return stopped

    def __enter__(self) -> Federation:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()
