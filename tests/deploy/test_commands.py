"""The daemons' command lines mean, to flwr 1.42's own argument parsers, what they should."""

from __future__ import annotations

import os
import sys
from pathlib import Path

import pytest
from flwr.common.config import parse_config_args
from flwr.superlink.cli.flower_superlink import _parse_args_run_superlink
from flwr.supernode.cli.flower_supernode import _parse_args_run_supernode

from deploy.certificates import CertificateLayout
from deploy.commands import (
    ALLOW_DEPENDENCY_INSTALL_FLAG,
    SiteSpec,
    SuperLinkSpec,
    daemon_environment,
    format_node_config,
    superlink_command,
    supernode_command,
    toml_string,
)
from deploy.errors import SettingError


def _site(data: Path, port: int | None = 9200) -> SiteSpec:
    return SiteSpec(
        "site-01", data, Path("/state/cache"), Path("/state/ledger"), Path("/k/site-01.key"), port
    )


def test_the_superlink_serves_tls_authenticates_supernodes_and_installs_nothing() -> None:
    layout = CertificateLayout(Path("/certs"))
    argv = superlink_command(SuperLinkSpec(layout, "127.0.0.1", 9300, Path("/state/l.db")))

    args = _parse_args_run_superlink().parse_args(argv[1:])

    assert argv[0] == "flower-superlink"
    assert not args.insecure
    assert (args.ssl_ca_certfile, args.ssl_certfile, args.ssl_keyfile) == (
        "/certs/ca.crt",
        "/certs/superlink.crt",
        "/certs/superlink.key",
    )
    assert args.enable_supernode_auth
    assert args.runtime_dependency_install is False
    assert (args.host, args.port, args.database) == ("127.0.0.1", 9300, "/state/l.db")


def test_the_superlink_keeps_state_in_memory_without_a_database() -> None:
    spec = SuperLinkSpec(CertificateLayout(Path("/certs")), "127.0.0.1", 9300)

    assert "--database" not in superlink_command(spec)


def test_a_supernode_verifies_tls_authenticates_and_installs_nothing(tmp_path: Path) -> None:
    argv = supernode_command(_site(tmp_path), "fl.example.org:9091", Path("/certs/ca.crt"))

    args = _parse_args_run_supernode().parse_args(argv[1:])

    assert argv[0] == "flower-supernode"
    assert not args.insecure
    assert args.superlink == "fl.example.org:9091"
    assert args.root_certificates == "/certs/ca.crt"
    assert args.auth_supernode_private_key == "/k/site-01.key"
    assert args.runtime_dependency_install is False
    assert ALLOW_DEPENDENCY_INSTALL_FLAG not in argv
    assert args.port == 9200
    assert args.max_wait_time is None


@pytest.mark.parametrize("folder", ["plain", "hospital data", "C:\\odd", "o'brien"])
def test_flwr_reads_back_the_node_config_the_clientapp_needs(tmp_path: Path, folder: str) -> None:
    data = tmp_path / folder
    argv = supernode_command(_site(data), "h:1", Path("/ca.crt"), max_wait_s=5.0)

    args = _parse_args_run_supernode().parse_args(argv[1:])

    assert parse_config_args([args.node_config]) == {
        "data-path": str(data),
        "site-name": "site-01",
        "cache-dir": "/state/cache",
        "ledger-dir": "/state/ledger",
    }
    assert args.max_wait_time == 5.0


def test_the_default_runtime_port_is_left_to_flwr(tmp_path: Path) -> None:
    assert "--port" not in supernode_command(_site(tmp_path, None), "h:1", Path("/ca.crt"))


@pytest.mark.parametrize("value", ["a'b\"c", "line\nbreak", "it's\\here"])
def test_values_flwr_could_not_read_back_are_refused(value: str) -> None:
    with pytest.raises(SettingError, match="data-path"):
        toml_string(value, "data-path")


def test_node_config_is_space_separated_key_value_pairs() -> None:
    assert format_node_config({"a": "x y", "b": "z"}) == "a='x y' b='z'"


def test_daemons_run_this_installations_flwr_quietly(tmp_path: Path) -> None:
    env = daemon_environment(tmp_path, {"PATH": "/usr/bin", "FLWR_TELEMETRY_ENABLED": "1"})

    assert env["PATH"].split(os.pathsep)[0] == str(Path(sys.executable).parent)
    assert env["FLWR_HOME"] == str(tmp_path)
    assert env["FLWR_TELEMETRY_ENABLED"] == "0"
    assert env["FLWR_DISABLE_UPDATE_CHECK"] == "1"
