"""A small site's certificate authority (the `cryptography` package): a CA, the server's certificate, and one
client certificate per device. Keys are ECDSA P-256, written with mode 0600.

A device certificate names the device twice: subject CN = device id, and the URI SAN
"urn:facefleet:device:<id>" (which the server prefers, see facefleet.server.api.security). Its extended key
usage is client authentication only, so a device certificate cannot serve as a server certificate.

No certificate issued here outlives the CA that signs it: its not_after is cut to the CA's (Issued.capped).
ca.pem may hold more than one CA (while agents move to a new CA, see the README's "Replacing the site CA");
the one whose public key matches ca.key signs, wherever it is in the file."""

from __future__ import annotations

import contextlib
import ipaddress
import os
import socket
import stat
import tempfile
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
    capped: bool = False
    """not_after was cut to the CA's own expiry (the days asked for would have outlived it)."""
    names: tuple[str, ...] = ()
    """A server certificate's DNS names and IP addresses."""


def serial_text(serial: int) -> str:
    """A certificate serial number as the server records it: lower-case hexadecimal."""
    return f"{serial:x}"


def init_ca(
    tls_dir: Path,
    *,
    server_names: list[str],
    force: bool = False,
    organisation: str = "FaceFleet",
    server_target: Issued | None = None,
) -> Issued:
    """Create the CA (ca.pem, ca.key) and a server certificate for server_names (server_target, default
    server.pem and server.key in tls_dir). Refuses to replace an existing CA unless force: every device
    certificate would stop working."""
    ca = Issued(tls_dir / "ca.pem", tls_dir / "ca.key")
    server = server_target or Issued(tls_dir / "server.pem", tls_dir / "server.key")
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
    issue_server(tls_dir, server_names, target=server)
    return ca


def default_server_names() -> list[str]:
    """The names a server certificate carries when none are given: localhost, loopback, the host name."""
    return ["localhost", "127.0.0.1", "::1", socket.gethostname()]


def issue_server(
    tls_dir: Path, names: list[str], *, days: int = LEAF_DAYS, target: Issued | None = None
) -> Issued:
    """A server certificate and key for these DNS names or IP addresses (default_server_names() when
    empty), signed by the CA in tls_dir, written to target (default tls_dir/server.pem and server.key)."""
    names = list(dict.fromkeys(names or default_server_names()))
    alt_names: list[x509.GeneralName] = []
    for entry in names:
        try:
            alt_names.append(x509.IPAddress(ipaddress.ip_address(entry)))
        except ValueError:
            alt_names.append(x509.DNSName(entry))
    issued = _issue(
        tls_dir,
        target or Issued(tls_dir / "server.pem", tls_dir / "server.key"),
        common_name=names[0],
        alt_names=alt_names,
        usage=ExtendedKeyUsageOID.SERVER_AUTH,
        days=days,
    )
    return Issued(
        issued.cert,
        issued.key,
        issued.serial,
        issued.not_before,
        issued.not_after,
        issued.capped,
        tuple(server_names(issued.cert.read_bytes())),
    )


def server_names(pem: bytes) -> list[str]:
    """The DNS names and IP addresses (as text) of the first certificate in pem, in their order."""
    cert = x509.load_pem_x509_certificate(pem)
    try:
        alt = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    except x509.ExtensionNotFound:
        return []
    return [str(name.value) for name in alt if isinstance(name, (x509.DNSName, x509.IPAddress))]


def not_after(pem: bytes) -> list[tuple[str, datetime]]:
    """Each certificate of a PEM file (one, or a bundle or chain): its subject and when it expires."""
    certificates = x509.load_pem_x509_certificates(pem)
    return [(cert.subject.rfc4514_string(), cert.not_valid_after_utc) for cert in certificates]


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
    end = start + timedelta(days=days)
    capped = end > ca_cert.not_valid_after_utc
    if capped:
        end = ca_cert.not_valid_after_utc
    cert = (
        x509.CertificateBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common_name)]))
        .issuer_name(ca_cert.subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(start)
        .not_valid_after(end)
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
        capped,
    )


def _load_ca(tls_dir: Path) -> tuple[x509.Certificate, ec.EllipticCurvePrivateKey]:
    cert_path, key_path = tls_dir / "ca.pem", tls_dir / "ca.key"
    try:
        bundle = x509.load_pem_x509_certificates(cert_path.read_bytes())
        key = serialization.load_pem_private_key(key_path.read_bytes(), password=None)
    except FileNotFoundError as exc:
        raise ServerConfigError(
            f"no CA in {tls_dir} ({exc.filename} is missing); run `facefleet-server certs init` first"
        ) from None
    except (OSError, ValueError) as exc:
        raise ServerConfigError(f"CA in {tls_dir} is unreadable: {exc}") from None
    if not isinstance(key, ec.EllipticCurvePrivateKey):
        raise ServerConfigError(f"{key_path} is not an ECDSA key; recreate the CA with `certs init --force`")
    public = key.public_key().public_bytes(
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    for cert in bundle:  # a bundle while agents move to a new CA: the one ca.key belongs to signs
        spki = cert.public_key().public_bytes(
            serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
        )
        if spki == public:
            return cert, key
    raise ServerConfigError(
        f"{key_path} belongs to none of the {len(bundle)} certificates in {cert_path}; put the CA "
        "certificate of that key into ca.pem (or the key of a CA in ca.pem into ca.key)"
    )


def _write(target: Issued, cert: x509.Certificate, key: ec.EllipticCurvePrivateKey) -> None:
    """The key (mode 0600), then the certificate, each replacing its file at once: a server that reloads
    meanwhile reads either file whole (a new key beside the old certificate is refused as a mismatch)."""
    key_bytes = key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )
    try:
        _replace(target.key, key_bytes, 0o600)
        _replace(target.cert, cert.public_bytes(serialization.Encoding.PEM), 0o644)
    except OSError as exc:
        raise ServerConfigError(
            f"cannot write {exc.filename or target.cert}: {exc.strerror}; run the command as the user that "
            "owns the TLS files (e.g. runuser -u facefleet-server --)"
        ) from None


def _replace(path: Path, data: bytes, mode: int) -> None:
    """Write `path` anew through a temporary file. A file it replaces keeps its owner, group and mode
    (within `mode` plus group read: a key the service's group reads stays readable to it after a renewal by
    root); a new file gets `mode`, owned by the user running the command."""
    path.parent.mkdir(parents=True, exist_ok=True)
    try:
        current: os.stat_result | None = path.stat()
    except FileNotFoundError:
        current = None
    fd, temporary = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.")
    try:
        with os.fdopen(fd, "wb") as handle:
            if current is not None:
                mode = stat.S_IMODE(current.st_mode) & (mode | 0o040)
                if (current.st_uid, current.st_gid) != (os.geteuid(), os.getegid()):
                    os.fchown(handle.fileno(), current.st_uid, current.st_gid)
            os.fchmod(handle.fileno(), mode)
            handle.write(data)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(temporary, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(temporary)
        raise
