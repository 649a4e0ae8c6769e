"""How the agent reaches the fleet server: its TLS files, the gRPC channel options, the reconnect backoff,
and failed calls described with the likely fix."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any, Protocol

import grpc
from cryptography import x509
from cryptography.exceptions import UnsupportedAlgorithm
from cryptography.hazmat.primitives import serialization

from facefleet.agent.domain.clock import CLOCK_FIX
from facefleet.agent.publish.certificates import utc, validity_of
from facefleet.core.config import parse_address
from facefleet.core.errors import ConfigError

MAX_MESSAGE_BYTES = 256 * 1024 * 1024


class TlsFiles(Protocol):
    """The agent's PEM files for the server ([server] ca_file, cert_file, key_file)."""

    @property
    def ca_file(self) -> Path: ...

    @property
    def cert_file(self) -> Path: ...

    @property
    def key_file(self) -> Path: ...


def channel_options(keepalive_s: float, server_name: str = "") -> list[tuple[str, Any]]:
    """gRPC channel options: keep-alive pings the server accepts, large messages (snapshots, model chunks),
    and the name the server certificate must carry when it differs from the address."""
    options: list[tuple[str, Any]] = [
        # The server refuses pings more often than every 10 s (min_ping_interval_without_data).
        ("grpc.keepalive_time_ms", int(max(10.0, keepalive_s) * 1000)),
        ("grpc.keepalive_timeout_ms", 10_000),
        ("grpc.http2.max_pings_without_data", 0),
        ("grpc.max_receive_message_length", MAX_MESSAGE_BYTES),
        ("grpc.max_send_message_length", MAX_MESSAGE_BYTES),
    ]
    if server_name:
        options.append(("grpc.ssl_target_name_override", server_name))
    return options


def server_address(address: str) -> tuple[str, int]:
    try:
        return parse_address(address)
    except ValueError as exc:
        raise ConfigError(f"[server] {exc}") from None


ISSUED = "from `facefleet-server certs issue DEVICE`"


class KeyMismatchError(ConfigError):
    """key_file holds a private key, but not the one of the certificate in cert_file."""


def read_tls(settings: TlsFiles) -> tuple[bytes, bytes, bytes]:
    """(CA, key, certificate) PEM bytes; ConfigError naming the file and the fix when one is unusable,
    KeyMismatchError when the key is not the certificate's (check_key_pair)."""
    issued = ISSUED
    files = (
        ("ca_file", settings.ca_file, "the site CA certificate (tls/ca.pem on the server)"),
        ("key_file", settings.key_file, f"this device's key {issued}"),
        ("cert_file", settings.cert_file, f"this device's certificate {issued}"),
    )
    contents = []
    for name, path, what in files:
        try:
            data = path.read_bytes()
        except OSError as exc:
            raise ConfigError(
                f"[server] {name} {path}: cannot read ({exc.strerror}); it should hold {what}"
            ) from None
        if b"-----BEGIN" not in data:
            raise ConfigError(f"[server] {name} {path} is not a PEM file; it should hold {what}")
        contents.append(data)
    ca, key, cert = contents
    check_key_pair(settings, key, cert)
    return ca, key, cert


def check_key_pair(settings: TlsFiles, key: bytes, cert: bytes) -> None:
    """The key (key_file's PEM) is the private key of the certificate (cert_file's first): ConfigError
    naming the file when one cannot be read, KeyMismatchError naming both and the fix when they do not
    belong together: a renewed certificate installed without its key, or a key that systemd copied from
    its LoadCredential= file when the service started, before the renewal."""
    try:
        certificate = x509.load_pem_x509_certificate(cert)
    except ValueError:
        raise ConfigError(
            f"[server] cert_file {settings.cert_file}: no certificate can be read from it; it should hold "
            f"this device's certificate {ISSUED}"
        ) from None
    try:
        private = serialization.load_pem_private_key(key, password=None)
    except TypeError:  # encrypted: the agent has no passphrase to give
        raise ConfigError(
            f"[server] key_file {settings.key_file} is encrypted; it should hold this device's unencrypted "
            f"key {ISSUED}"
        ) from None
    except (ValueError, UnsupportedAlgorithm):
        raise ConfigError(
            f"[server] key_file {settings.key_file}: no private key can be read from it; it should hold "
            f"this device's key {ISSUED}"
        ) from None
    spki = (serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo)
    if private.public_key().public_bytes(*spki) == certificate.public_key().public_bytes(*spki):
        return
    mismatch = f"[server] key_file {settings.key_file} is not the key of cert_file {settings.cert_file}"
    if is_credential(settings.key_file):
        raise KeyMismatchError(
            f"{mismatch}: key_file is systemd's copy of a LoadCredential= file, made when the service "
            "started, so a renewed key reaches the agent only at a restart: `systemctl restart "
            "facefleet-agent` once the certificate and its key are both installed"
        )
    raise KeyMismatchError(
        f"{mismatch}: install the key issued with that certificate at key_file (`facefleet-server certs "
        "renew DEVICE` writes the two together)"
    )


def is_credential(path: Path) -> bool:
    """The file is in systemd's $CREDENTIALS_DIRECTORY: a copy made when the service started."""
    credentials = os.environ.get("CREDENTIALS_DIRECTORY")
    return credentials is not None and credentials != "" and path.parent == Path(credentials)


def certificate_refusal(settings: TlsFiles, cert: bytes, device_id: str, now: float) -> str | None:
    """Why the server refuses a connection made with this certificate (PEM) at `now` (Unix seconds), with
    the fix, when it is out of its dates (expired, or not valid yet); None while it is valid. TLS refuses
    such a certificate before any call, so the client sees only a closed connection."""
    validity = validity_of(cert)
    if validity is None:
        return None
    renew = f"`facefleet-server certs renew {device_id}` on the server host"
    files = f"cert_file {settings.cert_file} and key_file {settings.key_file}"
    if now >= validity.not_after:
        return (
            f"this device's certificate expired at {utc(validity.not_after)}, so the server refuses the "
            f"connection: install a renewed one from {renew} ({files}; if this box's clock is wrong "
            f"instead, {CLOCK_FIX})"
        )
    if now < validity.not_before:
        return (
            f"this device's certificate is valid only from {utc(validity.not_before)} but this box's clock "
            f"reads {utc(now)}, so the server refuses the connection: {CLOCK_FIX}, or install one valid now "
            f"from {renew} ({files})"
        )
    return None


def describe_rpc_error(
    error: grpc.aio.AioRpcError, timeout: float, *, connected: bool = False, certificate: str | None = None
) -> str:
    """A failed call as a log reason with the likely fix; connected: the session had been established;
    certificate: why the server refuses the certificate in use (certificate_refusal), said instead of a
    failure to connect, which is how TLS shows it."""
    code, details = error.code(), error.details() or ""
    connecting = (grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.UNKNOWN)  # UNKNOWN: a failed handshake
    if certificate is not None and not connected and code in connecting:
        return f"{certificate} (the connection failed: {details})"
    if code in (grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.CANCELLED):  # CANCELLED: a server shutting down
        return f"lost the connection ({details})" if connected else f"cannot reach it ({details})"
    if code == grpc.StatusCode.DEADLINE_EXCEEDED:
        return f"no answer within {timeout:.0f} s"
    if code == grpc.StatusCode.UNAUTHENTICATED:
        return f"it refused this device's certificate ({details}); check [server] cert_file and key_file"
    if code == grpc.StatusCode.PERMISSION_DENIED:
        return f"permission denied: {details}"
    return f"{code.name}: {details}"
