"""The hospitals' container runs the launcher's SuperNode command with the image's mounts.

Docker cannot run here, so the image is not built: these tests read ``client/Dockerfile`` and run
its entrypoint script on this machine instead.
"""

from __future__ import annotations

import json
import os
import re
import shlex
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest

from deploy.certificates import CertificateLayout
from deploy.commands import SiteSpec, supernode_command

PROJECT = Path(__file__).resolve().parents[2]
DOCKERFILE = PROJECT / "client" / "Dockerfile"
ENTRYPOINT = PROJECT / "client" / "docker-entrypoint.sh"
# Seconds the entrypoint may take to print a command.
ENTRYPOINT_TIMEOUT_S = 60.0


def _instructions() -> list[tuple[str, str]]:
    """The Dockerfile's instructions as (KEYWORD, arguments), continuation lines joined."""
    text = re.sub(r"\\\n", " ", DOCKERFILE.read_text(encoding="utf-8"))
    lines = [line.strip() for line in text.splitlines()]
    pairs = [line.split(maxsplit=1) for line in lines if line and not line.startswith("#")]
    return [(pair[0].upper(), pair[1] if len(pair) > 1 else "") for pair in pairs]


def _args(keyword: str) -> list[str]:
    return [args for key, args in _instructions() if key == keyword]


def _run_entrypoint(env: dict[str, str], *args: str) -> subprocess.CompletedProcess[str]:
    scripts = str(Path(sys.executable).parent)
    base = {"PATH": os.pathsep.join([scripts, os.environ["PATH"]]), "COLUMNS": "200"}
    return subprocess.run(
        ["sh", str(ENTRYPOINT), *args],
        env={**base, "FEDSYNTH_HOME": str(PROJECT), **env},
        capture_output=True,
        encoding="utf-8",
        errors="replace",
        timeout=ENTRYPOINT_TIMEOUT_S,
        check=False,
    )


def test_the_container_runs_the_launchers_supernode_command_on_its_mounts() -> None:
    result = _run_entrypoint(
        {"SUPERLINK": "fl.example.org:9091", "SITE_NAME": "site-01"}, "--print-command"
    )

    certs = CertificateLayout(Path("/certs"))
    site = SiteSpec(
        "site-01",
        Path("/data"),
        Path("/state/cache"),
        Path("/state/ledger"),
        certs.node_private_key("site-01"),
    )
    assert result.returncode == 0, result.stderr
    assert shlex.split(result.stdout) == supernode_command(
        site, "fl.example.org:9091", certs.ca_cert
    )


@pytest.mark.parametrize("missing", ["SUPERLINK", "SITE_NAME"])
def test_the_container_refuses_to_start_without_its_settings(missing: str) -> None:
    env = {"SUPERLINK": "fl.example.org:9091", "SITE_NAME": "site-01"}
    del env[missing]

    result = _run_entrypoint(env, "--print-command")

    assert result.returncode != 0
    assert f"set {missing}" in result.stderr


def test_the_container_says_which_mount_is_missing(tmp_path: Path) -> None:
    result = _run_entrypoint(
        {
            "SUPERLINK": "fl.example.org:9091",
            "SITE_NAME": "site-01",
            "DATA_DIR": str(tmp_path / "data"),
            "STATE_DIR": str(tmp_path / "state"),
        }
    )

    assert result.returncode == 2
    assert f"data-path {tmp_path / 'data'} is not a folder" in result.stdout + result.stderr


def test_the_image_starts_the_entrypoint_as_an_unprivileged_user() -> None:
    entrypoint = json.loads(_args("ENTRYPOINT")[-1])
    copies = [args.split() for args in _args("COPY")]

    assert [f"/usr/local/bin/{entrypoint[0]}"] == [
        dest for *sources, dest in copies if sources == ["client/docker-entrypoint.sh"]
    ]
    assert _args("USER")[-1] not in ("root", "0")
    assert json.loads(_args("VOLUME")[-1]) == ["/state"]


def test_the_image_installs_every_package_of_the_project_and_the_launcher() -> None:
    pyproject = tomllib.loads((PROJECT / "pyproject.toml").read_text(encoding="utf-8"))
    packages = pyproject["tool"]["hatch"]["build"]["targets"]["wheel"]["packages"]
    copied = {args.split()[0] for args in _args("COPY")}

    assert set(packages) | {"deploy", "pyproject.toml"} <= copied
    assert "pip install ." in _args("RUN")


def test_the_image_has_the_makefiles_torch_on_cpu_and_no_telemetry() -> None:
    makefile = (PROJECT / "Makefile").read_text(encoding="utf-8")
    make_torch = re.search(r"^TORCH_SPEC \?= (\S+)", makefile, re.MULTILINE)
    torch_arg = next(a for a in _args("ARG") if a.startswith("TORCH_SPEC="))
    env = " ".join(_args("ENV"))

    assert make_torch is not None
    assert torch_arg.split("=", 1)[1].strip('"').split()[0] == make_torch.group(1)
    assert "/whl/cpu" in torch_arg
    assert "FLWR_TELEMETRY_ENABLED=0" in env
    assert "FLWR_DISABLE_UPDATE_CHECK=1" in env
