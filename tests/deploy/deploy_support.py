"""What the deployment tests share besides fixtures: site names, credentials, site specs, the
job they submit."""

from __future__ import annotations

import contextlib
import json
from dataclasses import dataclass
from pathlib import Path

from common.config import Scalar
from deploy.certificates import CertificateLayout
from deploy.commands import SiteSpec
from deploy.control import RunResult
from deploy.daemons import PROC, descendants, free_port
from simulations.presets import preset

# Sites whose keys the tests make and register.
SITES = ("site-01", "site-02")
# A site whose key is made but never registered (until a test does).
UNREGISTERED_SITE = "site-x"
# Seconds a SuperNode in a negative test may retry before it gives up on its own.
NEGATIVE_MAX_WAIT_S = 15.0
# The fedsynth project: the Flower app the tests submit.
PROJECT = Path(__file__).resolve().parents[2]


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


@dataclass(frozen=True)
class Job:
    """THE job the end-to-end test submits, and what it must leave behind: change both here."""

    run_dir: Path

    def run_config(self) -> dict[str, Scalar]:
        """The smoke preset's run settings, one round, the server's output in ``run_dir``."""
        settings = {k: v for k, v in preset("smoke").items() if not k.startswith("phantoms.")}
        settings.update(
            {
                "federation.num-rounds": 1,
                "federation.run-dir": str(self.run_dir),
                # a fixed noise multiplier: calibrating one to a target epsilon takes ~30 s
                "privacy.target-epsilon": 0.0,
            }
        )
        return settings

    def check(self, result: RunResult) -> None:
        """The run completed and released synthetic cases trained at both sites, each of
        which answered the federated audit (the ``query.audit`` message) in the deployment
        engine."""
        assert result.completed, f"run ended {result.status}:\n{result.logs}"
        release = self.run_dir / "release"
        manifest = json.loads((release / "manifest.json").read_text(encoding="utf-8"))
        cases = int(self.run_config()["federation.release-cases"])
        assert manifest["cases"] == cases
        assert len(manifest["sites"]) == len(SITES)
        audit = manifest["audit"]
        assert audit["federated"] is True
        assert sorted(audit["sites"]) == sorted(site["name"] for site in manifest["sites"])
        assert audit["released"] == cases
        assert len(list((release / "imagesTr").glob("*.nii.gz"))) == cases
        assert len(list((release / "labelsTr").glob("*.nii.gz"))) == cases
