"""The federation's CA, SuperLink certificate and SuperNode keys: made once, kept, checked."""

from __future__ import annotations

import ipaddress
import stat
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives.asymmetric import ec, ed25519
from cryptography.hazmat.primitives.serialization import (
    Encoding,
    PublicFormat,
    load_ssh_private_key,
)
from flwr.supercore.primitives.asymmetric import uses_nist_ec_curve
from typer.testing import CliRunner

from deploy.certificates import (
    CertificateLayout,
    app,
    check_site_name,
    load_node_public_key,
    node_keys,
    superlink_credentials,
)
from deploy.errors import CertificateError, SettingError


def _names(cert_path: Path) -> set[str]:
    cert = x509.load_pem_x509_certificate(cert_path.read_bytes())
    sans = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    return {str(name.value) for name in sans}


def _mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


def test_the_superlink_certificate_is_signed_by_the_ca_for_loopback_and_extra_hosts(
    tmp_path: Path,
) -> None:
    layout, written = superlink_credentials(tmp_path, ["fl.example.org", "10.1.2.3"])

    ca = x509.load_pem_x509_certificate(layout.ca_cert.read_bytes())
    server = x509.load_pem_x509_certificate(layout.server_cert.read_bytes())
    server.verify_directly_issued_by(ca)
    assert ca.extensions.get_extension_for_class(x509.BasicConstraints).value.ca
    assert not server.extensions.get_extension_for_class(x509.BasicConstraints).value.ca
    assert _names(layout.server_cert) == {
        str(ipaddress.ip_address("127.0.0.1")),
        "localhost",
        "fl.example.org",
        "10.1.2.3",
    }
    assert sorted(written.created) == sorted(
        [layout.ca_cert, layout.ca_key, layout.server_cert, layout.server_key]
    )
    assert (_mode(layout.ca_key), _mode(layout.server_key)) == (0o600, 0o600)


def test_a_site_key_pair_is_what_flwr_reads_and_the_private_half_is_owner_only(
    tmp_path: Path,
) -> None:
    layout, _ = node_keys(tmp_path, "site-01")

    private = load_ssh_private_key(layout.node_private_key("site-01").read_bytes(), None)
    public = load_node_public_key(layout.node_public_key("site-01"))
    assert isinstance(private, ec.EllipticCurvePrivateKey)
    assert uses_nist_ec_curve(public)
    assert private.public_key() == public
    assert _mode(layout.node_private_key("site-01")) == 0o600


def test_running_twice_keeps_every_file_as_it_was(tmp_path: Path) -> None:
    layout, _ = superlink_credentials(tmp_path, ["fl.example.org"])
    node_keys(tmp_path, "site-01")
    files = [layout.ca_key, layout.server_cert, layout.node_private_key("site-01")]
    before = [path.read_bytes() for path in files]

    _, again = superlink_credentials(tmp_path, ["fl.example.org"])
    _, keys_again = node_keys(tmp_path, "site-01")

    assert again.created == []
    assert keys_again.created == []
    assert [path.read_bytes() for path in files] == before


def test_force_makes_new_keys(tmp_path: Path) -> None:
    layout, _ = node_keys(tmp_path, "site-01")
    before = layout.node_private_key("site-01").read_bytes()

    _, written = node_keys(tmp_path, "site-01", force=True)

    assert layout.node_private_key("site-01") in written.created
    assert layout.node_private_key("site-01").read_bytes() != before


def test_a_new_host_needs_reissue_which_keeps_the_ca(tmp_path: Path) -> None:
    layout, _ = superlink_credentials(tmp_path)
    ca_before = layout.ca_cert.read_bytes()

    with pytest.raises(CertificateError, match=r"does not name the host\(s\) fl.example.org"):
        superlink_credentials(tmp_path, ["fl.example.org"])
    superlink_credentials(tmp_path, ["fl.example.org"], reissue=True)

    assert "fl.example.org" in _names(layout.server_cert)
    assert layout.ca_cert.read_bytes() == ca_before


def test_a_certificate_from_another_ca_is_refused(tmp_path: Path) -> None:
    layout, _ = superlink_credentials(tmp_path / "a")
    other, _ = superlink_credentials(tmp_path / "b")
    layout.server_cert.write_bytes(other.server_cert.read_bytes())
    layout.server_key.write_bytes(other.server_key.read_bytes())

    with pytest.raises(CertificateError, match=r"was not issued by ca\.crt"):
        superlink_credentials(tmp_path / "a")


def test_half_a_pair_is_an_error_naming_the_missing_file(tmp_path: Path) -> None:
    layout, _ = node_keys(tmp_path, "site-01")
    layout.node_public_key("site-01").unlink()

    with pytest.raises(CertificateError, match=r"site-01\.pub: missing while site-01\.key exists"):
        node_keys(tmp_path, "site-01")


def test_a_corrupt_ca_certificate_is_an_error_naming_it(tmp_path: Path) -> None:
    layout, _ = superlink_credentials(tmp_path)
    layout.ca_cert.write_text("not a certificate")

    with pytest.raises(CertificateError, match=r"ca\.crt: not a PEM certificate"):
        superlink_credentials(tmp_path)


def test_a_public_key_that_is_not_the_private_keys_half_is_refused(tmp_path: Path) -> None:
    layout, _ = node_keys(tmp_path, "site-01")
    node_keys(tmp_path, "site-02")
    layout.node_public_key("site-01").write_bytes(layout.node_public_key("site-02").read_bytes())

    with pytest.raises(CertificateError, match=r"is not the public half of site-01\.key"):
        node_keys(tmp_path, "site-01")


def test_a_missing_or_non_ec_public_key_is_refused(tmp_path: Path) -> None:
    with pytest.raises(CertificateError, match="no such public key file"):
        load_node_public_key(tmp_path / "absent.pub")
    ed25519_key = ed25519.Ed25519PrivateKey.generate().public_key()
    (tmp_path / "ed.pub").write_bytes(
        ed25519_key.public_bytes(Encoding.OpenSSH, PublicFormat.OpenSSH)
    )
    with pytest.raises(CertificateError, match="not an elliptic-curve key"):
        load_node_public_key(tmp_path / "ed.pub")


@pytest.mark.parametrize("name", ["", "../escape", "site 01", "-lead", "a" * 65])
def test_site_names_that_are_not_file_names_are_refused(name: str) -> None:
    with pytest.raises(SettingError, match="not usable as a file name"):
        check_site_name(name)


@pytest.mark.parametrize("host", ["bad host", "under_score.org", "-x.org"])
def test_a_host_that_is_neither_ip_nor_dns_name_is_refused(tmp_path: Path, host: str) -> None:
    with pytest.raises(SettingError, match="neither an IP address nor a DNS name"):
        superlink_credentials(tmp_path, [host])
    assert not CertificateLayout(tmp_path).ca_key.exists()


def test_the_cli_makes_everything_and_reports_user_errors_without_a_traceback(
    tmp_path: Path,
) -> None:
    runner = CliRunner()
    made = runner.invoke(app, ["all", "--out", str(tmp_path), "--site", "site-01"])
    layout = CertificateLayout(tmp_path)
    (layout.root / "superlink.key").unlink()

    broken = runner.invoke(app, ["superlink", "--out", str(tmp_path)])

    assert made.exit_code == 0, made.output
    assert "created" in made.output
    assert layout.node_public_key("site-01").is_file()
    assert broken.exit_code == 2
    assert "superlink.key: missing while superlink.crt exists" in broken.output
    assert "Traceback" not in broken.output
