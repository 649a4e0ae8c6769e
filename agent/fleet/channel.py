"""How the agent reaches the fleet server: its TLS files, the gRPC channel options, the reconnect backoff,
and failed calls described with the likely fix."""

from __future__ import annotations

from pathlib import Path
from typing import Any, Protocol

import grpc

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


def read_tls(settings: TlsFiles) -> tuple[bytes, bytes, bytes]:
    """(CA, key, certificate) PEM bytes; ConfigError naming the file and the fix when one is unusable."""
    issued = "from `facefleet-server certs issue DEVICE`"
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
    return ca, key, cert


def describe_rpc_error(error: grpc.aio.AioRpcError, timeout: float, *, connected: bool = False) -> str:
    """A failed call as a log reason with the likely fix; connected: the session had been established."""
    code, details = error.code(), error.details() or ""
    if code in (grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.CANCELLED):  # CANCELLED: a server shutting down
        return f"lost the connection ({details})" if connected else f"cannot reach it ({details})"
    if code == grpc.StatusCode.DEADLINE_EXCEEDED:
        return f"no answer within {timeout:.0f} s"
    if code == grpc.StatusCode.UNAUTHENTICATED:
        return f"it refused this device's certificate ({details}); check [server] cert_file and key_file"
    if code == grpc.StatusCode.PERMISSION_DENIED:
        return f"permission denied: {details}"
    return f"{code.name}: {details}"
