"""What the deployment tests share besides fixtures: site names, credentials, site specs."""

from __future__ import annotations

import contextlib
from dataclasses import dataclass
from pathlib import Path

from deploy.certificates import CertificateLayout
from deploy.commands import SiteSpec
from deploy.daemons import PROC, descendants, free_port

# Sites whose keys the tests make and register.
SITES = ("site-01", "site-02")
# A site whose key is made but never registered (until a test does).
UNREGISTERED_SITE = "site-x"
# Seconds a SuperNode in a negative test may retry before it gives up on its own.
NEGATIVE_MAX_WAIT_S = 15.0


@dataclass(frozen=True)
class Credentials:
    """The federation's CA and SuperLink certificate, every site's keys, and a foreign CA."""

    layout: CertificateLayout
    foreign: CertificateLayout


def site_spec(name: str, data: Path, credentials: Credentials, state: Path) -> SiteSpec:
    """A SuperNode on this machine for ``name``, with writable folders under ``state``."""
    return SiteSpec(
        name=name,
        data_path=data,
        cache_dir=state / name / "cache",
        ledger_dir=state / name / "ledger",
        private_key=credentials.layout.node_private_key(name),
        runtime_port=free_port(),
    )


def descendant_commands(pid: int) -> list[list[str]]:
    """The command lines of every live descendant of ``pid`` (read from /proc)."""
    commands = []
    for child in descendants(pid):
        with contextlib.suppress(OSError):
            raw = (PROC / str(child) / "cmdline").read_bytes()
            commands.append([part.decode() for part in raw.split(b"\0") if part])
    return commands
