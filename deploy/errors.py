"""Typed errors of the deployment tools: each names the file, setting or daemon, and what to do."""

from __future__ import annotations

from pathlib import Path

from common.errors import FedsynthError


class DeployError(FedsynthError):
    """Base of every deployment error; the CLIs print it as a message (exit status 2)."""


class CertificateError(DeployError):
    """A certificate or key file is missing, unreadable, or does not fit the others."""

    def __init__(self, path: Path, message: str, hint: str) -> None:
        self.path = path
        super().__init__(f"{path}: {message} ({hint})")


class SettingError(DeployError):
    """A launcher setting (a port, a host, a site, a folder) cannot be used as given."""


class PortInUseError(SettingError):
    """A port the launcher was asked to listen on is already taken on this machine."""

    def __init__(self, setting: str, host: str, port: int) -> None:
        self.port = port
        super().__init__(
            f"{setting}: port {port} on {host} is already in use "
            f"(stop what listens there, or choose another {setting})"
        )


class DaemonError(DeployError):
    """A SuperLink or SuperNode exited or never became ready; the message ends with its log."""


class RunError(DeployError):
    """A run could not be submitted, failed, or did not finish in time."""
