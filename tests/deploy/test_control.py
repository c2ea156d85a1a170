"""The operator's flwr connection, staged app and run config, as flwr 1.42 reads them."""

from __future__ import annotations

import tomllib
from pathlib import Path

import pytest
from flwr.cli.flower_config import read_superlink_connection
from flwr.common.config import parse_config_args

from common.config import Scalar
from deploy.certificates import superlink_credentials
from deploy.control import (
    CONNECTION_NAME,
    FlwrCli,
    RunResult,
    stage_app,
    write_connection,
    write_run_config,
)
from deploy.daemons import free_port
from deploy.errors import CertificateError, DeployError, SettingError

PROJECT = Path(__file__).resolve().parents[2]


def test_flwr_reads_the_connection_as_the_superlink_over_tls(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    layout, _ = superlink_credentials(tmp_path / "certs")
    write_connection(tmp_path / "home", "127.0.0.1:9300", layout.ca_cert)
    monkeypatch.setenv("FLWR_HOME", str(tmp_path / "home"))

    connection = read_superlink_connection(None)

    assert connection.name == CONNECTION_NAME
    assert connection.address == "127.0.0.1:9300"
    assert connection.root_certificates == str(layout.ca_cert.resolve())
    assert connection.insecure is False


def test_a_missing_ca_certificate_is_an_error_naming_it(tmp_path: Path) -> None:
    with pytest.raises(CertificateError, match=r"ca\.crt: no CA certificate here"):
        write_connection(tmp_path / "home", "127.0.0.1:9300", tmp_path / "ca.crt")


def test_the_staged_app_has_the_packages_and_no_federations_and_the_repo_is_untouched(
    tmp_path: Path,
) -> None:
    before = (PROJECT / "pyproject.toml").read_bytes()

    staged = stage_app(PROJECT, tmp_path / "app")

    pyproject = tomllib.loads((staged / "pyproject.toml").read_text(encoding="utf-8"))
    assert "federations" not in pyproject["tool"]["flwr"]
    assert pyproject["tool"]["flwr"]["app"]["components"]["clientapp"] == "client.app:app"
    assert (staged / "client" / "app.py").is_file()
    assert (staged / "server" / "app.py").is_file()
    assert not list(staged.rglob("__pycache__"))
    assert (PROJECT / "pyproject.toml").read_bytes() == before


def test_staging_a_folder_without_pyproject_or_package_is_a_setting_error(tmp_path: Path) -> None:
    with pytest.raises(SettingError, match=r"no pyproject\.toml"):
        stage_app(tmp_path, tmp_path / "app")
    (tmp_path / "pyproject.toml").write_text('[project]\nname = "x"\n')
    with pytest.raises(SettingError, match="no packages to stage"):
        stage_app(tmp_path, tmp_path / "app")
    with pytest.raises(SettingError, match="package folder missing"):
        stage_app(tmp_path, tmp_path / "app", ["client"])


def test_flwr_reads_back_the_run_config_file(tmp_path: Path) -> None:
    overrides: dict[str, Scalar] = {
        "seed": 7,
        "data.target-shape": "16,16,16",
        "privacy.enabled": False,
    }

    path = write_run_config(tmp_path / "run.toml", overrides)

    assert parse_config_args([str(path)]) == overrides


def test_a_superlink_that_is_not_there_is_a_deploy_error_naming_its_address(
    tmp_path: Path,
) -> None:
    layout, _ = superlink_credentials(tmp_path / "certs")
    address = f"127.0.0.1:{free_port()}"
    cli = FlwrCli(tmp_path / "home", address, layout.ca_cert)

    with pytest.raises(DeployError, match=f"(?s)at {address}:\nUsing SuperLink.*unavailable"):
        cli.node_statuses()


def test_only_a_completed_run_counts_as_completed() -> None:
    assert RunResult(1, "finished:completed", "").completed
    assert not RunResult(1, "finished:failed", "").completed
