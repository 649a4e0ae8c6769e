"""A small site's certificate authority (the `cryptography` package): a CA, the server's certificate, and one
client certificate per device. Keys are ECDSA P-256, written with mode 0600.

A device certificate names the device twice: subject CN = device id, and the URI SAN
"urn:facefleet:device:<id>" (which the server prefers, see facefleet.server.api.security). Its extended key
usage is client authentication only, so a device certificate cannot serve as a server certificate."""

from __future__ import annotations

import ipaddress
import os
import socket
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from facefleet.link.checks import check_id
from facefleet.link.errors import LinkError
from facefleet.server.errors import ServerConfigError, ServerError

DEVICE_URI_PREFIX = "urn:facefleet:device:"
CA_DAYS = 3650
LEAF_DAYS = 825


@dataclass(frozen=True)
class Issued:
    """Paths of a certificate and its key; serial (lower-case hex) and validity of a certificate issued
    here (empty and None for one only named)."""

    cert: Path
    key: Path
    serial: str = ""
    not_before: datetime | None = None
    not_after: datetime | None = None


def serial_text(serial: int) -> str:
    """A certificate serial number as the server records it: lower-case hexadecimal."""
    return f"{serial:x}"


def init_ca(
    tls_dir: Path, *, server_names: list[str], force: bool = False, organisation: str = "FaceFleet"
) -> Issued:
    """Create the CA (ca.pem, ca.key) and a server certificate (server.pem, server.key) for server_names.
    Refuses to replace an existing CA unless force: every device certificate would stop working."""
    ca = Issued(tls_dir / "ca.pem", tls_dir / "ca.key")
    if ca.cert.exists() and not force:
        raise ServerConfigError(
            f"a CA already exists in {tls_dir}; replacing it invalidates every device certificate "
            "(use --force to do it anyway)"
        )
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name(
        [
            x509.NameAttribute(NameOID.ORGANIZATION_NAME, organisation),
            x509.NameAttribute(NameOID.COMMON_NAME, f"{organisation} CA"),
        ]
    )
    now = datetime.now(timezone.utc)
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - timedelta(minutes=5))
        .not_valid_after(now + timedelta(days=CA_DAYS))
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
    _write(ca, cert, key)
    issue_server(tls_dir, server_names)
    return ca


def issue_server(tls_dir: Path, names: list[str], *, days: int = LEAF_DAYS) -> Issued:
    """server.pem/server.key for these DNS names or IP addresses (default: localhost, loopback, host name)."""
    names = names or ["localhost", "127.0.0.1", "::1", socket.gethostname()]
    alt_names: list[x509.GeneralName] = []
    for entry in dict.fromkeys(names):
        try:
            alt_names.append(x509.IPAddress(ipaddress.ip_address(entry)))
        except ValueError:
            alt_names.append(x509.DNSName(entry))
    return _issue(
        tls_dir,
        Issued(tls_dir / "server.pem", tls_dir / "server.key"),
        common_name=names[0],
        alt_names=alt_names,
        usage=ExtendedKeyUsageOID.SERVER_AUTH,
        days=days,
    )


def issue_device(
    tls_dir: Path,
    device_id: str,
    *,
    out_dir: Path | None = None,
    days: int = LEAF_DAYS,
    not_before: datetime | None = None,
) -> Issued:
    """<out_dir>/<device_id>.pem and .key, a client certificate signed by the CA in tls_dir."""
    try:
        check_id("device id", device_id)
    except LinkError as exc:
        raise ServerError(str(exc)) from None
    out = out_dir or tls_dir / "devices"
    return _issue(
        tls_dir,
        Issued(out / f"{device_id}.pem", out / f"{device_id}.key"),
        common_name=device_id,
        alt_names=[x509.UniformResourceIdentifier(DEVICE_URI_PREFIX + device_id)],
        usage=ExtendedKeyUsageOID.CLIENT_AUTH,
        days=days,
        not_before=not_before,
    )


def _issue(
    tls_dir: Path,
    target: Issued,
    *,
    common_name: str,
    alt_names: list[x509.GeneralName],
    usage: x509.ObjectIdentifier,
    days: int,
    not_before: datetime | None = None,
) -> Issued:
    ca_cert, ca_key = _load_ca(tls_dir)
    key = ec.generate_private_key(ec.SECP256R1())
    start = not_before or datetime.now(timezone.utc) - timedelta(minutes=5)
    cert = (
        x509.CertificateBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common_name)]))
        .issuer_name(ca_cert.subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(start)
        .not_valid_after(start + timedelta(days=days))
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(x509.SubjectAlternativeName(alt_names), critical=False)
        .add_extension(x509.ExtendedKeyUsage([usage]), critical=False)
        .add_extension(
            x509.AuthorityKeyIdentifier.from_issuer_public_key(ca_key.public_key()), critical=False
        )
        .sign(ca_key, hashes.SHA256())
    )
    _write(target, cert, key)
    return Issued(
        target.cert,
        target.key,
        serial_text(cert.serial_number),
        cert.not_valid_before_utc,
        cert.not_valid_after_utc,
    )


def _load_ca(tls_dir: Path) -> tuple[x509.Certificate, ec.EllipticCurvePrivateKey]:
    cert_path, key_path = tls_dir / "ca.pem", tls_dir / "ca.key"
    try:
        cert = x509.load_pem_x509_certificate(cert_path.read_bytes())
        key = serialization.load_pem_private_key(key_path.read_bytes(), password=None)
    except FileNotFoundError as exc:
        raise ServerConfigError(
            f"no CA in {tls_dir} ({exc.filename} is missing); run `facefleet-server certs init` first"
        ) from None
    except (OSError, ValueError) as exc:
        raise ServerConfigError(f"CA in {tls_dir} is unreadable: {exc}") from None
    if not isinstance(key, ec.EllipticCurvePrivateKey):
        raise ServerConfigError(f"{key_path} is not an ECDSA key; recreate the CA with `certs init --force`")
    return cert, key


def _write(target: Issued, cert: x509.Certificate, key: ec.EllipticCurvePrivateKey) -> None:
    target.cert.parent.mkdir(parents=True, exist_ok=True)
    key_bytes = key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )
    fd = os.open(target.key, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "wb") as handle:
        handle.write(key_bytes)
    os.chmod(target.key, 0o600)
    target.cert.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
