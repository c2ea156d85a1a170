"""Certificates and keys of a federation: a private CA, the SuperLink's TLS certificate, and one
SuperNode authentication key pair per site.

Run ``python -m deploy.certificates --help``. Existing files are kept (running twice changes
nothing); a file that does not fit the request is an error unless ``--force`` makes all anew.
Private keys are written owner-only (0600).

Layout under the output folder (see :class:`CertificateLayout`)::

    ca.crt  ca.key                      the federation's CA (ca.key stays with the operator)
    superlink.crt  superlink.key        the SuperLink's TLS certificate, signed by the CA
    supernodes/<site>.key  <site>.pub   a site's EC key pair, OpenSSH format (what flwr reads)
"""

from __future__ import annotations

import datetime
import ipaddress
import re
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import typer
from cryptography import x509
from cryptography.exceptions import InvalidSignature, UnsupportedAlgorithm
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from common.atomic import atomic_write_bytes
from common.cli.support import console, user_errors
from deploy.errors import CertificateError, SettingError

PRIVATE_KEY_MODE = 0o600
"""Private keys are readable by their owner only."""

# Hosts every SuperLink certificate names: the launcher, the CLI and SuperExec reach it there.
LOOPBACK_HOSTS = ("127.0.0.1", "localhost")
# The CA signs for ten years; rotating it means handing every site a new ca.crt.
CA_VALIDITY_DAYS = 3650
# A server certificate lives about two years (825 days is what TLS clients still accept).
SERVER_VALIDITY_DAYS = 825
# TLS keys (CA, SuperLink): NIST P-256, which every TLS stack speaks.
TLS_CURVE = ec.SECP256R1
# SuperNode keys: NIST P-384, as Flower's guide makes them (flwr accepts any NIST EC curve).
NODE_CURVE = ec.SECP384R1
# Names on the certificates.
ORGANISATION = "fedsynth federation"
CA_COMMON_NAME = "fedsynth federation CA"
SERVER_COMMON_NAME = "fedsynth SuperLink"
# A site name is a file name: letters, digits, '.', '_' and '-', starting with a letter or digit.
SITE_NAME_PATTERN = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,63}")
# A DNS host name: labels of letters, digits and '-', separated by dots.
DNS_LABEL = r"[A-Za-z0-9]([A-Za-z0-9-]{0,61}[A-Za-z0-9])?"
HOST_NAME_PATTERN = re.compile(rf"(?=.{{1,253}}$){DNS_LABEL}(\.{DNS_LABEL})*")

FORCE_HINT = "pass --force to make them anew"
REISSUE_HINT = "pass --reissue to sign a new SuperLink certificate with the same CA"


@dataclass(frozen=True)
class CertificateLayout:
    """Where each file of a federation's credentials lives under ``root``."""

    root: Path

    @property
    def ca_cert(self) -> Path:
        """The CA certificate every SuperNode and the operator's CLI trust."""
        return self.root / "ca.crt"

    @property
    def ca_key(self) -> Path:
        """The CA's private key: stays with the operator."""
        return self.root / "ca.key"

    @property
    def server_cert(self) -> Path:
        """The SuperLink's TLS certificate."""
        return self.root / "superlink.crt"

    @property
    def server_key(self) -> Path:
        """The SuperLink's TLS private key."""
        return self.root / "superlink.key"

    def node_private_key(self, site: str) -> Path:
        """A site's SuperNode authentication private key (OpenSSH format): stays at the site."""
        return self.root / "supernodes" / f"{check_site_name(site)}.key"

    def node_public_key(self, site: str) -> Path:
        """A site's SuperNode public key (OpenSSH format): what the operator registers."""
        return self.root / "supernodes" / f"{check_site_name(site)}.pub"


@dataclass
class Written:
    """Which files a call created and which it found and kept."""

    created: list[Path] = field(default_factory=list)
    kept: list[Path] = field(default_factory=list)


def check_site_name(site: str) -> str:
    """Return ``site`` if it is a valid site name, else raise :class:`SettingError`."""
    if not SITE_NAME_PATTERN.fullmatch(site):
        raise SettingError(
            f"site name '{site}' is not usable as a file name: use letters, digits, '.', '_' "
            "and '-', starting with a letter or digit (at most 64 characters)"
        )
    return site


def _san_entry(host: str) -> x509.GeneralName:
    try:
        return x509.IPAddress(ipaddress.ip_address(host))
    except ValueError:
        pass
    if not HOST_NAME_PATTERN.fullmatch(host):
        raise SettingError(
            f"--host '{host}' is neither an IP address nor a DNS name "
            "(give the address SuperNodes use to reach the SuperLink, e.g. fl.example.org)"
        )
    return x509.DNSName(host.lower())


def _write_private(path: Path, data: bytes) -> None:
    """Write a private key owner-only (0600) through a temporary file and a rename."""
    atomic_write_bytes(path, data, mode=PRIVATE_KEY_MODE)


def _pem_key(key: ec.EllipticCurvePrivateKey) -> bytes:
    return key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )


def _now() -> datetime.datetime:
    return datetime.datetime.now(datetime.UTC)


def _name(common_name: str) -> x509.Name:
    return x509.Name(
        [
            x509.NameAttribute(NameOID.ORGANIZATION_NAME, ORGANISATION),
            x509.NameAttribute(NameOID.COMMON_NAME, common_name),
        ]
    )


def _new_ca() -> tuple[x509.Certificate, ec.EllipticCurvePrivateKey]:
    key = ec.generate_private_key(TLS_CURVE())
    now = _now()
    cert = (
        x509.CertificateBuilder()
        .subject_name(_name(CA_COMMON_NAME))
        .issuer_name(_name(CA_COMMON_NAME))
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=CA_VALIDITY_DAYS))
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .add_extension(
            x509.KeyUsage(
                digital_signature=True,
                content_commitment=False,
                key_encipherment=False,
                data_encipherment=False,
                key_agreement=False,
                key_cert_sign=True,
                crl_sign=True,
                encipher_only=False,
                decipher_only=False,
            ),
            critical=True,
        )
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
        .sign(key, hashes.SHA256())
    )
    return cert, key


def _new_server_cert(
    ca_cert: x509.Certificate, ca_key: ec.EllipticCurvePrivateKey, hosts: Sequence[str]
) -> tuple[x509.Certificate, ec.EllipticCurvePrivateKey]:
    key = ec.generate_private_key(TLS_CURVE())
    now = _now()
    cert = (
        x509.CertificateBuilder()
        .subject_name(_name(SERVER_COMMON_NAME))
        .issuer_name(ca_cert.subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=SERVER_VALIDITY_DAYS))
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(
            x509.KeyUsage(
                digital_signature=True,
                content_commitment=False,
                key_encipherment=False,
                data_encipherment=False,
                key_agreement=True,
                key_cert_sign=False,
                crl_sign=False,
                encipher_only=False,
                decipher_only=False,
            ),
            critical=True,
        )
        .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
        .add_extension(x509.SubjectAlternativeName([_san_entry(h) for h in hosts]), critical=False)
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
        .add_extension(
            x509.AuthorityKeyIdentifier.from_issuer_public_key(ca_key.public_key()),
            critical=False,
        )
        .sign(ca_key, hashes.SHA256())
    )
    return cert, key


def _load_cert(path: Path) -> x509.Certificate:
    try:
        return x509.load_pem_x509_certificate(path.read_bytes())
    except ValueError as err:
        raise CertificateError(path, f"not a PEM certificate ({err})", FORCE_HINT) from None


def _load_ec_key(path: Path) -> ec.EllipticCurvePrivateKey:
    try:
        key = serialization.load_pem_private_key(path.read_bytes(), password=None)
    except (ValueError, TypeError, UnsupportedAlgorithm) as err:
        raise CertificateError(path, f"not an unencrypted PEM key ({err})", FORCE_HINT) from None
    if not isinstance(key, ec.EllipticCurvePrivateKey):
        raise CertificateError(path, "not an elliptic-curve key", FORCE_HINT)
    return key


def _check_pair(cert_path: Path, key_path: Path, force: bool) -> bool:
    """True when both files exist (to be kept); False when neither does (to be made)."""
    if force:
        return False
    have_cert, have_key = cert_path.exists(), key_path.exists()
    if have_cert != have_key:
        present, missing = (cert_path, key_path) if have_cert else (key_path, cert_path)
        raise CertificateError(
            missing, f"missing while {present.name} exists", f"restore it, or {FORCE_HINT}"
        )
    return have_cert


def _ensure_ca(
    layout: CertificateLayout, force: bool, written: Written
) -> tuple[x509.Certificate, ec.EllipticCurvePrivateKey]:
    if _check_pair(layout.ca_cert, layout.ca_key, force):
        cert, key = _load_cert(layout.ca_cert), _load_ec_key(layout.ca_key)
        if cert.public_key() != key.public_key():
            raise CertificateError(layout.ca_key, "does not belong to ca.crt", FORCE_HINT)
        written.kept += [layout.ca_cert, layout.ca_key]
        return cert, key
    cert, key = _new_ca()
    _write_private(layout.ca_key, _pem_key(key))
    atomic_write_bytes(layout.ca_cert, cert.public_bytes(serialization.Encoding.PEM))
    written.created += [layout.ca_cert, layout.ca_key]
    return cert, key


def _check_server_cert(
    layout: CertificateLayout, ca_cert: x509.Certificate, hosts: Sequence[str]
) -> None:
    cert, key = _load_cert(layout.server_cert), _load_ec_key(layout.server_key)
    if cert.public_key() != key.public_key():
        raise CertificateError(layout.server_key, "does not belong to superlink.crt", FORCE_HINT)
    try:
        cert.verify_directly_issued_by(ca_cert)
    except (ValueError, TypeError, InvalidSignature):
        raise CertificateError(
            layout.server_cert, "was not issued by ca.crt", REISSUE_HINT
        ) from None
    names = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    missing = [host for host in hosts if _san_entry(host) not in names]
    if missing:
        raise CertificateError(
            layout.server_cert,
            f"does not name the host(s) {', '.join(missing)}",
            REISSUE_HINT,
        )


def superlink_credentials(
    out: Path, hosts: Sequence[str] = (), *, force: bool = False, reissue: bool = False
) -> tuple[CertificateLayout, Written]:
    """Make (or keep) the CA and the SuperLink's TLS certificate for ``hosts`` + loopback.

    ``force`` makes the CA anew too (every site then needs the new ``ca.crt``); ``reissue``
    keeps the CA and signs a new SuperLink certificate (for a new host list).

    Raises:
        CertificateError: an existing file is unreadable or does not fit (pass ``force``).
        SettingError: a host is neither an IP address nor a DNS name.
    """
    layout, written = CertificateLayout(out), Written()
    all_hosts = list(dict.fromkeys([*LOOPBACK_HOSTS, *hosts]))
    for host in all_hosts:
        _san_entry(host)
    ca_cert, ca_key = _ensure_ca(layout, force, written)
    if _check_pair(layout.server_cert, layout.server_key, force or reissue):
        _check_server_cert(layout, ca_cert, all_hosts)
        written.kept += [layout.server_cert, layout.server_key]
        return layout, written
    cert, key = _new_server_cert(ca_cert, ca_key, all_hosts)
    _write_private(layout.server_key, _pem_key(key))
    atomic_write_bytes(layout.server_cert, cert.public_bytes(serialization.Encoding.PEM))
    written.created += [layout.server_cert, layout.server_key]
    return layout, written


def load_node_public_key(path: Path) -> ec.EllipticCurvePublicKey:
    """Read a SuperNode public key (OpenSSH format, NIST EC curve).

    Raises:
        CertificateError: the file is missing or holds no EC public key.
    """
    if not path.is_file():
        raise CertificateError(path, "no such public key file", "make it with `supernode`")
    try:
        key = serialization.load_ssh_public_key(path.read_bytes())
    except (ValueError, UnsupportedAlgorithm) as err:
        raise CertificateError(path, f"not an OpenSSH public key ({err})", FORCE_HINT) from None
    if not isinstance(key, ec.EllipticCurvePublicKey):
        raise CertificateError(path, "not an elliptic-curve key", "flwr needs a NIST EC key")
    return key


def load_node_private_key(path: Path) -> ec.EllipticCurvePrivateKey:
    """Read a SuperNode private key (OpenSSH format, unencrypted, NIST EC curve).

    Raises:
        CertificateError: the file is missing or holds no EC private key.
    """
    if not path.is_file():
        raise CertificateError(path, "no such private key file", "make it with `supernode`")
    try:
        key = serialization.load_ssh_private_key(path.read_bytes(), password=None)
    except (ValueError, TypeError, UnsupportedAlgorithm) as err:
        raise CertificateError(path, f"not an OpenSSH private key ({err})", FORCE_HINT) from None
    if not isinstance(key, ec.EllipticCurvePrivateKey):
        raise CertificateError(path, "not an elliptic-curve key", "flwr needs a NIST EC key")
    return key


def node_keys(out: Path, site: str, *, force: bool = False) -> tuple[CertificateLayout, Written]:
    """Make (or keep) the SuperNode authentication key pair of ``site``.

    Raises:
        CertificateError: an existing key is unreadable, or the two keys are not a pair.
        SettingError: ``site`` is not usable as a file name.
    """
    layout, written = CertificateLayout(out), Written()
    private, public = layout.node_private_key(site), layout.node_public_key(site)
    if _check_pair(private, public, force):
        key = load_node_private_key(private)
        if key.public_key() != load_node_public_key(public):
            raise CertificateError(public, f"is not the public half of {private.name}", FORCE_HINT)
        written.kept += [private, public]
        return layout, written
    key = ec.generate_private_key(NODE_CURVE())
    _write_private(
        private,
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.OpenSSH,
            serialization.NoEncryption(),
        ),
    )
    public_bytes = key.public_key().public_bytes(
        serialization.Encoding.OpenSSH, serialization.PublicFormat.OpenSSH
    )
    atomic_write_bytes(public, public_bytes + f" fedsynth-{site}\n".encode())
    written.created += [private, public]
    return layout, written


app = typer.Typer(
    help="Certificates and keys of a fedsynth federation.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
)

OutOption = typer.Option(..., "--out", help="Folder of the credentials (made if missing).")
ForceOption = typer.Option(False, "--force", help="Make every requested file anew.")


def _report(written: Written) -> None:
    for path in written.created:
        console.print(f"created {path}")
    for path in written.kept:
        console.print(f"kept    {path}")


@app.command("superlink")
@user_errors
def superlink_command(
    out: Path = OutOption,
    host: list[str] = typer.Option(
        [], "--host", help="Extra host name or IP the SuperLink is reached at (repeatable)."
    ),
    force: bool = ForceOption,
    reissue: bool = typer.Option(
        False, "--reissue", help="Keep the CA, sign a new SuperLink certificate."
    ),
) -> None:
    """The operator's CA and SuperLink certificate (127.0.0.1 and localhost always named)."""
    _report(superlink_credentials(out, host, force=force, reissue=reissue)[1])


@app.command("supernode")
@user_errors
def supernode_command(
    out: Path = OutOption,
    site: str = typer.Option(..., "--site", help="The site's name, e.g. site-01."),
    force: bool = ForceOption,
) -> None:
    """A site's SuperNode key pair: keep the .key at the site, send the .pub to the operator."""
    _report(node_keys(out, site, force=force)[1])


@app.command("all")
@user_errors
def all_command(
    out: Path = OutOption,
    site: list[str] = typer.Option(..., "--site", help="A site's name (repeatable)."),
    host: list[str] = typer.Option([], "--host", help="Extra SuperLink host (repeatable)."),
    force: bool = ForceOption,
) -> None:
    """Everything for a federation run by one operator on one machine (tests, demos)."""
    _report(superlink_credentials(out, host, force=force)[1])
    for name in site:
        _report(node_keys(out, name, force=force)[1])


if __name__ == "__main__":
    app()
