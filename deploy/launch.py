"""``python -m deploy.launch``: run Flower's deployment engine for fedsynth.

- ``superlink``: the operator's SuperLink (TLS, SuperNode authentication), in the foreground.
- ``register``: the operator registers a site's SuperNode public key.
- ``supernode``: a hospital's SuperNode (what ``client/Dockerfile`` runs).
- ``submit``: the operator submits a run and waits for it to end.
- ``local``: all of it on this machine: SuperLink, one SuperNode per site, one run, stop.

The importable API is :class:`deploy.federation.Federation` and :mod:`deploy.commands`.
"""

from __future__ import annotations

import os
import shlex
import tempfile
from pathlib import Path

import typer

from common.cli.support import ConfigFileOption, RunConfigOption, console, user_errors
from common.config import Scalar, load_config, parse_run_config_args
from deploy.certificates import CertificateLayout, node_keys, superlink_credentials
from deploy.commands import (
    SiteSpec,
    SuperLinkSpec,
    daemon_environment,
    superlink_command,
    supernode_command,
)
from deploy.control import FlwrCli, RunResult, stage_app, write_run_config
from deploy.daemons import check_port_free, free_port
from deploy.errors import SettingError
from deploy.federation import (
    LOOPBACK,
    RUN_TIMEOUT_S,
    Federation,
    check_site,
    check_superlink_files,
    require_file,
)

# The SuperLink's port when none is given: the Fleet API's port in earlier Flower releases
# (flwr 1.42's own default, 8000, is where many development servers listen).
DEFAULT_PORT = 9091
# Where the operator's SuperLink listens unless told: every interface, for remote SuperNodes.
ALL_INTERFACES = "0.0.0.0"
# The exit status of a run that ended but did not complete.
RUN_FAILED_EXIT = 1
# File name of the SuperLink's state database under --state.
SUPERLINK_DATABASE = "superlink.db"
# TCP ports a user may give.
MIN_PORT, MAX_PORT = 1, 65535
# The SuperNode's local Runtime API port when none is given (flwr's default).
SUPERNODE_RUNTIME_PORT = 9094

app = typer.Typer(
    help="Flower deployment engine for fedsynth: SuperLink, SuperNodes, runs.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
)

CertsOption = typer.Option(..., "--certs", help="Folder made by `python -m deploy.certificates`.")
SuperLinkOption = typer.Option(..., "--superlink", help="The SuperLink's host:port.")
CaOption = typer.Option(..., "--ca", help="The federation's CA certificate (ca.crt).")
TimeoutOption = typer.Option(RUN_TIMEOUT_S, "--timeout", help="Seconds before a run is stopped.")


def report_run(result: RunResult) -> None:
    """Print a run's logs and status; exit with status 1 unless it completed."""
    console.print(result.logs, markup=False, highlight=False, soft_wrap=True)
    console.print(f"run {result.run_id}: {result.status}")
    if not result.completed:
        raise typer.Exit(RUN_FAILED_EXIT)


@app.command("superlink")
@user_errors
def superlink_cmd(
    certs: Path = CertsOption,
    host: str = typer.Option(
        ALL_INTERFACES, "--host", help="Address to listen on (0.0.0.0: every interface)."
    ),
    port: int = typer.Option(
        DEFAULT_PORT, "--port", min=MIN_PORT, max=MAX_PORT, help="Port of every SuperLink API."
    ),
    state: Path = typer.Option(..., "--state", help="Writable folder: database, Flower home."),
) -> None:
    """Run the SuperLink in the foreground (TLS, SuperNode authentication, no installs)."""
    spec = SuperLinkSpec(CertificateLayout(certs), host, port, state / SUPERLINK_DATABASE)
    check_superlink_files(spec.certificates)
    check_port_free(host, port, "--port")
    state.mkdir(parents=True, exist_ok=True)
    argv = superlink_command(spec)
    os.execvpe(argv[0], argv, daemon_environment(state / "flwr"))


@app.command("register")
@user_errors
def register_cmd(
    superlink: str = SuperLinkOption,
    ca: Path = CaOption,
    public_key: Path = typer.Option(..., "--key", help="The site's SuperNode .pub file."),
    name: str = typer.Option(..., "--name", help="The site's name."),
) -> None:
    """Register a site's SuperNode public key with a running SuperLink."""
    require_file(public_key, "SuperNode public key", "ask the site for its .pub file")
    with tempfile.TemporaryDirectory() as home:
        node_id = FlwrCli(Path(home), superlink, ca).register(public_key, name)
    console.print(f"site {name}: registered as node {node_id}")


@app.command("supernode")
@user_errors
def supernode_cmd(
    superlink: str = SuperLinkOption,
    certs: Path = CertsOption,
    site: str = typer.Option(..., "--site", help="This site's name (its key's file name)."),
    data: Path = typer.Option(..., "--data", help="The site's data folder (read only)."),
    cache: Path = typer.Option(..., "--cache", help="Writable folder for the prepared cache."),
    ledger: Path = typer.Option(..., "--ledger", help="Writable folder for the privacy ledger."),
    flwr_home: Path = typer.Option(..., "--flwr-home", help="Writable folder for Flower."),
    port: int | None = typer.Option(
        None, "--port", min=MIN_PORT, max=MAX_PORT, help="Local Runtime API port (9094)."
    ),
    print_command: bool = typer.Option(
        False, "--print-command", help="Print the flower-supernode command and exit."
    ),
) -> None:
    """Run this site's SuperNode in the foreground, as the hospitals' container does."""
    layout = CertificateLayout(certs)
    spec = SiteSpec(site, data, cache, ledger, layout.node_private_key(site), port)
    argv = supernode_command(spec, superlink, layout.ca_cert)
    if print_command:
        console.print(shlex.join(argv), markup=False, highlight=False, soft_wrap=True)
        return
    check_site(spec, layout.ca_cert)
    check_port_free(LOOPBACK, port or SUPERNODE_RUNTIME_PORT, "--port")
    flwr_home.mkdir(parents=True, exist_ok=True)
    os.execvpe(argv[0], argv, daemon_environment(flwr_home))


@app.command("submit")
@user_errors
def submit_cmd(
    superlink: str = SuperLinkOption,
    ca: Path = CaOption,
    project: Path = typer.Option(Path("."), "--app", help="The fedsynth project folder."),
    run_config: str | None = RunConfigOption,
    config_file: Path | None = ConfigFileOption,
    timeout: float = TimeoutOption,
) -> None:
    """Submit a run to a running SuperLink and print its logs when it ends."""
    overrides = _overrides(run_config, config_file)
    with tempfile.TemporaryDirectory() as work:
        cli = FlwrCli(Path(work) / "flwr", superlink, ca)
        staged = stage_app(project, Path(work) / "app")
        config = write_run_config(Path(work) / "run-config.toml", overrides)
        run_id = cli.start_run(staged, config if overrides else None)
        console.print(f"run {run_id} submitted")
        logs = cli.stream_logs(run_id, timeout)
        report_run(RunResult(run_id, cli.run_status(run_id), logs))


def _overrides(run_config: str | None, config_file: Path | None) -> dict[str, Scalar]:
    """The run-config overrides, checked against fedsynth's settings before anything starts."""
    overrides = parse_run_config_args(run_config, config_file)
    load_config(overrides)
    return overrides


def _parse_site(text: str) -> tuple[str, Path]:
    name, sep, path = text.partition("=")
    if not sep or not name or not path:
        raise SettingError(f"--site '{text}': write NAME=DATA_FOLDER, e.g. site-01=cohort/site-01")
    return name, Path(path)


@app.command("local")
@user_errors
def local_cmd(
    site: list[str] = typer.Option(..., "--site", help="NAME=DATA_FOLDER (repeatable)."),
    work: Path = typer.Option(..., "--work", help="Folder for credentials, logs, caches."),
    port: int = typer.Option(
        DEFAULT_PORT, "--port", min=MIN_PORT, max=MAX_PORT, help="The SuperLink's port."
    ),
    project: Path = typer.Option(Path("."), "--app", help="The fedsynth project folder."),
    run_config: str | None = RunConfigOption,
    config_file: Path | None = ConfigFileOption,
    timeout: float = TimeoutOption,
) -> None:
    """A whole federation on this machine: credentials, SuperLink, SuperNodes, one run."""
    sites = [_parse_site(text) for text in site]
    overrides = _overrides(run_config, config_file)
    layout, _ = superlink_credentials(work / "certs")
    spec = SuperLinkSpec(layout, LOOPBACK, port)
    with Federation(spec, work) as federation:
        federation.start_superlink()
        node_ids = []
        for name, data in sites:
            node_keys(layout.root, name)
            node_ids.append(federation.register(name, layout.node_public_key(name)))
            state = work / "sites" / name
            federation.start_supernode(
                SiteSpec(
                    name,
                    data,
                    state / "cache",
                    state / "ledger",
                    layout.node_private_key(name),
                    free_port(),  # each SuperNode's local Runtime API needs a port of its own
                )
            )
        federation.wait_online(node_ids)
        console.print(f"{len(node_ids)} SuperNodes online; submitting the run")
        report_run(federation.run(project, overrides, timeout))


if __name__ == "__main__":
    app()
