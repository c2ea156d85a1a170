"""Bad input to the launcher is a typed error naming the file or setting, never a traceback."""

from __future__ import annotations

import shlex
import socket
from pathlib import Path

import pytest
import typer
from deploy_support import Credentials, site_spec
from typer.testing import CliRunner

from common.errors import ConfigError
from deploy.certificates import CertificateLayout
from deploy.commands import SiteSpec, SuperLinkSpec, supernode_command
from deploy.control import RunResult
from deploy.errors import CertificateError, DeployError, PortInUseError, SettingError
from deploy.federation import LOOPBACK, Federation
from deploy.launch import app, report_run

runner = CliRunner()


def test_a_superlink_without_its_certificate_files_names_the_missing_one(
    tmp_path: Path, credentials: Credentials
) -> None:
    empty = Federation(SuperLinkSpec(CertificateLayout(tmp_path), LOOPBACK, 1), tmp_path)

    with pytest.raises(CertificateError, match=r"ca\.crt: no CA certificate here.*deploy\.cert"):
        empty.start_superlink()
    assert empty.daemons == []


def test_a_superlink_port_in_use_is_refused_before_anything_starts(
    federation: Federation,
) -> None:
    with socket.socket() as taken:
        taken.bind((LOOPBACK, federation.superlink.port))
        taken.listen()
        with pytest.raises(PortInUseError, match="SuperLink port: port"):
            federation.start_superlink()
    assert federation.daemons == []


def test_a_site_without_its_data_folder_is_refused_naming_data_path(
    federation: Federation, credentials: Credentials, tmp_path: Path
) -> None:
    site = site_spec("site-01", tmp_path / "no-such-data", credentials, tmp_path)

    with pytest.raises(SettingError, match=r"site site-01: data-path .*no-such-data is not a"):
        federation.start_supernode(site)
    assert federation.daemons == []


def test_a_site_without_its_private_key_is_refused_naming_the_key(
    federation: Federation, credentials: Credentials, tmp_path: Path
) -> None:
    site = site_spec("site-01", tmp_path, credentials, tmp_path)
    keyless = SiteSpec(
        site.name, site.data_path, site.cache_dir, site.ledger_dir, tmp_path / "gone.key"
    )

    with pytest.raises(CertificateError, match=r"gone\.key: no SuperNode private key here"):
        federation.start_supernode(keyless)


@pytest.mark.deployment
def test_registering_a_missing_public_key_names_it(federation: Federation, tmp_path: Path) -> None:
    federation.start_superlink()

    with pytest.raises(CertificateError, match=r"site-09\.pub: no SuperNode public key here"):
        federation.register("site-09", tmp_path / "site-09.pub")


def test_registering_before_the_superlink_starts_says_so(
    federation: Federation, credentials: Credentials
) -> None:
    with pytest.raises(DeployError, match="start the SuperLink first"):
        federation.register("site-01", credentials.layout.node_public_key("site-01"))


def test_a_run_with_an_unknown_setting_is_refused_before_it_is_submitted(
    federation: Federation,
) -> None:
    with pytest.raises(ConfigError, match=r"model\.chanels"):
        federation.run(Path("."), {"model.chanels": "8,16"})


def test_the_supernode_command_prints_what_the_launcher_runs(tmp_path: Path) -> None:
    layout = CertificateLayout(tmp_path / "certs")
    key = layout.node_private_key("site-01")
    site = SiteSpec("site-01", tmp_path / "d", tmp_path / "c", tmp_path / "l", key, 9300)
    expected = supernode_command(site, "fl.example.org:9091", layout.ca_cert)
    args = [
        "supernode", "--superlink", "fl.example.org:9091", "--certs", str(layout.root),
        "--site", "site-01", "--data", str(tmp_path / "d"), "--cache", str(tmp_path / "c"),
        "--ledger", str(tmp_path / "l"), "--flwr-home", str(tmp_path / "f"), "--port", "9300",
    ]  # fmt: skip

    printed = runner.invoke(app, [*args, "--print-command"])
    refused = runner.invoke(app, args)

    assert printed.exit_code == 0, printed.output
    assert shlex.split(printed.output) == expected
    assert refused.exit_code == 2
    assert "site site-01: data-path" in refused.output
    assert "Traceback" not in refused.output


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["local", "--work", "w", "--site", "site-01"], "--site 'site-01': write NAME=DATA"),
        (["superlink", "--certs", "nowhere", "--state", "s"], "ca.crt: no CA certificate here"),
        (
            ["register", "--superlink", "h:1", "--ca", "ca.crt", "--key", "x.pub", "--name", "x"],
            "x.pub: no SuperNode public key here",
        ),
        (["submit", "--superlink", "h:1", "--ca", "ca.crt"], "ca.crt: no CA certificate here"),
        (
            ["submit", "--superlink", "h:1", "--ca", "ca.crt", "--run-config", "data.modality=mri"],
            "--run-config 'data.modality=mri' is not 'key=value",
        ),
        (["superlink", "--certs", "c", "--state", "s", "--port", "70000"], "Invalid value"),
        (
            ["local", "--work", "w", "--site", "a=b", "--run-config", "model.chanels='8'"],
            "model.chanels",
        ),
    ],
)
def test_cli_user_errors_are_messages_with_exit_status_2(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, args: list[str], message: str
) -> None:
    monkeypatch.chdir(tmp_path)

    result = runner.invoke(app, args)

    assert result.exit_code == 2
    assert message in result.output
    assert "Traceback" not in result.output


def test_a_run_that_did_not_complete_exits_with_status_1(
    capsys: pytest.CaptureFixture[str],
) -> None:
    report_run(RunResult(7, "finished:completed", "all good"))
    with pytest.raises(typer.Exit) as failed:
        report_run(RunResult(8, "finished:failed", "ServerApp raised"))

    assert failed.value.exit_code == 1
    assert "run 7: finished:completed" in capsys.readouterr().out
