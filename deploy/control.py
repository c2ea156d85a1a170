"""The operator's side of a running SuperLink, through the ``flwr`` CLI and its Control API.

flwr 1.42 reads SuperLink connections from ``$FLWR_HOME/config.toml`` (``[superlink.<name>]``
with ``address`` and ``root-certificates``), not from the app's pyproject.toml: this module
writes that file into a Flower folder of its own and never touches the user's ``~/.flwr``.

Runs are submitted from a staged copy of the app (:func:`stage_app`): ``flwr run`` on a folder
whose pyproject.toml has ``[tool.flwr.federations]`` rewrites that file (it moves the entries
to the Flower config and comments them out), and the repository must not change.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import tomllib
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import tomli_w

from common.atomic import atomic_write_text
from common.config import Scalar
from common.nesting import nested
from deploy.commands import FLWR_EXECUTABLE, daemon_environment
from deploy.errors import CertificateError, DeployError, RunError, SettingError

# Name of the SuperLink connection in the Flower config this module writes.
CONNECTION_NAME = "fedsynth"
# Seconds one flwr CLI call (not a run) may take.
CLI_TIMEOUT_S = 60.0
# What `flwr list` says of a run that ended well; every ended run's status starts "finished:".
COMPLETED_STATUS = "finished:completed"
FINISHED_PREFIX = "finished:"
# Files Flower never bundles into an app, which the staged copy therefore leaves out.
STAGE_IGNORE = shutil.ignore_patterns("__pycache__", "*.pyc", ".*")


class CliTimeoutError(DeployError):
    """A flwr CLI call took longer than it was given."""


@dataclass(frozen=True)
class RunResult:
    """A run that ended: its id, its final status, and everything it logged."""

    run_id: int
    status: str
    logs: str

    @property
    def completed(self) -> bool:
        """True when the run finished without error."""
        return self.status == COMPLETED_STATUS


def write_connection(flwr_home: Path, address: str, root_certificates: Path) -> Path:
    """Write a Flower config whose default connection is the SuperLink at ``address`` (TLS).

    Raises:
        CertificateError: ``root_certificates`` is not a file.
    """
    if not root_certificates.is_file():
        raise CertificateError(
            root_certificates, "no CA certificate here", "copy the federation's ca.crt there"
        )
    config = {
        "superlink": {
            "default": CONNECTION_NAME,
            CONNECTION_NAME: {
                "address": address,
                "root-certificates": str(root_certificates.resolve()),
            },
        }
    }
    path = flwr_home / "config.toml"
    atomic_write_text(path, tomli_w.dumps(config))
    return path


def stage_app(project: Path, dest: Path, packages: Sequence[str] | None = None) -> Path:
    """Copy the Flower app in ``project`` to ``dest`` without ``[tool.flwr.federations]``.

    ``packages`` are the folders to copy; by default the wheel's packages in pyproject.toml.

    Raises:
        SettingError: ``project`` has no pyproject.toml, or a package folder is missing.
    """
    pyproject_path = project / "pyproject.toml"
    if not pyproject_path.is_file():
        raise SettingError(f"{project}: no pyproject.toml; give the fedsynth project folder")
    pyproject = tomllib.loads(pyproject_path.read_text(encoding="utf-8"))
    if packages is None:
        wheel = pyproject.get("tool", {}).get("hatch", {}).get("build", {}).get("targets", {})
        packages = wheel.get("wheel", {}).get("packages", [])
    if not packages:
        raise SettingError(f"{pyproject_path}: no packages to stage; name them")
    pyproject.get("tool", {}).get("flwr", {}).pop("federations", None)
    if dest.exists():
        shutil.rmtree(dest)
    dest.mkdir(parents=True)
    for package in packages:
        if not (project / package).is_dir():
            raise SettingError(f"{project / package}: package folder missing from the project")
        shutil.copytree(project / package, dest / package, ignore=STAGE_IGNORE)
    atomic_write_text(dest / "pyproject.toml", tomli_w.dumps(pyproject))
    return dest


def write_run_config(path: Path, run_config: Mapping[str, Scalar]) -> Path:
    """Write run-config overrides (dotted keys) as the TOML file ``flwr run --run-config`` reads."""
    atomic_write_text(path, tomli_w.dumps(nested(run_config, ".")))
    return path


class FlwrCli:
    """``flwr`` commands against one SuperLink, with a Flower folder of their own."""

    def __init__(self, flwr_home: Path, address: str, root_certificates: Path) -> None:
        self.flwr_home = flwr_home
        self.address = address
        write_connection(flwr_home, address, root_certificates)
        self.env = daemon_environment(flwr_home)

    def call(self, *args: str, timeout: float = CLI_TIMEOUT_S) -> str:
        """Run ``flwr ARGS`` and return its output.

        Raises:
            DeployError: flwr failed.
            CliTimeoutError: it took longer than ``timeout`` seconds.
        """
        command = [FLWR_EXECUTABLE, *args]
        try:
            done = subprocess.run(
                command,
                env=self.env,
                cwd=self.flwr_home,
                capture_output=True,
                encoding="utf-8",
                errors="replace",
                timeout=timeout,
                check=False,
            )
        except subprocess.TimeoutExpired:
            raise CliTimeoutError(f"`{' '.join(command)}` took over {timeout:.0f} s") from None
        if done.returncode != 0:
            raise DeployError(
                f"`{' '.join(command)}` failed (status {done.returncode}) against the SuperLink "
                f"at {self.address}:\n{(done.stdout + done.stderr).strip()}"
            )
        return done.stdout

    def call_json(self, *args: str, timeout: float = CLI_TIMEOUT_S) -> dict[str, Any]:
        """Run ``flwr ARGS --format json`` and return its JSON answer.

        Raises:
            DeployError: flwr failed, or answered ``success: false``.
        """
        output = self.call(*args, "--format", "json", timeout=timeout)
        try:
            answer: dict[str, Any] = json.loads(output[output.index("{") :])
        except ValueError:
            raise DeployError(f"`flwr {' '.join(args)}` gave no JSON:\n{output}") from None
        if not answer.get("success", False):
            reason = str(answer.get("error-message", answer)).strip()
            raise DeployError(
                f"`flwr {' '.join(args)}` failed against the SuperLink at {self.address}:\n{reason}"
            )
        return answer

    def register(self, public_key: Path, name: str) -> int:
        """Register a SuperNode's public key; return the node id the SuperLink gives it."""
        answer = self.call_json(
            "supernode", "register", str(public_key), CONNECTION_NAME, "--name", name
        )
        return int(answer["node-id"])

    def node_statuses(self) -> dict[int, str]:
        """Every SuperNode the SuperLink knows, by id: registered, online, offline."""
        answer = self.call_json("supernode", "list", CONNECTION_NAME)
        return {int(node["node-id"]): str(node["status"]) for node in answer["nodes"]}

    def start_run(self, app: Path, run_config: Path | None) -> int:
        """Submit the app in folder ``app`` with a run-config TOML file; return the run id."""
        args = ["run", str(app), CONNECTION_NAME]
        if run_config is not None:
            args += ["--run-config", str(run_config)]
        return int(self.call_json(*args)["run-id"])

    def run_status(self, run_id: int) -> str:
        """A run's status, e.g. ``running`` or ``finished:completed``."""
        answer = self.call_json("list", CONNECTION_NAME, "--run-id", str(run_id))
        return str(answer["runs"][0]["status"])

    def stream_logs(self, run_id: int, timeout: float) -> str:
        """A run's logs, streamed until it ends.

        Raises:
            RunError: it did not end within ``timeout`` seconds (the run is then stopped).
        """
        try:
            return self.call("log", str(run_id), CONNECTION_NAME, "--stream", timeout=timeout)
        except CliTimeoutError as err:
            self.call("stop", str(run_id), CONNECTION_NAME)
            raise RunError(
                f"run {run_id} did not finish within {timeout:.0f} s and was stopped "
                "(raise the timeout, or look at the SuperNodes' logs)"
            ) from err
