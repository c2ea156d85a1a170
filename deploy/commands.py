"""The command lines of Flower's daemons, built in one place.

The launcher (:mod:`deploy.launch`) and the hospitals' container (``client/Dockerfile``, through
``python -m deploy.launch supernode``) run exactly these commands, so what is tested here is
what hospitals run. Flags, as flwr 1.42 reads them:

- TLS: the SuperLink serves its Fleet, Control and Runtime APIs on one HTTPS port
  (``--ssl-certfile``, ``--ssl-keyfile``, ``--ssl-ca-certfile``); SuperNodes verify it with
  ``--root-certificates`` (never ``--insecure``).
- SuperNode authentication: ``--enable-supernode-auth`` on the SuperLink (only registered
  public keys may connect, see ``flwr supernode register``); ``--auth-supernode-private-key``
  on each SuperNode.
- No runtime dependency installation: ``--disable-runtime-dependency-installation`` on the
  SuperLink (it is on by default there); SuperNodes install nothing unless given
  ``--allow-runtime-dependency-installation``, which is never passed.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

from deploy.certificates import CertificateLayout, check_site_name
from deploy.errors import SettingError

SUPERLINK_EXECUTABLE = "flower-superlink"
SUPERNODE_EXECUTABLE = "flower-supernode"
FLWR_EXECUTABLE = "flwr"
# The SuperLink flag that turns off `uv sync` of a run's dependencies (on by default in 1.42).
DISABLE_DEPENDENCY_INSTALL_FLAG = "--disable-runtime-dependency-installation"
# The SuperNode flag that would turn it on; never passed.
ALLOW_DEPENDENCY_INSTALL_FLAG = "--allow-runtime-dependency-installation"
# Environment every daemon and flwr CLI call gets: no telemetry, no update check, logs written
# as they happen (the launcher reads them to see a daemon fail).
QUIET_ENVIRONMENT = {
    "FLWR_TELEMETRY_ENABLED": "0",
    "FLWR_DISABLE_UPDATE_CHECK": "1",
    "PYTHONUNBUFFERED": "1",
}
# Node-config keys the fedsynth ClientApp reads (``common.config.SiteConfig``).
NODE_CONFIG_KEYS = ("data-path", "site-name", "cache-dir", "ledger-dir")


@dataclass(frozen=True)
class SuperLinkSpec:
    """How the SuperLink listens: one HTTPS port for SuperNodes, the CLI and SuperExec."""

    certificates: CertificateLayout
    host: str
    port: int
    database: Path | None = None  # None: state in memory, lost (registrations too) on restart

    @property
    def address(self) -> str:
        """``host:port`` as SuperNodes and the CLI dial it."""
        return f"[{self.host}]:{self.port}" if ":" in self.host else f"{self.host}:{self.port}"


@dataclass(frozen=True)
class SiteSpec:
    """One hospital's SuperNode: its data, its writable folders, its key, its local port."""

    name: str
    data_path: Path
    cache_dir: Path
    ledger_dir: Path
    private_key: Path
    runtime_port: int | None = None  # the SuperNode's local Runtime API; None: flwr's 9094

    def node_config(self) -> dict[str, str]:
        """The node config the ClientApp reads, keyed as in :data:`NODE_CONFIG_KEYS`."""
        values = (self.data_path, check_site_name(self.name), self.cache_dir, self.ledger_dir)
        return dict(zip(NODE_CONFIG_KEYS, (str(v) for v in values), strict=True))


def toml_string(value: str, setting: str) -> str:
    """``value`` as a TOML string flwr's ``key=value`` parser keeps whole.

    Raises:
        SettingError: ``value`` holds both quote characters, or a newline.
    """
    if "\n" in value or ("'" in value and '"' in value):
        raise SettingError(f"{setting} '{value}' holds a newline or both kinds of quote: rename it")
    if "'" not in value:
        return f"'{value}'"  # a TOML literal string: no escapes, backslashes stay as they are
    if "\\" in value:
        raise SettingError(f"{setting} '{value}' holds both ' and \\: rename it")
    return f'"{value}"'


def format_node_config(config: Mapping[str, str]) -> str:
    """``key='value' ...`` as ``flower-supernode --node-config`` takes it."""
    return " ".join(f"{key}={toml_string(value, key)}" for key, value in config.items())


def superlink_command(spec: SuperLinkSpec) -> list[str]:
    """``flower-superlink`` with TLS, SuperNode authentication, no dependency installation."""
    certs = spec.certificates
    command = [
        SUPERLINK_EXECUTABLE,
        "--ssl-ca-certfile",
        str(certs.ca_cert),
        "--ssl-certfile",
        str(certs.server_cert),
        "--ssl-keyfile",
        str(certs.server_key),
        "--enable-supernode-auth",
        DISABLE_DEPENDENCY_INSTALL_FLAG,
        "--host",
        spec.host,
        "--port",
        str(spec.port),
    ]
    if spec.database is not None:
        command += ["--database", str(spec.database)]
    return command


def supernode_command(
    site: SiteSpec, superlink: str, root_certificates: Path, *, max_wait_s: float | None = None
) -> list[str]:
    """``flower-supernode`` for ``site``: TLS to ``superlink``, its auth key, its node config.

    ``max_wait_s`` bounds how long it retries an unreachable SuperLink (None: forever).
    """
    command = [
        SUPERNODE_EXECUTABLE,
        "--superlink",
        superlink,
        "--root-certificates",
        str(root_certificates),
        "--auth-supernode-private-key",
        str(site.private_key),
        "--node-config",
        format_node_config(site.node_config()),
    ]
    if site.runtime_port is not None:
        command += ["--port", str(site.runtime_port)]
    if max_wait_s is not None:
        command += ["--max-wait-time", str(max_wait_s)]
    return command


def daemon_environment(flwr_home: Path, base: Mapping[str, str] | None = None) -> dict[str, str]:
    """The environment of a daemon or flwr CLI call using ``flwr_home`` as its Flower folder.

    This interpreter's scripts folder leads ``PATH``, so the daemons' own helpers
    (``flower-superexec``, ``flwr-serverapp``, ``flwr-clientapp``) are this installation's.
    """
    env = dict(os.environ if base is None else base)
    scripts = str(Path(sys.executable).parent)
    env["PATH"] = os.pathsep.join([scripts, env.get("PATH", "")])
    env["FLWR_HOME"] = str(flwr_home)
    env.update(QUIET_ENVIRONMENT)
    return env
